"""Choose the fielded retriever's fusion weights on the LiveQA *tune* half; print both halves.

    MEDQA_STORAGE_DIR=/tmp/bench/full MEDQA_COLLECTION=bench python benchmarks/tune_liveqa.py \
        --liveqa ../shared/data/liveqa-train --corpus ../shared/data/medquad

Each question's candidates and their evidence (:meth:`rag_app.retrieval.fielded.FieldedRetriever.candidates`: best-chunk
cosine, question cosine, topic match, question type, overview) are computed once over the index named by the
environment. The source prior (:func:`source_log_odds`: how much more often than average a candidate from each
MedQuAD collection is relevant) is estimated over the tune half's candidates. Every weight combination of the
grid then re-ranks them. With 67 tune questions the single best grid point overfits, so the choice is the point whose tune-half MRR@10 *averaged with its grid neighbours* (one
step along each axis) is best. It is printed with its report-half figures, beside the current settings
(``MEDQA_*``) and the ideas switched on one at a time, so the note can say what each adds. The report half is
never used to choose.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_liveqa import K, _default_corpus, aggregate  # noqa: E402
from corpus.liveqa import answers_of, split_halves  # noqa: E402

GRID = {
    "question": (0.0, 0.2, 0.3, 0.4, 0.5),
    "focus": (0.0, 0.1, 0.15, 0.2, 0.3),
    "type": (0.0, 0.02, 0.05, 0.1),
    "overview": (0.0, 0.02, 0.05, 0.1),
    "sentences": (0.0, 0.3, 0.5),
    "source": (0.0, 0.02, 0.04, 0.06, 0.08, 0.1),
}


def source_log_odds(
    ranked: dict[str, list[str]], labels: dict[str, set[str]], source_of: dict[str, str], alpha: float = 1.0
) -> dict[str, float]:
    """Log-odds, per source collection, that a candidate is relevant, against the average candidate.

    ``log((relevant_s + alpha) / (candidates_s + alpha / p)) - log(p)`` with ``p`` the share of relevant candidates
    overall: add-``alpha`` smoothing pulls a source seen rarely towards 0 (no preference).

    Args:
        ranked: The candidates (doc ids) of each question.
        labels: The relevant doc ids of each question.
        source_of: The source collection of each doc id.
        alpha: Smoothing (pseudo-counts of relevant candidates).
    """
    import math
    from collections import Counter

    relevant: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for qid, ids in ranked.items():
        for doc_id in ids:
            seen[source_of.get(doc_id, "")] += 1
            relevant[source_of.get(doc_id, "")] += doc_id in labels.get(qid, ())
    total_relevant, total = sum(relevant.values()), sum(seen.values())
    if not total_relevant:
        return {}
    p = total_relevant / total
    return {s: round(math.log((relevant[s] + alpha) / (seen[s] + alpha / p)) - math.log(p), 2) for s in sorted(seen) if s}


def aspect_hit(ranking, items: list[dict], prefix: str = "aspect") -> float:
    """hit@1 of the aspect items: the share whose first page under ``ranking`` (message key -> doc ids, keyed
    ``<prefix>-<i>``) is one of the item's relevant pages."""
    return sum(bool(r := ranking(f"{prefix}-{i}")) and r[0] in item["relevant"] for i, item in enumerate(items)) / len(items)


def dev_aspects(settings) -> list[dict]:
    """The aspect dev set: 300 messages written about the MedQuAD *validation* split's topics (``bench_aspects``)."""
    from bench_aspects import load_aspect_set

    return load_aspect_set(settings, "val")


#: Weights of the re-ranker's probability beside the fielded score tried by ``--rerank`` (inf: the re-ranker alone).
RERANK_WEIGHTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, float("inf"))


