"""Baselines that answer by copying a source: the top one (``extractive``), or the best one in hindsight (``oracle``)."""

from __future__ import annotations

from typing import Any, Sequence

from eval.metrics import rouge_scores
from finetune.raft import cited_answer
from rag_app.text.prompts import answer_text


def extractive_answer(nodes: Sequence[Any], max_tokens: int, count: Any, position: int = 1) -> str:
    """Source ``position``'s answer text cut to ``max_tokens`` at a sentence end, citing ``[position]`` (a baseline).

    Args:
        nodes: Retrieved sources in rank order.
        max_tokens: The answer budget.
        count: Token counter of the model's tokenizer.
        position: 1-based number of the source to answer with (default: the top one).
    """
    if len(nodes) < position:
        return ""
    return cited_answer(answer_text(nodes[position - 1].node.get_content()), position, count, max_tokens)


def oracle_answer(nodes: Sequence[Any], reference: Any, max_tokens: int, count: Any) -> str:
    """Of the sources' extractive answers (:func:`extractive_answer`), the one scoring best against ``reference``.

    It cites the source's own number and looks at the reference (ROUGE-L), so it is a ceiling to read other
    systems against, not a system a user could run: no answer copied from one of these sources scores higher.

    Args:
        nodes: Retrieved sources in rank order.
        reference: The reference answer, or a list of them (the best-matching one counts).
        max_tokens: The answer budget.
        count: Token counter of the model's tokenizer.
    """
    if not nodes:
        return ""
    candidates = [extractive_answer(nodes, max_tokens, count, position) for position in range(1, len(nodes) + 1)]
    scores = rouge_scores(candidates, [reference] * len(candidates))["rougeL"]
    return candidates[max(range(len(candidates)), key=lambda i: (scores[i], -i))]
