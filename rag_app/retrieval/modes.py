"""The retriever the engine uses, by ``MEDQA_RETRIEVAL_MODE``, and what it can do.

``fielded`` (the default, :mod:`rag_app.retrieval.fielded`) names the indexed topics a message mentions, which the
engine needs to decline by topic; ``hybrid``, ``dense`` and ``bm25`` (:mod:`rag_app.retrieval.classic`) don't. That is
asked through :class:`NamesTopics`, not by the retriever's type.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, Sequence, runtime_checkable

from llama_index.core.base.base_retriever import BaseRetriever

from rag_app.config import Settings
from rag_app.errors import IndexMissingError
from rag_app.index.chroma import get_collection, load_nodes
from rag_app.index.store import open_index
from rag_app.index.topics import FocusMatcher, question_types
from rag_app.llm.load import load_embed_model
from rag_app.retrieval.classic import MedQARetriever, bm25_retriever, dense_retriever
from rag_app.retrieval.fielded import fielded_retriever
from rag_app.text.asking import with_plain_asks

logger = logging.getLogger("rag_app")


@runtime_checkable
class NamesTopics(Protocol):
    """A retriever that knows the indexed topics' names (and synonyms), so the engine can tell what a message names."""

    @property
    def matcher(self) -> FocusMatcher: ...


def topic_matcher(retriever: Any) -> FocusMatcher | None:
    """The topic names behind a retriever that has them (:class:`NamesTopics`), else None."""
    return retriever.matcher if isinstance(retriever, NamesTopics) else None


@runtime_checkable
class ReadsAskedTypes(Protocol):
    """A retriever that reads which question types a message asks beyond its cue words (the index's model)."""

    def asked_types(self, text: str) -> set[str]: ...

    def asked_plainly(self, text: str) -> set[str]: ...


def asked_types(retriever: Any, text: str) -> set[str]:
    """The question types ``text`` asks, as ``retriever`` reads them where it can (:class:`ReadsAskedTypes`), else by
    cue words (:func:`rag_app.index.topics.question_types`)."""
    return retriever.asked_types(text) if isinstance(retriever, ReadsAskedTypes) else question_types(text)


def asked_plainly(retriever: Any, text: str) -> set[str]:
    """The question type ``text`` asks in one of the plain ways of asking, where ``retriever`` can tell
    (:class:`ReadsAskedTypes`); else none."""
    return retriever.asked_plainly(text) if isinstance(retriever, ReadsAskedTypes) else set()


def asked_again(retriever: Any, text: str, asked: set[str] | frozenset[str]) -> str:
    """What the re-ranker reads of ``text``, which asks the types ``asked``: the text with each of them asked again the
    plain way (:func:`rag_app.text.asking.with_plain_asks`), except a type it already asks a plain way
    (:func:`asked_plainly`: "What are the symptoms of gout?" is read as written)."""
    return with_plain_asks(text, set(asked) - asked_plainly(retriever, text)) if asked else text


def build_retriever(
    settings: Settings,
    embed_model: Any = None,
    nodes: Sequence[Any] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> BaseRetriever:
    """The retriever the query engine uses, per ``settings.retrieval_mode``.

    Args:
        settings: Top-k, candidate-k, mode and index location.
        embed_model: Embedding model (loaded from settings when omitted and needed).
        nodes: The index's chunks for BM25 (read from Chroma when omitted and needed).
        exclude: Source document ids to leave out of every result.

    Raises:
        IndexMissingError: If the index does not exist.
    """
    if settings.retrieval_mode == "fielded":
        return fielded_retriever(open_index(settings, embed_model), settings, exclude)
    get_collection(settings)  # fail early, with the fix, when there is no index
    if settings.decline_by_topic:
        logger.warning(
            "retrieval mode %r does not name topics: answers are not declined by topic (MEDQA_DECLINE_BY_TOPIC needs "
            "MEDQA_RETRIEVAL_MODE=fielded)", settings.retrieval_mode,
        )
    dense = sparse = None
    if settings.retrieval_mode in {"hybrid", "dense"}:
        dense = dense_retriever(settings, embed_model or load_embed_model(settings), settings.candidate_k)
    if settings.retrieval_mode in {"hybrid", "bm25"}:
        nodes = list(nodes) if nodes is not None else load_nodes(settings)
        if nodes:
            sparse = bm25_retriever(nodes, settings.candidate_k)
        elif dense is None:
            raise IndexMissingError("the index is empty; build it with `python -m rag_app.index`")
    return MedQARetriever(dense, sparse, top_k=settings.top_k, candidate_k=settings.candidate_k, exclude=exclude)
