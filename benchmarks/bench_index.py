"""Index build speed, re-index cost, retrieval latency and self-retrieval quality on MedQuAD.

    python benchmarks/bench_index.py --corpus ../shared/data/medquad
    python benchmarks/bench_index.py --reference-storage storage --reference-collection medqa   # + fp32 index quality

The encoder runs with ``MEDQA_EMBED_DTYPE`` (default: bfloat16 on a CPU with bfloat16 units); raw
``encode`` is measured in float32 (the baseline) and in bfloat16 on the same chunks, and the build's own encoder
(``rag_app.index.build.embed_texts``: ``MEDQA_EMBED_WORKERS`` threads) beside them. With
``--reference-storage`` (an index built in float32), self-retrieval MRR@10 and the LiveQA tune-half
("dev set") MRR@10 of the default retriever are printed for both indexes.

Prints one table: each figure, the baseline measured in the same run, the ratio and the target
from issue [1/5]. Raw ``SentenceTransformer.encode`` speed is measured on a random sample of the
very chunks the index holds (``--encode-sample``); retrieval quality and latency on a seeded random
sample of MedQuAD questions (``--queries``), each against its own QA pair.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._rows import emit_rows  # noqa: E402


def rank_of(nodes, gold: str) -> int | None:
    """1-based rank of the gold QA pair among retrieved nodes, or None."""
    for i, n in enumerate(nodes, start=1):
        if (n.node.ref_doc_id or n.node.node_id) == gold:
            return i
    return None


def quality(retriever, questions) -> dict[str, float]:
    """hit@1, hit@5 and MRR@10 of each question's own QA pair."""
    ranks = [rank_of(retriever.retrieve(q), gold) for q, gold in questions]
    n = len(ranks)
    return {
        "hit@1": sum(r == 1 for r in ranks) / n,
        "hit@5": sum(r is not None and r <= 5 for r in ranks) / n,
        "mrr@10": sum(1 / r for r in ranks if r is not None and r <= 10) / n,
    }