class Reranked:
    """The fielded top candidates of each message with the re-ranker's logit of each, every (message, pair) scored
    once however often the candidates are re-ordered (``--rerank`` fuses them at many weights, ``--asked`` ranks them
    under many bonuses).

    Args:
        settings: The settings (``MEDQA_RERANK_MODEL``, ``MEDQA_RERANK_CANDIDATES``).
        retriever: The fielded retriever.
        texts: The messages by key.
    """

    def __init__(self, settings, retriever, texts: dict[str, str]) -> None:
        from tqdm.auto import tqdm

        from rag_app.retrieval.modes import asked_again
        from rag_app.retrieval.rerank import load_reranker

        self.reranker = load_reranker(settings.model_copy(update={"rerank": True}))
        self.n = settings.rerank_candidates
        self.retriever = retriever
        self.texts = texts
        # What the re-ranker reads, as the engine gives it (rag_app.answer.engine.MedQAQueryEngine.read).
        self.rerank_texts = {
            key: asked_again(retriever, text, retriever.asked_types(text)) if settings.rerank_reads_asked else text for key, text in texts.items()
        }
        self.snap = retriever.index.snapshot()  # the index copy the candidates are read from, once for every ranking
        self.evidence = {key: retriever.candidates(text, snap=self.snap) for key, text in tqdm(sorted(texts.items()), desc="candidates", unit="q")}
        self.logits: dict[tuple[str, str], float] = {}

    @classmethod
    def dev_sets(cls, settings, retriever, queries: dict[str, str]) -> tuple["Reranked", list[dict]]:
        """The LiveQA messages (keyed by question id) and the aspect dev set (:func:`dev_aspects`, keyed
        ``aspect-<i>``) ready to re-rank, and the aspect items."""
        items = dev_aspects(settings)
        return cls(settings, retriever, {**queries, **{f"aspect-{i}": item["message"] for i, item in enumerate(items)}}), items

    def top(self, key: str, weights, limit: int | None = None) -> list[tuple[str, float, float]]:
        """``(doc id, fielded score, logit)`` of message ``key``'s top candidates under ``weights``, in fielded order
        (``limit``: pairs with the same source and question before the others, default ``MEDQA_SAME_QUESTION_LIMIT``)."""
        from llama_index.core.schema import NodeWithScore

        top = [c for _, c in self.retriever.rank(self.evidence[key], self.snap, weights, limit)[: self.n]]
        missing = [c for c in top if (key, c.doc_id) not in self.logits]
        if missing:
            nodes = self.retriever.index.nodes([c.chunk_id for c in missing])
            found = [c for c in missing if c.chunk_id in nodes]
            for c, logit in zip(found, self.reranker.logits(self.rerank_texts[key], [NodeWithScore(node=nodes[c.chunk_id]) for c in found])):
                self.logits[(key, c.doc_id)] = logit
        return [(c.doc_id, c.score(weights), self.logits.get((key, c.doc_id), -40.0)) for c in top]

    def fused(self, key: str, weights, rerank_weight: float, limit: int | None = None) -> list[str]:
        """Message ``key``'s top candidates (:meth:`top`) in the order the engine gives them: fused at ``rerank_weight``."""
        from rag_app.retrieval.rerank import fused_score

        scored = [(fused_score(score, logit, rerank_weight), d) for d, score, logit in self.top(key, weights, limit)]
        return [d for _, d in sorted(scored, key=lambda f: (-f[0], f[1]))]


