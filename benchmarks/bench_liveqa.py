"""Retrieval quality on real consumer health questions (TREC 2017 LiveQA training questions) over MedQuAD.

    MEDQA_STORAGE_DIR=/tmp/bench/full MEDQA_COLLECTION=bench nice -n 19 python benchmarks/bench_liveqa.py \
        --liveqa ../shared/data/liveqa-train --corpus ../shared/data/medquad --json /tmp/bench/liveqa.json

Questions are ``SUBJECT + ". " + MESSAGE`` exactly as people wrote them (:mod:`corpus.liveqa`). A MedQuAD QA
pair is relevant when its answer contains >= 80% of the word 5-grams of one of the question's reference
answers (:func:`corpus.liveqa.derive_labels`); only questions with at least one relevant pair are scored
(136 of 446 on the full corpus).

Systems, all scored with :func:`eval.metrics.ranking_metrics` at k=10 (a QA pair counts once, at its best rank):

* **baseline dense** (measured in the same run): a plain LlamaIndex ``VectorStoreIndex`` with LlamaIndex's
  defaults (default ``SentenceSplitter``: chunk 1024, overlap 200) over every answered MedQuAD document,
  all-MiniLM-L6-v2 embeddings (the bundled copy, via :mod:`rag_app.llm`), persisted in Chroma under
  ``--baseline-dir`` (default ``<storage>/bench-liveqa/baseline``), dense top-10. The index is built once and
  reused while the corpus, model and splitter are unchanged; ``--rebuild-baseline`` forces a rebuild.
* **baseline BM25**: ``llama-index-retrievers-bm25`` (English stemming, as in :mod:`rag_app.retrieval`) over
  the same chunks, top-10.
* **ceilings**: the fielded top 20 re-ordered with the labels (a relevant pair's topic, or topic and question type,
  first): what a perfect re-ranker of those candidates could reach.
* **engine**: the project's default query engine, ``build_query_engine(settings, llm=<stub>).retrieve`` over the
  project index named by the environment (``MEDQA_STORAGE_DIR``, ``MEDQA_COLLECTION``, ...), with ``top_k=10``.
  Its per-query retrieval latency is reported (p50/p95, after a short warm-up).

The scored questions are split deterministically into two halves by the SHA-1 of their id: ``tune`` (for
choosing retrieval settings) and ``report`` (held out; the headline rows of ``--json`` come from it). Both
halves and ``all`` are printed. ``--limit N`` scores only the first N labelled questions (smoke runs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._rows import emit_rows  # noqa: E402
from corpus.liveqa import HALVES, answers_of, half_of, split_halves  # noqa: E402,F401

K = 10
#: Candidates the ceiling rows re-order: the fielded retriever's top 20.
CEILING_POOL = 20
BASELINE_COLLECTION = "baseline"
MARKER = "baseline.json"
MRR_TARGET = ">= 0.75"
HIT_TARGET = ">= 0.65"
LATENCY_TARGET = "<= 150"
P95_TARGET = "<= 300"


# ---- pure helpers (tested in tests/test_bench_liveqa.py) ----------------------------------------------------


def dedupe_sources(source_ids: Iterable[str], k: int = K) -> list[str]:
    """Source (QA pair) ids in rank order, each once at its best rank, at most ``k``."""
    return list(dict.fromkeys(source_ids))[:k]


def recall_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int = K) -> float:
    """Share of the relevant ids found in the first ``k`` distinct ranked ids."""
    relevant = set(relevant)
    if not relevant:
        return 0.0
    return len(set(dedupe_sources(ranked, k)) & relevant) / len(relevant)


def aggregate(
    rankings: Mapping[str, Sequence[str]], labels: Mapping[str, Iterable[str]], qids: Sequence[str], k: int = K
) -> dict[str, float]:
    """Mean MRR@k, Recall@k, nDCG@k and hit@1 over ``qids`` (ranking metrics from :mod:`eval.metrics`).

    Returns:
        ``{"n", "mrr@k", "recall@k", "ndcg@k", "hit@1"}``; the means are NaN when ``qids`` is empty.
    """
    from eval.metrics import ranking_metrics

    ranked = [list(rankings.get(q, [])) for q in qids]
    relevant = [set(labels[q]) for q in qids]
    at_k = ranking_metrics(ranked, relevant, k)
    at_1 = ranking_metrics(ranked, relevant, 1)
    recall = [recall_at_k(r, rel, k) for r, rel in zip(ranked, relevant)]

    def mean(values: Sequence[float]) -> float:
        return float(statistics.fmean(values)) if values else math.nan

    return {
        "n": len(qids),
        f"mrr@{k}": mean(at_k[f"mrr@{k}"]),
        f"recall@{k}": mean(recall),
        f"ndcg@{k}": mean(at_k[f"ndcg@{k}"]),
        "hit@1": mean(at_1["hit@1"]),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation between order statistics; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def fmt_ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base and not math.isnan(base) and not math.isnan(value) else "-"


# ---- baseline: plain LlamaIndex defaults ---------------------------------------------------------------------


def corpus_fingerprint(documents: Sequence[Any]) -> str:
    """SHA-256 over the documents' ids and content hashes (order-independent)."""
    digest = hashlib.sha256()
    for line in sorted(f"{d.id_}\t{d.hash}" for d in documents):
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def baseline_index(documents: Sequence[Any], embed_model: Any, embed_name: str, cache_dir: Path, rebuild: bool) -> tuple[Any, list[Any], dict[str, Any]]:
    """The plain LlamaIndex ``VectorStoreIndex`` (default splitter) in Chroma under ``cache_dir``, built once.

    Returns:
        ``(index, chunks, info)``: the index, its chunks read back from Chroma (for BM25) and the build record.
    """
    import chromadb
    from chromadb.config import Settings as ChromaSettings
    from llama_index.core import Settings as LlamaSettings
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from rag_app.index.chroma import iter_records, record_node

    splitter = LlamaSettings.node_parser  # LlamaIndex's default SentenceSplitter (1024 / 200)
    expected = {
        "documents": len(documents),
        "corpus_fingerprint": corpus_fingerprint(documents),
        "embed_model": embed_name,
        "splitter": type(splitter).__name__,
        "chunk_size": getattr(splitter, "chunk_size", None),
        "chunk_overlap": getattr(splitter, "chunk_overlap", None),
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    marker = cache_dir / MARKER
    client = chromadb.PersistentClient(path=str(cache_dir / "chroma"), settings=ChromaSettings(anonymized_telemetry=False))
    names = {c if isinstance(c, str) else c.name for c in client.list_collections()}
    recorded: dict[str, Any] = {}
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text())
        except ValueError:
            recorded = {}
    reuse = (
        not rebuild
        and BASELINE_COLLECTION in names
        and {k: recorded.get(k) for k in expected} == expected
        and client.get_collection(BASELINE_COLLECTION).count() == recorded.get("chunks")
    )
    if reuse:
        print(f"baseline: reusing the index in {cache_dir} (built {recorded.get('built_at')}, {recorded['chunks']} chunks)", flush=True)
        store = ChromaVectorStore(chroma_collection=client.get_collection(BASELINE_COLLECTION))
        index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
        info = recorded
    else:
        why = "--rebuild-baseline" if rebuild else ("no index yet" if not recorded else "corpus, model or splitter changed")
        print(f"baseline: building a plain VectorStoreIndex over {len(documents)} documents in {cache_dir} ({why})", flush=True)
        marker.unlink(missing_ok=True)
        if BASELINE_COLLECTION in names:
            client.delete_collection(BASELINE_COLLECTION)
        store = ChromaVectorStore(chroma_collection=client.get_or_create_collection(BASELINE_COLLECTION))
        started = time.perf_counter()
        index = VectorStoreIndex.from_documents(
            list(documents),
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed_model,
            show_progress=True,
        )
        info = {
            **expected,
            "chunks": store._collection.count(),
            "build_seconds": round(time.perf_counter() - started, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        marker.write_text(json.dumps(info, indent=2))  # written last: a half-built index is never reused
        print(f"baseline: built {info['chunks']} chunks in {info['build_seconds']:.0f} s", flush=True)

    chunks = [record_node(*r) for r in iter_records(client.get_collection(BASELINE_COLLECTION), ["documents", "metadatas"])]
    chunks.sort(key=lambda n: n.id_)
    return index, chunks, info


def plain_bm25(chunks: Sequence[Any], top_k: int = K) -> Any:
    """``BM25Retriever`` over the chunks, configured as :mod:`rag_app.retrieval` configures it."""
    import Stemmer
    from llama_index.retrievers.bm25 import BM25Retriever

    return BM25Retriever.from_defaults(
        nodes=list(chunks), similarity_top_k=min(top_k, len(chunks)), stemmer=Stemmer.Stemmer("english"), language="english"
    )


def run_systems(
    systems: Mapping[str, Callable[[str], Sequence[Any]]], queries: Mapping[str, str], warmup: int = 0
) -> dict[str, tuple[dict[str, list[str]], list[float]]]:
    """Rank sources for every query with every system; ``{system: (rankings by qid, latencies in ms)}``.

    The systems take turns on each query, so a change in machine load affects their latencies alike.
    """
    from tqdm.auto import tqdm

    items = sorted(queries.items())
    for _, query in items[:warmup]:
        for retrieve in systems.values():
            retrieve(query)
    out: dict[str, tuple[dict[str, list[str]], list[float]]] = {name: ({}, []) for name in systems}
    for qid, query in tqdm(items, desc="retrieving", unit="q"):
        for name, retrieve in systems.items():
            started = time.perf_counter()
            nodes = retrieve(query)
            out[name][1].append((time.perf_counter() - started) * 1000)
            out[name][0][qid] = dedupe_sources((n.node.ref_doc_id or n.node.node_id) for n in nodes)
    return out


def rerank_alone(reranker: Any, query: str, nodes: Sequence[Any]) -> list[Any]:
    """``nodes`` (one per QA pair) in the re-ranker's order by its own score, ignoring the retriever's."""
    from llama_index.core.schema import NodeWithScore

    from rag_app.retrieval.classic import one_per_source

    firsts = one_per_source(nodes, len(nodes))
    logits = reranker.logits(query, firsts)
    order = sorted(range(len(firsts)), key=lambda i: -logits[i])
    return [NodeWithScore(node=firsts[i].node, score=logits[i]) for i in order]


def ceiling(pool: Any, relevant: Iterable[str], query: str, by_aspect: bool) -> list[Any]:
    """A ceiling of re-ranking ``pool``'s candidates: those on a relevant candidate's topic (and, ``by_aspect``, its
    question type) first, the retriever's order kept otherwise. It reads the labels, so it bounds any re-ranker."""
    nodes = pool.retrieve(query)
    relevant = set(relevant)

    def key(n: Any) -> tuple[str, str]:
        meta = n.node.metadata or {}
        return (str(meta.get("focus") or "").lower(), str(meta.get("question_type") or "") if by_aspect else "")

    good = {key(n) for n in nodes if n.node.ref_doc_id in relevant}
    return sorted(nodes, key=lambda n: key(n) not in good)


# ---- main ------------------------------------------------------------------------------------------------------


def _default_corpus() -> str:
    env = os.environ.get("MEDQA_CORPUS", "").split(",")[0].strip()
    return env or str(REPO.parent / "shared" / "data" / "medquad")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--liveqa", default=str(REPO.parent / "shared" / "data" / "liveqa-train"), help="LiveQA training XML folder or files")
    parser.add_argument("--corpus", default=_default_corpus(), help="MedQuAD folder (default: MEDQA_CORPUS, else ../shared/data/medquad)")
    parser.add_argument("--baseline-dir", help="cache of the baseline index (default: <storage>/bench-liveqa/baseline)")
    parser.add_argument("--rebuild-baseline", action="store_true", help="rebuild the baseline index even when the cache is current")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N labelled questions (smoke runs)")
    parser.add_argument("--limit-docs", type=int, default=0, help="baseline index over the first N documents only (smoke runs; labels still use all)")
    parser.add_argument("--warmup", type=int, default=5, help="queries run by every system before timing")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

    from llama_index.core.llms import MockLLM

    from corpus import load_corpus
    from corpus.liveqa import derive_labels, load_liveqa
    from rag_app.config import DEFAULT_EMBED_MODEL, Settings
    from rag_app.answer.engine import build_query_engine
    from rag_app.llm.load import load_embed_model

    settings = Settings()
    questions = load_liveqa([args.liveqa])
    documents, _ = load_corpus([args.corpus])
    labels = derive_labels(questions, answers_of(documents))
    labelled = sorted(labels)
    if args.limit:
        labelled = labelled[: args.limit]
    wanted = set(labelled)
    queries = {q.qid: q.query for q in questions if q.qid in wanted}
    groups = split_halves(labelled)
    print(
        f"LiveQA: {len(questions)} questions, {len(labels)} with a relevant MedQuAD pair (>= 80% of a reference answer's "
        f"5-grams), scoring {len(labelled)}: tune {len(groups['tune'])}, report {len(groups['report'])}; "
        f"MedQuAD: {len(documents)} answered QA pairs",
        flush=True,
    )

    # ---- baseline ------------------------------------------------------------------------------
    baseline_settings = settings.model_copy(update={"embed_model": DEFAULT_EMBED_MODEL})
    base_embed = load_embed_model(baseline_settings)
    cache = Path(args.baseline_dir) if args.baseline_dir else settings.storage_dir / "bench-liveqa" / "baseline"
    base_docs = documents[: args.limit_docs] if args.limit_docs else documents
    index, chunks, info = baseline_index(base_docs, base_embed, DEFAULT_EMBED_MODEL, cache, args.rebuild_baseline)
    dense = index.as_retriever(similarity_top_k=K)
    bm25 = plain_bm25(chunks, K)

    # ---- engine --------------------------------------------------------------------------------
    engine_embed = base_embed if settings.embed_model == DEFAULT_EMBED_MODEL else None
    engine = build_query_engine(settings, llm=MockLLM(), embed_model=engine_embed, top_k=K)
    systems_to_run = {
        "baseline dense (LlamaIndex defaults)": dense.retrieve,
        "baseline BM25": bm25.retrieve,
        f"engine ({settings.retrieval_mode}, {settings.collection})": engine.retrieve,
    }
    if engine.reranker is not None:  # the ablation: each half of the default alone
        fielded = engine.model_copy(update={"reranker": None, "retriever": engine.retriever.with_top_k(K)})
        candidates = index.as_retriever(similarity_top_k=settings.rerank_candidates)
        systems_to_run["fielded alone (MEDQA_RERANK=false)"] = fielded.retrieve
        systems_to_run[f"re-ranker alone over dense top {settings.rerank_candidates}"] = lambda q: rerank_alone(engine.reranker, q, candidates.retrieve(q))
    pool = engine.retriever.with_top_k(CEILING_POOL)
    label_of = {query: labels.get(qid, ()) for qid, query in queries.items()}
    for by_aspect, what in ((False, "topic"), (True, "topic+aspect")):
        systems_to_run[f"ceiling: right {what} first (top {CEILING_POOL})"] = (
            lambda q, by_aspect=by_aspect: ceiling(pool, label_of[q], q, by_aspect)
        )

    load_before = os.getloadavg()[0]
    systems = run_systems(systems_to_run, queries, warmup=args.warmup)
    load_after = os.getloadavg()[0]
    names = list(systems)
    base_name, bm25_name, engine_name = names[:3]
    results = {name: {g: aggregate(rank, labels, groups[g]) for g in ("tune", "report", "all")} for name, (rank, _) in systems.items()}
    latency = {name: (percentile(lat, 0.5), percentile(lat, 0.95)) for name, (_, lat) in systems.items()}

    print()
    print(
        f"baseline: {info['documents']} documents, {info['chunks']} chunks ({info['splitter']} {info['chunk_size']}/{info['chunk_overlap']}), "
        f"{info['embed_model']}; engine: storage {settings.storage_dir}, collection {settings.collection!r}, "
        f"{settings.retrieval_mode}, embed {settings.embed_model}, candidate_k {settings.candidate_k}, top_k {K}; "
        f"load average {load_before:.2f} -> {load_after:.2f} on {os.cpu_count()} CPUs while timing"
    )
    print(f"| {'system':<40} | {'half':<6} | {'n':>4} | {'MRR@10':>7} | {'Recall@10':>9} | {'nDCG@10':>7} | {'hit@1':>6} | {'p50 ms':>7} | {'p95 ms':>7} |")
    print(f"|{'-' * 42}|{'-' * 8}|{'-' * 6}|{'-' * 9}|{'-' * 11}|{'-' * 9}|{'-' * 8}|{'-' * 9}|{'-' * 9}|")
    for group in ("tune", "report", "all"):
        for name in names:
            r = results[name][group]
            p50, p95 = latency[name] if group == "all" else (math.nan, math.nan)
            lat = f"{p50:>7.1f} | {p95:>7.1f}" if group == "all" else f"{'':>7} | {'':>7}"
            print(f"| {name:<40} | {group:<6} | {r['n']:>4} | {r['mrr@10']:>7.3f} | {r['recall@10']:>9.3f} | {r['ndcg@10']:>7.3f} | {r['hit@1']:>6.3f} | {lat} |")

    rows: list[tuple[str, float, str, str, str]] = []
    for group in ("tune", "report", "all"):
        eng, base = results[engine_name][group], results[base_name][group]
        rows.append((f"LiveQA MRR@10, engine ({group}, n={eng['n']})", eng["mrr@10"], f"{base['mrr@10']:.3f} (LlamaIndex dense)", fmt_ratio(eng["mrr@10"], base["mrr@10"]), MRR_TARGET))
    for name in names[3:]:  # the ablation
        part = results[name]["report"]
        rows.append((f"LiveQA MRR@10, {name} (report)", part["mrr@10"], f"{results[base_name]['report']['mrr@10']:.3f} (LlamaIndex dense)",
                     fmt_ratio(part["mrr@10"], results[base_name]["report"]["mrr@10"]), "-"))
    eng, base, sparse = results[engine_name]["report"], results[base_name]["report"], results[bm25_name]["report"]
    rows.append((f"LiveQA MRR@10, plain BM25 (report, n={sparse['n']})", sparse["mrr@10"], f"{base['mrr@10']:.3f} (LlamaIndex dense)", fmt_ratio(sparse["mrr@10"], base["mrr@10"]), "-"))
    for metric, label in (("recall@10", "Recall@10"), ("ndcg@10", "nDCG@10"), ("hit@1", "hit@1")):
        target = HIT_TARGET if metric == "hit@1" else "-"
        rows.append((f"LiveQA {label}, engine (report)", eng[metric], f"{base[metric]:.3f} (LlamaIndex dense)", fmt_ratio(eng[metric], base[metric]), target))
    (e50, e95), (b50, _) = latency[engine_name], latency[base_name]
    rows.append(("LiveQA retrieval p50, ms (engine, top-10)", e50, f"{b50:.1f} (LlamaIndex dense)", fmt_ratio(e50, b50), LATENCY_TARGET))
    rows.append(("LiveQA retrieval p95, ms (engine, top-10)", e95, "-", "-", P95_TARGET))

    print()
    emit_rows(rows, args.json, target_width=12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