def reference_rows(settings, args, stored, questions, docs, embed_model) -> list[tuple]:
    """Self-retrieval and LiveQA tune-half MRR@10 of the default retriever: this index against a float32-built one."""
    from benchmarks.bench_liveqa import aggregate, answers_of, run_systems
    from corpus.liveqa import derive_labels, load_liveqa, split_halves
    from rag_app.llm.load import embed_dtype, load_embed_model
    from rag_app.retrieval.modes import build_retriever

    ref = settings.model_copy(update={"storage_dir": Path(args.reference_storage), "collection": args.reference_collection, "embed_dtype": "float32"})
    ref_embed = load_embed_model(ref)
    mine = build_retriever(settings.model_copy(update={"top_k": 10}), embed_model=embed_model, nodes=stored)
    theirs = build_retriever(ref.model_copy(update={"top_k": 10}), embed_model=ref_embed)
    used = embed_dtype(settings, "cpu")
    rows = []
    a, b = quality(mine, questions)["mrr@10"], quality(theirs, questions)["mrr@10"]
    rows.append((f"self-retrieval MRR@10, default ({used} index)", a, f"{b:.3f} (fp32 index)", f"{a / b:.3f}", "0.99-1.01"))
    liveqa = load_liveqa([args.liveqa])
    labels = derive_labels(liveqa, answers_of(docs))
    tune = split_halves(sorted(labels))["tune"]
    queries = {q.qid: q.query for q in liveqa if q.qid in set(tune)}
    ranked = run_systems({"mine": mine.retrieve, "theirs": theirs.retrieve}, queries)
    a, b = (aggregate(ranked[name][0], labels, tune)["mrr@10"] for name in ("mine", "theirs"))
    rows.append((f"LiveQA dev (tune half, n={len(tune)}) MRR@10 ({used} index)", a, f"{b:.3f} (fp32 index)", f"{a / b:.3f}", "0.99-1.01"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="../shared/data/medquad")
    parser.add_argument("--storage-dir", help="where to build the benchmark index (default: a temp dir)")
    parser.add_argument(
        "--collection", help="Chroma collection of the benchmark index (default: 'bench'; with --reuse, MEDQA_COLLECTION's)"
    )
    parser.add_argument("--encode-sample", type=int, default=2000, help="chunks for the raw-encode baseline")
    parser.add_argument("--queries", type=int, default=1000, help="questions for retrieval quality/latency")
    parser.add_argument("--limit-docs", type=int, default=0, help="index only the first N documents (smoke runs)")
    parser.add_argument("--reuse", action="store_true", help="keep an index already built in --storage-dir: skip the first build and the encode baseline")
    parser.add_argument("--reference-storage", help="storage folder of a float32-built index to compare quality with")
    parser.add_argument("--reference-collection", default="medqa", help="its Chroma collection")
    parser.add_argument("--liveqa", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "liveqa-train"))
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from corpus import load_corpus
    from rag_app.config import Settings
    from rag_app.index.build import build_index, embed_texts, node_parser
    from rag_app.index.chroma import load_nodes
    from rag_app.llm.load import embed_dtype, embed_workers, load_embed_model
    from rag_app.llm.resolve import resolve_embed_model
    from rag_app.retrieval.classic import MedQARetriever, bm25_retriever, dense_retriever
    from rag_app.retrieval.modes import build_retriever

    storage = Path(args.storage_dir or tempfile.mkdtemp(prefix="medqa-bench-"))
    # --reuse measures an index that exists (the project's own, by default), never starts a second one beside it.
    collection = args.collection or (Settings().collection if args.reuse else "bench")
    settings = Settings(storage_dir=storage, corpus=[args.corpus], collection=collection)
    rows: list[tuple[str, float, str, str, str]] = []

    # ---- first build ---------------------------------------------------------
    t0 = time.perf_counter()
    docs, report = load_corpus(settings.corpus)
    if args.limit_docs:
        docs = docs[: args.limit_docs]
    embed_model = load_embed_model(settings)
    stats = build_index(settings, documents=docs, embed_model=embed_model, rebuild=not args.reuse)
    first_build = time.perf_counter() - t0
    print(f"first build: {stats.summary()}; with corpus loading {first_build:.1f} s", flush=True)
    rng = random.Random(0)

    if not args.reuse:
        index_rate = stats.embedded_chunks / stats.seconds
        # ---- raw encode baseline on the same chunks -------------------------------
        nodes = node_parser(settings).get_nodes_from_documents(docs)
        sample = rng.sample(nodes, min(args.encode_sample, len(nodes)))
        texts = [n.get_content(metadata_mode="embed") for n in sample]
        import torch

        rates = {}
        sizes = sorted({settings.embed_batch_size, 64})  # the baseline: float32 at the faster of these
        for dtype in ("float32", "bfloat16"):
            st = SentenceTransformer(resolve_embed_model(settings.embed_model), device="cpu", model_kwargs={"dtype": getattr(torch, dtype)})
            st.encode(texts[:64], batch_size=settings.embed_batch_size)  # warm-up
            for size in sizes:
                t = time.perf_counter()
                st.encode(texts, batch_size=size, normalize_embeddings=True)
                rates[dtype, size] = len(texts) / (time.perf_counter() - t)
                print(f"raw encode {dtype}, batch {size}: {rates[dtype, size]:.1f} chunks/s", flush=True)
        workers = embed_workers(settings, "cpu")
        embed_texts(embed_model, texts[:64], workers)  # warm-up
        t = time.perf_counter()
        embed_texts(embed_model, texts, workers)
        threaded = len(texts) / (time.perf_counter() - t)
        print(f"encode on {workers} workers ({embed_dtype(settings, 'cpu')}, batch {settings.embed_batch_size}): {threaded:.1f} chunks/s", flush=True)
        best = max(sizes, key=lambda size: rates["float32", size])
        raw_rate = rates["float32", best]
        baseline = f"{raw_rate:.1f} (raw fp32 encode, batch {best})"
        used = embed_dtype(settings, "cpu")
        for size in sizes:
            rows.append((f"raw encode, chunks/s (float32, batch {size})", rates["float32", size], baseline, f"{rates['float32', size] / raw_rate:.2f}", "-"))
            rows.append((f"raw encode, chunks/s (bfloat16, batch {size})", rates["bfloat16", size], baseline, f"{rates['bfloat16', size] / raw_rate:.2f}", "-"))
        rows.append((f"encode, chunks/s ({used}, batch {settings.embed_batch_size}, {workers} workers: rag_app.index.build.embed_texts)", threaded, baseline, f"{threaded / raw_rate:.2f}", "-"))
        rows.append((f"index build, chunks/s ({used}, batch {settings.embed_batch_size}, {workers} workers)", index_rate, baseline, f"{index_rate / raw_rate:.2f}", ">= 2"))

    # ---- unchanged re-index ---------------------------------------------------------
    t0 = time.perf_counter()
    docs2, _ = load_corpus(settings.corpus)
    if args.limit_docs:
        docs2 = docs2[: args.limit_docs]
    again = build_index(settings, documents=docs2, embed_model=embed_model, show_progress=False)
    reindex = time.perf_counter() - t0
    assert again.embedded_documents == 0, again.summary()
    if not args.reuse:
        rows.append(("unchanged re-index, s", reindex, f"{first_build:.1f} (first build)", f"{reindex / first_build:.3f}", "<= 0.05"))
    else:
        rows.append(("unchanged re-index, s", reindex, "-", "-", "-"))

    # ---- retrieval ------------------------------------------------------------------
    stored = load_nodes(settings)
    k = 10
    dense = dense_retriever(settings, embed_model, settings.candidate_k)
    sparse = bm25_retriever(stored, settings.candidate_k)
    retrievers = {
        "dense": MedQARetriever(dense, None, top_k=k, candidate_k=settings.candidate_k),
        "bm25": MedQARetriever(None, sparse, top_k=k, candidate_k=settings.candidate_k),
        "hybrid (RRF)": MedQARetriever(dense, sparse, top_k=k, candidate_k=settings.candidate_k),
        f"default ({settings.retrieval_mode})": build_retriever(settings.model_copy(update={"top_k": k}), embed_model=embed_model, nodes=stored),
    }
    if settings.rerank:  # what the query engine returns: the fielded candidates re-ranked
        from llama_index.core.llms import MockLLM

        from rag_app.answer.engine import build_query_engine

        engine = build_query_engine(settings, llm=MockLLM(), embed_model=embed_model, top_k=k)
        retrievers[f"engine ({settings.retrieval_mode} + re-ranker)"] = engine
    questions = [(d.metadata["question"], d.id_) for d in docs if d.metadata.get("question")]
    questions = random.Random(0).sample(questions, min(args.queries, len(questions)))
    results = {name: quality(r, questions) for name, r in retrievers.items()}

    default = build_retriever(settings, embed_model=embed_model, nodes=stored)  # what the query engine uses
    for q, _ in questions[:20]:  # warm-up
        default.retrieve(q)
    latencies = []
    for q, _ in questions[:300]:
        t = time.perf_counter()
        default.retrieve(q)
        latencies.append((time.perf_counter() - t) * 1000)
    latencies.sort()
    p50 = statistics.median(latencies)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    mode = f"{settings.retrieval_mode}, top-{settings.top_k}"
    rows.append((f"retrieval p50, ms ({mode})", p50, "-", "-", "<= 50"))
    rows.append((f"retrieval p95, ms ({mode})", p95, "-", "-", "-"))
    for metric in ("hit@1", "hit@5", "mrr@10"):
        base = results["dense"][metric]
        for name in retrievers:
            value = results[name][metric]
            ratio = f"{value / base:.2f}" if base else "-"
            rows.append((f"self-retrieval {metric}, {name}", value, f"{base:.3f} (dense)", ratio, "-"))

    if args.reference_storage:
        rows += reference_rows(settings, args, stored, questions, docs, embed_model)

    print()
    print(f"MedQuAD: {len(docs)} documents, {stats.total_chunks} chunks (chunk_size={settings.chunk_size}, "
          f"overlap={settings.chunk_overlap}); raw encode on {min(args.encode_sample, stats.total_chunks)} sampled chunks; "
          f"{len(questions)} questions" + (" (index reused, not rebuilt)" if args.reuse else ""))
    emit_rows(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