def tune_rerank(settings, retriever, queries, labels, groups) -> None:
    """Choose ``MEDQA_RERANK_WEIGHT`` on two dev sets: the LiveQA tune half (MRR@10) and an aspect set written about the
    MedQuAD *validation* split's topics (hit@1 of the asked aspect's page, ``bench_aspects.aspect_set``). The fielded
    top candidates are re-ranked once; every weight of :data:`RERANK_WEIGHTS` then fuses the two scores, and the weight
    with the best mean of the two figures (neighbour-averaged) is chosen. Neither the report half nor the test split's
    topics are used."""
    from rag_app.retrieval.fielded import FusionWeights
    from rag_app.retrieval.rerank import fused_score

    reranked, items = Reranked.dev_sets(settings, retriever, queries)
    current = FusionWeights.from_settings(settings)
    scored = {qid: reranked.top(qid, current) for qid in sorted(queries)}
    aspects = [(reranked.top(f"aspect-{i}", current), item["relevant"]) for i, item in enumerate(items)]
    candidates = reranked.n

    def order(found, weight: float) -> list[str]:
        key = (lambda f: -f[2]) if weight == float("inf") else (lambda f: -fused_score(f[1], f[2], weight))
        return [d for d, _, _ in sorted(found, key=key)]

    def figures(weight: float, group: str) -> dict[str, float]:
        return aggregate({qid: order(found, weight)[:K] for qid, found in scored.items()}, labels, groups[group])

    def aspect_hit(weight: float) -> float:
        return sum(bool(found) and order(found, weight)[0] in relevant for found, relevant in aspects) / len(aspects)

    dev = [(figures(w, "tune")[f"mrr@{K}"] + aspect_hit(w)) / 2 for w in RERANK_WEIGHTS]
    smoothed = [sum(dev[max(i - 1, 0) : i + 2]) / len(dev[max(i - 1, 0) : i + 2]) for i in range(len(dev))]
    best = max(range(len(dev)), key=lambda i: (round(smoothed[i], 9), -i))
    print(f"\nre-ranker {settings.rerank_model} over the fielded top {candidates}; LiveQA tune n={len(groups['tune'])}, "
          f"report n={len(groups['report'])}; aspect dev set {len(aspects)} messages (validation topics)")
    print(f"| {'weight':>6} | {'tune MRR@10':>11} | {'aspect dev hit@1':>16} | {'dev mean':>8} | {'report MRR@10':>13} | {'report hit@1':>12} |")
    print(f"|{'-' * 8}|{'-' * 13}|{'-' * 18}|{'-' * 10}|{'-' * 15}|{'-' * 14}|")
    for i, w in enumerate(RERANK_WEIGHTS):
        t, r = figures(w, "tune"), figures(w, "report")
        mark = " <- chosen (dev mean, neighbour-averaged)" if i == best else (" <- MEDQA_RERANK_WEIGHT" if w == settings.rerank_weight else "")
        name = "alone" if w == float("inf") else f"{w:.2f}"
        print(f"| {name:>6} | {t[f'mrr@{K}']:>11.3f} | {aspect_hit(w):>16.3f} | {dev[i]:>8.3f} | {r[f'mrr@{K}']:>13.3f} | {r['hit@1']:>12.3f} |{mark}")


#: Bonuses shown by ``--asked`` for a message that asks a question type: the asked type's pages, and the overview.
ASKED_GRID = {"type": (0.05, 0.1, 0.15, 0.2), "overview_asked": (0.0, 0.025, 0.05, 0.075, 0.1), "source_asked": (0.0, 0.03, 0.06)}


def show_asked(settings, retriever, queries, labels, groups) -> None:
    """Show what the bonuses of a message that asks a question type trade: ``MEDQA_TYPE_WEIGHT`` (the asked type's
    pages) and ``MEDQA_OVERVIEW_ASKED_WEIGHT`` (the overview), with the re-ranker fused as the engine fuses it.

    Columns: LiveQA tune- and report-half MRR@10 (real messages, with the pages NLM's experts answered from) and the
    asked aspect's page first on the aspect set written about the validation topics (``bench_aspects.aspect_set``),
    which counts only the asked type's page as right. Nothing is chosen: the experts often answered a "what
    treatment?" message from the overview, so the two kinds of set pull apart, and the answers on real messages
    (``python -m eval.compare --questions liveqa``) decide."""
    from tqdm.auto import tqdm

    from rag_app.retrieval.fielded import FusionWeights

    reranked, items = Reranked.dev_sets(settings, retriever, queries)
    n = reranked.n

    def ranking(key: str, w) -> list[str]:
        return reranked.fused(key, w, settings.rerank_weight)

    current = FusionWeights.from_settings(settings)
    axes = list(ASKED_GRID.values())
    points = list(itertools.product(*(range(len(a)) for a in axes)))
    weights_of = lambda p: replace(current, type=axes[0][p[0]], overview_asked=axes[1][p[1]], source_asked=axes[2][p[2]])  # noqa: E731
    results = {}
    for p in tqdm(points, desc="grid", unit="weights"):
        w = weights_of(p)
        live = {qid: ranking(qid, w)[:K] for qid in queries}
        hit = aspect_hit(lambda key, w=w: ranking(key, w), items)
        tune, report = aggregate(live, labels, groups["tune"]), aggregate(live, labels, groups["report"])
        results[p] = (tune[f"mrr@{K}"], hit, report[f"mrr@{K}"], report["hit@1"])

    print(f"\nre-ranker fused at weight {settings.rerank_weight} over the fielded top {n}; LiveQA tune n={len(groups['tune'])}, "
          f"report n={len(groups['report'])}; aspect dev set {len(items)} messages (validation topics)")
    print(f"| {'type':>5} | {'overview asked':>14} | {'source asked':>12} | {'tune MRR@10':>11} | {'aspect dev hit@1':>16} | {'report MRR@10':>13} | {'report hit@1':>12} |")
    print(f"|{'-' * 7}|{'-' * 16}|{'-' * 14}|{'-' * 13}|{'-' * 18}|{'-' * 15}|{'-' * 14}|")
    for p in points:
        tune, hit, report, report_hit = results[p]
        w = weights_of(p)
        mark = " <- current settings" if (w.type, w.overview_asked, w.source_asked) == (current.type, current.overview_asked, current.source_asked) else ""
        print(f"| {w.type:>5.3f} | {w.overview_asked:>14.3f} | {w.source_asked:>12.3f} | {tune:>11.3f} | {hit:>16.3f} | {report:>13.3f} | {report_hit:>12.3f} |{mark}")


