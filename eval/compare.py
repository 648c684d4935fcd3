"""Score base, fine-tuned and retrieval-augmented systems on held-out questions.

    python -m eval.compare                                   # base, ft, base+rag, ft+rag, raft, raft+rag on 200 test questions
    python -m eval.compare --questions liveqa --systems base,base+rag,extractive,raft,raft+rag   # real consumer questions
    python -m eval.compare --limit 50 --exclude_test_from_index
    python -m eval.compare --ft_model runs/smollm2-135m-lora/merged --systems base,ft,ft+rag
    python -m eval.compare --config eval/recipes/smollm2-cpu.yaml

The test questions come from exactly ``<storage>/splits/test.jsonl`` written by ``python -m finetune.data``
(its manifest hash goes in the report). ``--questions liveqa`` scores real consumer messages instead: the
TREC 2017 LiveQA training questions with their NLM reference answers (evaluation only, never trained on), in
the fixed half ``--half`` (``report`` is held out; ``tune`` is the one to choose settings on), split into
*answerable* (a MedQuAD pair is relevant, :func:`corpus.liveqa.derive_labels`) and *rest*. Generation is greedy and batched over the query engine's own
prompts. Writes ``<storage>/reports/<timestamp>/`` with report.md, metrics.json, details.jsonl and plots,
and prints the table.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from llama_index.core.llms import MockLLM
from tqdm.auto import tqdm

from eval import metrics as M
from eval.arguments import CompareArguments, EvalError, parse_args
from eval.baselines import extractive_answer, oracle_answer
from eval.cache import AnswerCache
from eval.questions import exclusion_set, load_liveqa_rows, load_test_split
from eval.report import write_report
from eval.systems import FINETUNED_SYSTEMS, PAIRS, system_specs
from rag_app.answer.engine import build_query_engine
from rag_app.config import load_settings
from rag_app.errors import MedQAError
from rag_app.index.chroma import load_nodes
from rag_app.llm.info import model_info
from rag_app.llm.load import load_llm
from rag_app.retrieval.modes import build_retriever
from rag_app.text.prompts import estimate_tokens
from rag_app.text.repetition import repeats

logger = logging.getLogger("eval")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for noisy in ("httpx", "chromadb", "sentence_transformers", "transformers", "urllib3", "bm25s", "llama_index", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args = parse_args(argv)
        return run(args)
    except MedQAError as err:  # set-up mistakes here or in rag_app (no index, no model, bad settings)
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args: CompareArguments) -> int:
    """Evaluate every system and write the report. See the module docstring."""
    overrides = {"storage_dir": args.storage_dir, "corpus": args.corpus}
    settings = load_settings(**{k: v for k, v in overrides.items() if v})
    specs = system_specs(args, settings)
    if args.questions == "medquad":
        rows, manifest = load_test_split(args, settings)
    elif args.questions == "liveqa":
        if args.exclude_test_from_index:
            raise EvalError("--exclude_test_from_index applies to the MedQuAD test split only")
        rows, manifest = load_liveqa_rows(args, settings)
    else:
        raise EvalError(f"--questions {args.questions!r} is not one of medquad, liveqa")
    started = time.time()
    questions = [r["question"] for r in rows]
    references = [r["answer"] for r in rows]
    # ROUGE against the best-matching reference when a question has several (LiveQA).
    scored_refs: list[Any] = [r["references"] if len(r["references"]) > 1 else r["answer"] for r in rows]
    relevant = [set(r["relevant"]) for r in rows]
    notes: list[str] = []

    # ---- retrieval, once for all RAG systems: the engine's own (retriever, then re-ranker) -----------------
    rag_k = max([s.top_k for s in specs if s.rag] or [0])
    ranked: list[list[Any]] = [[] for _ in rows]
    sources: list[list[Any]] = [[] for _ in rows]
    index_note = "no RAG system ran"
    retriever = reranker = None
    if rag_k:
        nodes = load_nodes(settings)
        indexed = {n.ref_doc_id for n in nodes}
        present = sum(bool(rel & indexed) for rel in relevant)
        exclude = exclusion_set(rows, nodes) if args.exclude_test_from_index else frozenset()
        ret_settings = settings.model_copy(update={"candidate_k": max(settings.candidate_k, 60 if exclude else 20)})
        retriever = build_retriever(ret_settings, nodes=nodes, exclude=exclude)
        if exclude:
            index_note = (
                f"knowledge absent: {present}/{len(rows)} test QA pairs are in the index, but retrieval excludes them and "
                f"every pair sharing a test question's focus ({len(exclude)} pairs excluded)"
            )
        elif args.questions == "liveqa":
            index_note = f"{present}/{len(rows)} questions have a relevant MedQuAD pair in the index"
        else:
            index_note = f"open book: {present}/{len(rows)} test questions' own QA pairs are in the index"
        # No model yet: the question is cut by the estimated token count. Ten sources, for the retrieval metrics.
        ranker = build_query_engine(settings, llm=MockLLM(), retriever=retriever, top_k=max(rag_k, 10))
        reranker = ranker.reranker
        for i, q in enumerate(tqdm(questions, desc="Retrieving", unit="q")):
            clean = ranker.clean_question(q)[0]
            ranked[i] = ranker.ranked(clean)
            sources[i] = ranker.select_sources(clean, ranked[i])

    # ---- generation -----------------------------------------------------------------
    answers: dict[str, list[str]] = {}
    used_sources: dict[str, list[list[Any]]] = {}
    models: dict[str, Any] = {}
    llm_cache: dict[str, Any] = {}
    for spec in specs:
        if spec.kind == "reference":
            answers[spec.name] = list(references)
            used_sources[spec.name] = [[] for _ in rows]
            models[spec.name] = {"name": "reference answers"}
            continue
        if spec.kind == "extractive":
            used_sources[spec.name] = [s[: spec.top_k] for s in sources]
            answers[spec.name] = [extractive_answer(s, args.max_new_tokens, estimate_tokens) for s in used_sources[spec.name]]
            models[spec.name] = {"name": "top source's answer text, cut to the answer budget"}
            continue
        if spec.kind == "oracle":
            used_sources[spec.name] = [s[: spec.top_k] for s in sources]
            answers[spec.name] = [
                oracle_answer(s, refs, args.max_new_tokens, estimate_tokens) for s, refs in zip(used_sources[spec.name], scored_refs)
            ]
            models[spec.name] = {"name": f"best of the top {spec.top_k} sources' answer texts by ROUGE-L against the reference"}
            continue
        if spec.name in FINETUNED_SYSTEMS or spec.model == settings.finetuned_llm:
            path = Path(spec.model)
            if not spec.model.lower().endswith(".gguf") and not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
                recipe = "smollm2-135m-raft-cpu" if spec.name.startswith("raft") else "smollm2-135m-lora-cpu"
                notes.append(
                    f"system {spec.name!r} skipped: no fine-tuned model at {spec.model} "
                    f"(train one with `python -m finetune.train --config finetune/recipes/{recipe}.yaml`)"
                )
                logger.warning(notes[-1])
                continue
        if spec.model not in llm_cache:
            llm_cache.clear()  # one model in memory at a time
            llm_cache[spec.model] = load_llm(settings.model_copy(update={"llm": spec.model}), max_new_tokens=args.max_new_tokens)
        llm = llm_cache[spec.model]
        models[spec.name] = asdict(model_info(llm))
        # The engine plans each answer from the ranked sources (and reads its topic names from the retriever).
        engine = build_query_engine(
            settings, use_rag=spec.rag, llm=llm, retriever=retriever if spec.rag else None, reranker=reranker if spec.rag else None,
            top_k=spec.top_k, max_new_tokens=args.max_new_tokens, medical_notice=False,
        )
        plans = [engine.plan(q, ranked=r if spec.rag else None) for q, r in zip(questions, ranked)]
        cache = AnswerCache(settings.storage_dir / "cache" / "eval-answers.jsonl", llm) if args.cache else None
        answers[spec.name] = engine.answer_batch(plans, args.batch_size, cache, desc=f"Generating {spec.name}")
        used_sources[spec.name] = [plan.sources for plan in plans]
    llm_cache.clear()
    ran = [s for s in specs if s.name in answers]
    if not ran:
        raise EvalError("no system could run; " + "; ".join(notes))

    # ---- metrics ------------------------------------------------------------------------
    per_q: dict[str, dict[str, list[float]]] = {}
    for spec in ran:
        scores: dict[str, list[float]] = dict(M.rouge_scores(answers[spec.name], scored_refs))
        scores["abstention"] = [float(M.is_abstention(a)) for a in answers[spec.name]]
        scores["words"] = [float(len(a.split())) for a in answers[spec.name]]
        scores["repetition"] = [float(repeats(a)) for a in answers[spec.name]]
        if spec.rag:
            srcs = used_sources[spec.name]
            passages = [[n.node.get_content() for n in s] for s in srcs]
            scores["grounding"] = [M.grounding_score(a, p) for a, p in zip(answers[spec.name], passages)]
            scores["citation_support"] = [M.citation_support(a, p) for a, p in zip(answers[spec.name], passages)]
            golds = [[i for i, n in enumerate(s, start=1) if n.node.ref_doc_id in rel] for s, rel in zip(srcs, relevant)]
            scores["citation_accuracy"] = [M.citation_correct(a, p) for a, p in zip(answers[spec.name], golds)]
        per_q[spec.name] = scores

    subsets = {name: [i for i, r in enumerate(rows) if r["subset"] == name] for name in dict.fromkeys(r["subset"] for r in rows) if name}
    retrieval: dict[str, dict[str, Any]] = {}
    if rag_k:
        k = rag_k
        scored = [i for i, rel in enumerate(relevant) if rel]  # LiveQA: the answerable questions
        ranked = [[n.node.ref_doc_id for n in sources[i]] for i in scored]
        gold = [sorted(relevant[i]) for i in scored]
        ret = {f"pair_{m}": v for m, v in M.ranking_metrics(ranked, gold, k).items()}
        ret.update({f"pair_{m}": v for m, v in M.ranking_metrics(ranked, gold, 10).items() if m.startswith("mrr")})
        if args.questions == "medquad":
            doc_key = lambda meta: f"{meta.get('collection', '')}/{meta.get('document_id', '')}"  # noqa: E731
            ranked_docs = [[doc_key(n.node.metadata) for n in s] for s in sources]
            gold_docs = [[f"{r.get('collection', '')}/{r.get('document_id', '')}"] for r in rows]
            ret.update({f"document_{m}": v for m, v in M.ranking_metrics(ranked_docs, gold_docs, k).items()})
            ctx = [[n.node.get_content() for n in s[:k]] for s in sources]
            ref_ctx = [[f"Question: {r['question']}\nAnswer: {r['answer']}"] for r in rows]
            ret.update(M.ragas_context_scores(ctx, ref_ctx, [r[:k] for r in ranked], gold))
        retrieval = {name: M.summarize(vals, seed=args.seed) for name, vals in ret.items()}

    judge_scores = _judge(args, ran, questions, answers, used_sources, notes)
    for name, extra in judge_scores.items():
        per_q[name].update(extra)

    summary = {name: {m: M.summarize(v, seed=args.seed) for m, v in scores.items()} for name, scores in per_q.items()}
    by_subset = {
        subset: {name: {m: M.summarize([v[i] for i in idx], seed=args.seed) for m, v in scores.items()} for name, scores in per_q.items()}
        for subset, idx in subsets.items()
    }
    tests = []
    for a, b in PAIRS:
        if a in per_q and b in per_q:
            for m in M.ROUGE_TYPES:
                diff = float(np.mean(per_q[a][m]) - np.mean(per_q[b][m]))
                tests.append({"a": a, "b": b, "metric": m, "diff": diff, "p": M.paired_bootstrap_pvalue(per_q[a][m], per_q[b][m], seed=args.seed)})

    # ---- outputs ------------------------------------------------------------------------
    out_dir = Path(args.output_dir) if args.output_dir else settings.storage_dir / "reports" / time.strftime("%Y%m%d-%H%M%S")
    context = {
        "args": vars(args),
        "manifest_hash": manifest.get("content_hash"),
        "n_questions": len(rows),
        "question_note": (
            f"{len(rows)} test questions from `test.jsonl` (split manifest hash `{manifest.get('content_hash')}`)"
            if args.questions == "medquad"
            else f"{len(rows)} questions from the {manifest['source']} (" + ", ".join(f"{n} {k}" for k, n in ((k, len(v)) for k, v in subsets.items()))
            + f"; question set hash `{manifest.get('content_hash')}`)"
        ),
        "subsets": by_subset,
        "index_note": index_note,
        "notes": notes,
        "models": models,
        "systems": [vars(s) for s in ran],
        "seconds": time.time() - started,
    }
    details = []
    for i, r in enumerate(rows):
        details.append(
            {
                "question": r["question"],
                "reference": r["answer"],
                "doc_id": r["doc_id"],
                "relevant": r["relevant"],
                "subset": r["subset"],
                "answers": {s.name: answers[s.name][i] for s in ran},
                "sources": [
                    {"rank": j, "doc_id": n.node.ref_doc_id, "focus": n.node.metadata.get("focus"), "url": n.node.metadata.get("url"), "score": n.score}
                    for j, n in enumerate(sources[i][:rag_k], start=1)
                ],
                "scores": {name: {m: v[i] for m, v in sc.items()} for name, sc in per_q.items()},
            }
        )
    table = write_report(out_dir, summary, retrieval, tests, details, per_q, context, plots=not args.no_plots)
    print(table)
    print(f"\nreport: {out_dir / 'report.md'}")
    return 0


def _judge(args, ran, questions, answers, used_sources, notes) -> dict[str, dict[str, list[float]]]:
    """ragas Faithfulness and ResponseRelevancy with a configured judge; nothing when none is configured."""
    if not (args.judge_llm or args.judge_api_base):
        return {}
    from eval.judge import judge_scores

    try:
        return judge_scores(args, ran, questions, answers, used_sources)
    except Exception as err:  # the judge is optional: report and go on
        notes.append(f"judge metrics skipped: {err}")
        logger.warning(notes[-1])
        return {}



if __name__ == "__main__":
    sys.exit(main())
