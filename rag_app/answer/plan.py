"""What is decided about an answer before the model runs: :class:`AnswerPlan` and its :class:`AnswerPart`\\ s.

The engine makes a plan (:meth:`rag_app.answer.engine.MedQAQueryEngine.plan`); generation, streaming and batched
evaluation all consume it, so they answer alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llama_index.core.schema import NodeWithScore

from rag_app.index.topics import PARTIAL_NAME_SCORE, FocusMatcher
from rag_app.text.openings import Opening

#: Between the parts of an answer to a message that asks two things.
PART_SEPARATOR = "\n\n"
COVERED, UNCOVERED, UNKNOWN = "covered", "uncovered", "unknown"


@dataclass(frozen=True)
class Reading:
    """How the engine reads a clean question, once per answer: what is retrieved (and where the re-ranker starts the
    top page), what the re-ranker ranks pages by and the question types that choose where the top page is shown from."""

    search: str  # the question with misspelt topic names as the index writes them (what is retrieved)
    asked: frozenset[str]  # the question types it asks (cue words, else the nearest way of asking)
    rerank_text: str  # what the re-ranker ranks pages by: ``search`` with the asked types asked plainly after it


@dataclass(frozen=True)
class AnswerPart:
    """One stretch of an answer, generated from the plan's prompt with its own opening and budget.

    Attributes:
        opening: How it must open (:class:`rag_app.text.openings.Opening`), or None.
        suppress: Token ids it may not start with (the decline's first token, where the sources cover the question).
        max_new_tokens: Its token budget.
    """

    opening: Opening | None
    suppress: tuple[int, ...]
    max_new_tokens: int

    @property
    def decoding(self) -> dict[str, Any]:
        """What decodes this part, as plain data (batching and answer caches key on it)."""
        opening = self.opening
        return {
            "max_new_tokens": self.max_new_tokens,
            "opening": list(opening.tokens) if opening else None,
            "alternatives": list(opening.alternatives) if opening else None,
            "suppress": [] if opening else list(self.suppress),
            # only when set, so answers cached before the rule existed are still found
            **({"finish_stops": list(opening.stops)} if opening and opening.source else {}),
            **({"copy_bias": opening.bias} if opening and opening.copied and opening.bias else {}),
            **({"decline_bias": -opening.alternative_bias} if opening and opening.alternative_bias else {}),
        }


@dataclass
class AnswerPlan:
    """Everything decided about an answer before the model runs.

    Attributes:
        question: The clean (standalone) question.
        warnings: What cleaning the question changed (e.g. it was cut).
        sources: The sources in citation order (``[1]`` first), as the model is shown them.
        messages: The chat messages the model answers.
        coverage: :data:`COVERED`, :data:`UNCOVERED` (decline without generating) or :data:`UNKNOWN` (the model decides).
        parts: The stretches of the answer, generated one after another (two when the message asks two things that
            different pages answer).
    """

    question: str
    warnings: list[str]
    sources: list[NodeWithScore]
    messages: list[dict[str, str]]
    coverage: str
    parts: list[AnswerPart] = field(default_factory=list)

    @property
    def declines(self) -> bool:
        """True when the answer is the abstain answer, without generating."""
        return self.coverage == UNCOVERED

    @property
    def passages(self) -> list[str]:
        """The sources' texts as shown to the model."""
        return [n.node.get_content() for n in self.sources]


def source_coverage(question: str, nodes: list[NodeWithScore], matcher: FocusMatcher | None, named_in_part_keeps: bool = True) -> str:
    """Whether the sources are about what the question asks about, by the index's topic names.

    Only names the question writes as names count (:meth:`~rag_app.index.topics.FocusMatcher.written`: "ALL" the
    leukaemia, not "all").

    Returns:
        :data:`COVERED` when the question names a topic (or a synonym) in full and a source is a QA pair about it,
        or names none in full but a source's topic in part (at least :data:`rag_app.index.topics.PARTIAL_NAME_SCORE`
        of it, e.g. "alzheimer's" for "Alzheimer's Disease"); :data:`UNCOVERED` when it names topics in full, one
        of them not made of common words (:meth:`~rag_app.index.topics.FocusMatcher.common`: "my medicine" does
        not make a message about "Medicines"), and no source is about any of them nor (``named_in_part_keeps``) about
        a topic the message names in part ("... my hands hurt ... a sudden twist sends shock thru my body": "Shock"
        named by accident, the sources on "Hand Injuries and Disorders"); :data:`UNKNOWN` otherwise, or without
        topic names (a retriever that can't name them).
    """
    if matcher is None:
        return UNKNOWN
    names = matcher.named(question)
    about = {doc for name in names for doc in matcher.doc_ids(name)}
    if any(n.node.ref_doc_id in about for n in nodes):
        return COVERED
    # A topic named only in part is evidence enough that a source on it is about the question, not that none is.
    partly = matcher.doc_scores(question, PARTIAL_NAME_SCORE, limit=10**6)
    in_part = [n for n in nodes if n.node.ref_doc_id in partly]
    uncommon = [name for name in names if not matcher.common(name)]
    if uncommon:
        # Only a topic sharing no word with the names is another subject of the message: "Male Breast Cancer" named in
        # part says nothing for a question on "Breast Cancer" that no source is about.
        other = any(not matcher.shares_a_word(uncommon, n.node.ref_doc_id) for n in in_part)
        return UNKNOWN if other and named_in_part_keeps else UNCOVERED
    return COVERED if in_part else UNKNOWN