#: Least similarities of a misspelt word to a topic-name word tried by ``--typos`` (1.0: no misspellings read).
TYPO_GRID = (0.75, 0.8, 0.85, 0.9, 1.0)


def tune_typos(settings, retriever, queries, labels, groups) -> None:
    """Choose ``MEDQA_TYPO_SIMILARITY`` on the two dev sets of ``--rerank`` (LiveQA tune MRR@10, the
    aspect set about the validation topics), the re-ranker fused as the engine fuses it: every cutoff of
    :data:`TYPO_GRID` ranks the messages again, and the one with the best mean of the two is chosen, a tie (to three
    decimals) going to the stricter cutoff, which reads fewer words as misspellings. The report half is printed for
    reference only."""
    from rag_app.retrieval.fielded import FusionWeights

    current = FusionWeights.from_settings(settings)
    rows = []
    for cutoff in TYPO_GRID:
        retriever.matcher.typo_similarity = cutoff
        reranked, items = Reranked.dev_sets(settings, retriever, queries)

        def ranking(key: str) -> list[str]:
            return reranked.fused(key, current, settings.rerank_weight)

        live = {qid: ranking(qid)[:K] for qid in queries}
        hit = aspect_hit(ranking, items)
        rows.append((cutoff, aggregate(live, labels, groups["tune"]), hit, aggregate(live, labels, groups["report"])))
    dev = [(tune[f"mrr@{K}"] + hit) / 2 for _, tune, hit, _ in rows]
    best = max(range(len(dev)), key=lambda i: (round(dev[i], 3), i))
    print(f"\nmisspelt topic names, re-ranker fused at {settings.rerank_weight}; LiveQA tune n={len(groups['tune'])}, "
          f"report n={len(groups['report'])}; aspect dev set (validation topics)")
    print(f"| {'similarity':>10} | {'tune MRR@10':>11} | {'tune hit@1':>10} | {'aspect dev hit@1':>16} | {'dev mean':>8} | {'report MRR@10':>13} | {'report hit@1':>12} |")
    print(f"|{'-' * 12}|{'-' * 13}|{'-' * 12}|{'-' * 18}|{'-' * 10}|{'-' * 15}|{'-' * 14}|")
    for i, (cutoff, tune, hit, report) in enumerate(rows):
        name = "off" if cutoff >= 1.0 else f"{cutoff:.2f}"
        mark = " <- chosen (dev mean; a tie to the stricter)" if i == best else ""
        print(f"| {name:>10} | {tune[f'mrr@{K}']:>11.3f} | {tune['hit@1']:>10.3f} | {hit:>16.3f} | {dev[i]:>8.3f} | "
              f"{report[f'mrr@{K}']:>13.3f} | {report['hit@1']:>12.3f} |{mark}")


#: Least similarities of a message's question to a way of asking tried by ``--ask-similarity`` (above 1: cue words only).
ASK_GRID = (0.4, 0.45, 0.5, 0.55, 0.6, 1.01)


