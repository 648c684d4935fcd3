"""Metrics for answers and retrieval: ROUGE with bootstrap CIs, paired tests, ranking metrics,
ragas' judge-free context metrics, an offline grounding score, abstention and citation accuracy.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Iterable, Sequence

import numpy as np

from rag_app.text.prompts import CITATION, SINGLE_CITATION, cited_numbers  # noqa: F401 (cited_numbers is part of this module's API)
from rag_app.text.words import sentences, share_found, words

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

_ABSTAIN = re.compile(
    r"\b(i\s+(?:do\s+not|don'?t|cannot|can'?t)\s+know|(?:sources?|context)\s+(?:do(?:es)?\s+not|don'?t)\s+"
    r"(?:cover|answer|contain|mention|say)|not\s+(?:covered|mentioned)\s+in\s+the\s+(?:sources?|context)|"
    r"i\s+(?:am|'m)\s+not\s+sure|no\s+information\s+(?:about|on))",
    re.IGNORECASE,
)
# A short stop list: grounding counts only content words.
_STOP = frozenset(
    "a an and are as at be been but by can do does for from has have how i if in into is it its may might "
    "more most no not of on or other our should so some such than that the their them then there these they "
    "this those to was we were what when which who will with would you your also about after all any because "
    "before being both each few he her him his me my only over same she very".split()
)


# ---- ROUGE -------------------------------------------------------------------------


def rouge_scores(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, list[float]]:
    """Per-example ROUGE-1/2/L F1 with Porter stemming (``rouge-score``, the reference implementation).

    Args:
        predictions: The answers.
        references: One reference per answer, or a list of references: each ROUGE type then scores
            against the best-matching one (``RougeScorer.score_multi``).

    Returns:
        ``{"rouge1": [...], "rouge2": [...], "rougeL": [...]}`` aligned with the inputs.
    """
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    out: dict[str, list[float]] = {t: [] for t in ROUGE_TYPES}
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred) if isinstance(ref, str) else scorer.score_multi(list(ref), pred)
        for t in ROUGE_TYPES:
            out[t].append(scores[t].fmeasure)
    return out


# ---- statistics ------------------------------------------------------------------------


def bootstrap_ci(values: Sequence[float], n_resamples: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile bootstrap ``(1 - alpha)`` confidence interval.

    Returns:
        ``(mean, low, high)``; NaNs are ignored; all NaN when there are no values.
    """
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n_resamples, arr.size))].mean(axis=1)
    return (float(arr.mean()), float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2)))


def paired_bootstrap_pvalue(a: Sequence[float], b: Sequence[float], n_resamples: int = 10000, seed: int = 0) -> float:
    """Two-sided paired bootstrap p-value for ``mean(a) - mean(b) != 0``.

    Resamples question indices, centres the resampled differences on zero (the null) and counts how
    often they are at least as extreme as the observed difference.
    """
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape or a_arr.size == 0:
        raise ValueError("paired test needs two equally long, non-empty score lists")
    diff = a_arr - b_arr
    observed = diff.mean()
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, diff.size, size=(n_resamples, diff.size))].mean(axis=1) - observed
    return float((np.sum(np.abs(boot) >= abs(observed)) + 1) / (n_resamples + 1))


# ---- retrieval -------------------------------------------------------------------------------


def ranking_metrics(ranked: Sequence[Sequence[str]], relevant: Sequence[Iterable[str]], k: int) -> dict[str, list[float]]:
    """Per-query hit@k, MRR@k and nDCG@k (binary relevance; repeated ids count at their first rank).

    Args:
        ranked: Retrieved ids per query, best first.
        relevant: Relevant ids per query.
        k: Cut-off.
    """
    out: dict[str, list[float]] = {f"hit@{k}": [], f"mrr@{k}": [], f"ndcg@{k}": []}
    for ids, rel in zip(ranked, relevant):
        rel = set(rel)
        top = list(dict.fromkeys(ids))[:k]  # a repeated id (e.g. two pairs of one document) counts once
        gains = [1.0 if i in rel else 0.0 for i in top]
        first = next((r for r, g in enumerate(gains, start=1) if g), None)
        dcg = sum(g / math.log2(r + 1) for r, g in enumerate(gains, start=1))
        ideal = sum(1 / math.log2(r + 1) for r in range(1, min(len(rel), k) + 1))
        out[f"hit@{k}"].append(1.0 if first else 0.0)
        out[f"mrr@{k}"].append(1.0 / first if first else 0.0)
        out[f"ndcg@{k}"].append(dcg / ideal if ideal else 0.0)
    return out