def tune_ask_similarity(settings, retriever, queries, labels, groups) -> None:
    """Show what ``MEDQA_ASK_SIMILARITY`` does on the two dev sets of ``--rerank`` (LiveQA tune MRR@10, the aspect set
    about the validation topics), the re-ranker fused as the engine fuses it: every cutoff of :data:`ASK_GRID` re-reads
    which question types the messages ask without cue words (:class:`rag_app.index.asked.AskedTypes`; the "typed"
    columns count the messages given a type that cue words leave without one).

    The dev sets barely tell the cutoffs apart: real messages nearly always carry a cue word or ask nothing in
    particular, and the aspect set's consumer wording is the one the cue words were written from. The aspect set's
    held-out wording (``bench_aspects.ASKS_HELD_OUT``) is what the classifier is for; it is printed, never used to
    choose, and neither is the report half."""
    from rag_app.index.topics import question_types
    from rag_app.retrieval.fielded import FusionWeights

    current = FusionWeights.from_settings(settings)
    items = dev_aspects(settings)
    sets = {"LiveQA": dict(queries), "aspect": {f"aspect-{i}": item["message"] for i, item in enumerate(items)},
            "held": {f"held-{i}": item["held_out"] for i, item in enumerate(items)}}
    texts = {key: text for group in sets.values() for key, text in group.items()}
    uncued = {name: [t for t in group.values() if not question_types(t)] for name, group in sets.items()}
    rows = []
    logits: dict = {}  # the re-ranker's logit of a (message, pair) is the same at every cutoff: computed once
    for cutoff in ASK_GRID:
        retriever.index.asked.min_similarity = cutoff
        reranked = Reranked(settings, retriever, texts)
        reranked.logits = logits

        def hit(prefix: str) -> float:
            return aspect_hit(lambda key: reranked.fused(key, current, settings.rerank_weight), items, prefix)  # noqa: B023 (called at once)

        live = {qid: reranked.fused(qid, current, settings.rerank_weight)[:K] for qid in queries}
        typed = "/".join(str(sum(bool(retriever.index.asked_types(t)) for t in uncued[name])) for name in sets)
        rows.append((cutoff, aggregate(live, labels, groups["tune"]), hit("aspect"), hit("held"), aggregate(live, labels, groups["report"]), typed))
    dev = [(tune[f"mrr@{K}"] + aspect) / 2 for _, tune, aspect, _, _, _ in rows]
    print(f"\nquestion types asked without cue words, re-ranker fused at {settings.rerank_weight}; LiveQA tune n={len(groups['tune'])}, "
          f"report n={len(groups['report'])}; aspect dev set {len(items)} messages (validation topics); messages without a cue word: "
          + ", ".join(f"{name} {len(found)}" for name, found in uncued.items()))
    print(f"| {'similarity':>10} | {'typed (LiveQA/aspect/held-out)':>30} | {'tune MRR@10':>11} | {'tune hit@1':>10} | {'aspect dev hit@1':>16} | "
          f"{'dev mean':>8} | {'held-out wording':>16} | {'report MRR@10':>13} | {'report hit@1':>12} |")
    print(f"|{'-' * 12}|{'-' * 32}|{'-' * 13}|{'-' * 12}|{'-' * 18}|{'-' * 10}|{'-' * 18}|{'-' * 15}|{'-' * 14}|")
    for i, (cutoff, tune, aspect, held, report, typed) in enumerate(rows):
        name = "cues only" if cutoff > 1.0 else f"{cutoff:.2f}"
        mark = " <- MEDQA_ASK_SIMILARITY" if abs(cutoff - settings.ask_similarity) < 1e-9 else ""
        print(f"| {name:>10} | {typed:>30} | {tune[f'mrr@{K}']:>11.3f} | {tune['hit@1']:>10.3f} | {aspect:>16.3f} | {dev[i]:>8.3f} | "
              f"{held:>16.3f} | {report[f'mrr@{K}']:>13.3f} | {report['hit@1']:>12.3f} |{mark}")


#: Limits tried by ``--repeats`` on the pairs with the same source and question ranked before the others (0: none).
REPEAT_LIMITS = (0, 1, 2, 3)


def show_repeats(settings, retriever, queries, labels, groups) -> None:
    """What ``MEDQA_SAME_QUESTION_LIMIT`` does on the two dev sets of ``--rerank`` (LiveQA tune MRR@10, the aspect set
    about the validation topics), the re-ranker fused as the engine fuses it over the candidates each limit lets in;
    the report half is printed for reference only."""
    from rag_app.retrieval.fielded import FusionWeights

    reranked, items = Reranked.dev_sets(settings, retriever, queries)
    current = FusionWeights.from_settings(settings)

    def ranking(key: str, limit: int) -> list[str]:
        return reranked.fused(key, current, settings.rerank_weight, limit)

    print(f"\npairs with the same source and question before the others, re-ranker fused at {settings.rerank_weight} over the "
          f"top {reranked.n}; LiveQA tune n={len(groups['tune'])}, report n={len(groups['report'])}; aspect dev set (validation topics)")
    print(f"| {'limit':>5} | {'tune MRR@10':>11} | {'tune hit@1':>10} | {'aspect dev hit@1':>16} | {'report MRR@10':>13} | {'report hit@1':>12} |")
    print(f"|{'-' * 7}|{'-' * 13}|{'-' * 12}|{'-' * 18}|{'-' * 15}|{'-' * 14}|")
    for limit in REPEAT_LIMITS:
        live = {qid: ranking(qid, limit)[:K] for qid in queries}
        hit = aspect_hit(lambda key, limit=limit: ranking(key, limit), items)
        tune, report = aggregate(live, labels, groups["tune"]), aggregate(live, labels, groups["report"])
        mark = " <- MEDQA_SAME_QUESTION_LIMIT" if limit == settings.same_question_limit else ""
        print(f"| {limit or 'none':>5} | {tune[f'mrr@{K}']:>11.3f} | {tune['hit@1']:>10.3f} | {hit:>16.3f} | {report[f'mrr@{K}']:>13.3f} | "
              f"{report['hit@1']:>12.3f} |{mark}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--liveqa", default=str(REPO.parent / "shared" / "data" / "liveqa-train"))
    parser.add_argument("--corpus", default=_default_corpus())
    parser.add_argument("--candidate-k", type=int, default=0, help="candidates per vector field (default: MEDQA_CANDIDATE_K)")
    parser.add_argument("--rerank", action="store_true", help="choose the re-ranker's weight (MEDQA_RERANK_WEIGHT) instead")
    parser.add_argument("--asked", action="store_true", help="show what the bonuses of messages that ask a question type trade, instead")
    parser.add_argument("--typos", action="store_true", help="choose how similar a misspelt word must be to a topic name, instead")
    parser.add_argument("--repeats", action="store_true", help="show what limiting pairs with the same source and question does, instead")
    parser.add_argument("--ask-similarity", action="store_true", help="show how near a question must be to a way of asking a type, instead")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from tqdm.auto import tqdm

    from corpus import load_corpus
    from corpus.liveqa import derive_labels, load_liveqa
    from rag_app.config import Settings
    from rag_app.retrieval.fielded import FusionWeights
    from rag_app.retrieval.modes import build_retriever

    settings = Settings(retrieval_mode="fielded", top_k=K)
    if args.candidate_k:
        settings = settings.model_copy(update={"candidate_k": args.candidate_k})
    questions = load_liveqa([args.liveqa])
    documents, _ = load_corpus([args.corpus], show_progress=False)
    labels = derive_labels(questions, answers_of(documents))
    groups = split_halves(labels)
    queries = {q.qid: q.query for q in questions if q.qid in labels}
    retriever = build_retriever(settings)
    if args.rerank:
        tune_rerank(settings, retriever, queries, labels, groups)
        return 0
    if args.asked:
        show_asked(settings, retriever, queries, labels, groups)
        return 0
    if args.typos:
        tune_typos(settings, retriever, queries, labels, groups)
        return 0
    if args.repeats:
        show_repeats(settings, retriever, queries, labels, groups)
        return 0
    if args.ask_similarity:
        tune_ask_similarity(settings, retriever, queries, labels, groups)
        return 0
    snap = retriever.index.snapshot()  # read once: every grid point ranks the same candidates
    evidence = {qid: retriever.candidates(query, snap=snap) for qid, query in tqdm(sorted(queries.items()), desc="candidates", unit="q")}

    # The source prior, estimated here on the tune half over all candidates, so that it depends on neither the
    # weights nor the settings' table (the script never reads its own earlier output).
    prior = source_log_odds({q: [c.doc_id for c in evidence[q]] for q in groups["tune"]}, labels, retriever.source_of)
    for found in evidence.values():
        for c in found:
            c.source = prior.get(retriever.source_of.get(c.doc_id, ""), 0.0)

    def figures(w: FusionWeights, group: str) -> dict[str, float]:
        rankings = {
            qid: [c.doc_id for _, c in retriever.rank(found, snap, w)[:K]] for qid, found in evidence.items()
        }
        return aggregate(rankings, labels, groups[group])

    current = FusionWeights.from_settings(settings)
    axes = list(GRID.values())
    points = list(itertools.product(*(range(len(a)) for a in axes)))
    # The source prior's weight moves the asked type's pages' weight with it, in the current proportion.
    asked_share = current.source_asked / current.source if current.source else 1.0
    weights_of = lambda p: FusionWeights(  # noqa: E731
        *(a[i] for a, i in zip(axes, p)), overview_asked=current.overview_asked, pointer=current.pointer,
        source_asked=axes[-1][p[-1]] * asked_share, nearest_type=current.nearest_type,
    )
    tune = {p: figures(weights_of(p), "tune")[f"mrr@{K}"] for p in tqdm(points, desc="grid", unit="weights")}

    def smoothed(p: tuple[int, ...]) -> float:
        near = [p] + [p[:d] + (p[d] + s,) + p[d + 1 :] for d in range(len(p)) for s in (-1, 1) if 0 <= p[d] + s < len(axes[d])]
        return sum(tune[n] for n in near) / len(near)

    best = weights_of(max(points, key=lambda p: (round(smoothed(p), 9), -sum(p))))
    best_single = weights_of(max(points, key=lambda p: (round(tune[p], 9), -sum(p))))
    rows = [
        ("dense: best chunk only", FusionWeights(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
        ("+ question vectors", FusionWeights(current.question, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
        ("+ topic (focus) match", FusionWeights(current.question, current.focus, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
        ("+ question type cues", FusionWeights(current.question, current.focus, current.type, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
        ("+ overview prior", FusionWeights(current.question, current.focus, current.type, current.overview, 0.0, 0.0, current.overview_asked, 0.0, 0.0, 0.0)),
        ("+ sentences", replace(current, source=0.0, source_asked=0.0, pointer=0.0, nearest_type=0.0)),
        ("+ source prior", replace(current, pointer=0.0, nearest_type=0.0)),
        ("+ pointer pages last", replace(current, nearest_type=0.0)),
        ("+ the nearest type = current settings", current),
        ("best on tune, neighbour-averaged", best),
        ("best single grid point on tune", best_single),
    ]
    print(f"\nindex {settings.storage_dir}/{settings.collection}, embed {settings.embed_model}, candidate_k {settings.candidate_k}; "
          f"tune n={len(groups['tune'])}, report n={len(groups['report'])}; grid of {len(points)}")
    print(f"| {'fusion':<36} | {'question':>8} | {'focus':>5} | {'type':>4} | {'overview':>8} | {'sentences':>9} | {'source':>6} | {'tune MRR@10':>11} | {'report MRR@10':>13} | {'all MRR@10':>10} | {'all R@10':>8} |")
    print(f"|{'-' * 38}|{'-' * 10}|{'-' * 7}|{'-' * 6}|{'-' * 10}|{'-' * 11}|{'-' * 8}|{'-' * 13}|{'-' * 15}|{'-' * 12}|{'-' * 10}|")
    for name, w in rows:
        t, r, a = (figures(w, g) for g in ("tune", "report", "all"))
        print(f"| {name:<36} | {w.question:>8.2f} | {w.focus:>5.2f} | {w.type:>4.2f} | {w.overview:>8.2f} | {w.sentences:>9.2f} | {w.source:>6.2f} | "
              f"{t[f'mrr@{K}']:>11.3f} | {r[f'mrr@{K}']:>13.3f} | {a[f'mrr@{K}']:>10.3f} | {a[f'recall@{K}']:>8.3f} |")
    print("\nthe five best on tune, neighbour-averaged:")
    for p in sorted(points, key=lambda p: -smoothed(p))[:5]:
        w = weights_of(p)
        print(f"  tune {tune[p]:.3f} (neighbours {smoothed(p):.3f})  report {figures(w, 'report')[f'mrr@{K}']:.3f}  {w}")
    print(f"\nsource prior (log-odds over the tune half's candidates; rag_app.config.MEDQUAD_SOURCE_PRIOR):\n{prior}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