def ragas_context_scores(
    retrieved_contexts: Sequence[Sequence[str]],
    reference_contexts: Sequence[Sequence[str]],
    retrieved_ids: Sequence[Sequence[str]],
    reference_ids: Sequence[Sequence[str]],
) -> dict[str, list[float]]:
    """ragas' judge-free context metrics per query: non-LLM context precision/recall (string similarity
    to the reference passages) and ID-based context precision/recall.

    Telemetry is switched off before ragas is imported; no LLM or network is involved.
    """
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    from ragas import SingleTurnSample
    from ragas.metrics import (
        IDBasedContextPrecision,
        IDBasedContextRecall,
        NonLLMContextPrecisionWithReference,
        NonLLMContextRecall,
    )

    metrics = {
        "ragas_nonllm_context_precision": NonLLMContextPrecisionWithReference(),
        "ragas_nonllm_context_recall": NonLLMContextRecall(),
        "ragas_id_context_precision": IDBasedContextPrecision(),
        "ragas_id_context_recall": IDBasedContextRecall(),
    }
    out: dict[str, list[float]] = {name: [] for name in metrics}
    for ctx, ref_ctx, ids, ref_ids in zip(retrieved_contexts, reference_contexts, retrieved_ids, reference_ids):
        sample = SingleTurnSample(
            user_input="",
            retrieved_contexts=list(ctx) or [""],
            reference_contexts=list(ref_ctx),
            retrieved_context_ids=list(ids) or [""],
            reference_context_ids=list(ref_ids),
        )
        for name, metric in metrics.items():
            try:
                out[name].append(float(metric.single_turn_score(sample)))
            except Exception:  # a degenerate sample scores NaN rather than stopping the run
                out[name].append(math.nan)
    return out


# ---- answers -------------------------------------------------------------------------------


def is_abstention(answer: str) -> bool:
    """True when an answer declines ("I don't know", "the sources don't cover this", ...)."""
    return bool(_ABSTAIN.search(answer or ""))


def citation_correct(answer: str, gold_position: int | Iterable[int] | None) -> float:
    """1.0 when the first citation in ``answer`` is a gold source's number (1-based), else 0.0.

    ``gold_position`` is one number, or the numbers of every relevant source. NaN when no gold source
    was retrieved (no correct citation was possible).
    """
    golds = {gold_position} if isinstance(gold_position, int) else set(gold_position or ())
    if not golds:
        return math.nan
    cited = cited_numbers(answer)
    return 1.0 if cited and cited[0] in golds else 0.0


def content_words(text: str) -> list[str]:
    """Lower-case alphanumeric tokens of 3+ characters, minus stop words."""
    return [w for w in words(text) if len(w) >= 3 and w not in _STOP]


def grounding_score(answer: str, contexts: Sequence[str], min_words: int = 3) -> float:
    """Offline, judge-free grounding: how much of the answer is backed by the retrieved passages.

    The answer (citation markers removed) is split into sentences. For each sentence with at least
    ``min_words`` content words (lower-case alphanumeric tokens of 3+ characters, not stop words),
    support = share of its content words that occur anywhere in the passages. The score is the mean
    support over those sentences: 1.0 means every content word of every sentence appears in the
    sources, 0.0 that none does. Answers with no such sentence (or no passages) score NaN.
    """
    vocab = set(content_words(" ".join(contexts)))
    if not vocab:
        return math.nan
    text = CITATION.sub(" ", answer or "")
    supports = []
    for sentence in sentences(text):
        found = content_words(sentence)
        if len(found) >= min_words:
            supports.append(share_found(found, vocab))
    return float(np.mean(supports)) if supports else math.nan


def citation_support(answer: str, contexts: Sequence[str], min_share: float = 0.5, min_words: int = 3) -> float:
    """Share of an answer's citations whose source holds the text they close: does ``[n]`` point where the words came from?

    Each single-number citation ``[n]`` closes the text since the previous citation. It is supported when passage n
    holds at least ``min_share`` of that text's content words (as in :func:`grounding_score`). Citations closing
    fewer than ``min_words`` content words are not counted; NaN when no citation is counted.
    """
    counted = []
    last = 0
    for match in SINGLE_CITATION.finditer(answer or ""):
        found = content_words(answer[last : match.start()])
        last = match.end()
        if len(found) < min_words:
            continue
        n = int(match.group(1))
        vocab = set(content_words(contexts[n - 1])) if 1 <= n <= len(contexts) else set()
        counted.append(float(share_found(found, vocab) >= min_share))
    return float(np.mean(counted)) if counted else math.nan


def summarize(values: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """Mean, 95% bootstrap CI and count of a per-question metric."""
    mean, low, high = bootstrap_ci(values, seed=seed)
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": sum(1 for v in values if not math.isnan(v))}
