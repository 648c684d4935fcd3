"""Retrieval over the Chroma index, one chunk per QA pair.

``fielded`` (the default) fuses, per QA pair, the dense similarity of its best chunk, of its question alone, the
topic named in the message and the question type asked for (:class:`FieldedRetriever`). ``hybrid`` fuses dense
and BM25 by reciprocal rank; ``dense`` and ``bm25`` use one of them.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, List, Sequence

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from rag_app.config import Settings

logger = logging.getLogger("rag_app")


def one_per_source(nodes: Sequence[NodeWithScore], top_k: int) -> list[NodeWithScore]:
    """Keep the best-ranked chunk of each source document (QA pair), up to ``top_k``."""
    kept: list[NodeWithScore] = []
    seen: set[str] = set()
    for node in nodes:
        key = node.node.ref_doc_id or node.node.node_id
        if key in seen:
            continue
        seen.add(key)
        kept.append(node)
        if len(kept) == top_k:
            break
    return kept


class MedQARetriever(BaseRetriever):
    """Dense, BM25 or hybrid (RRF) retrieval with at most one chunk per source QA pair.

    Args:
        dense: A retriever over the vector store (or None in ``bm25`` mode).
        sparse: A BM25 retriever (or None in ``dense`` mode).
        top_k: Sources returned.
        candidate_k: Candidates fetched from each retriever before fusion and de-duplication.
        exclude: Source document ids never returned (evaluation's "knowledge absent" setting).
    """

    def __init__(
        self,
        dense: BaseRetriever | None,
        sparse: BaseRetriever | None,
        top_k: int,
        candidate_k: int,
        exclude: frozenset[str] = frozenset(),
    ) -> None:
        from llama_index.core.llms import MockLLM
        from llama_index.core.retrievers import QueryFusionRetriever

        if dense is None and sparse is None:
            raise ValueError("MedQARetriever needs a dense or a BM25 retriever")
        self.top_k = top_k
        self.candidate_k = max(candidate_k, top_k)
        self.exclude = frozenset(exclude)
        parts = [r for r in (dense, sparse) if r is not None]
        if len(parts) == 2:
            # num_queries=1: fuse the two rankings of the user's own query; no LLM query rewriting.
            self._inner: BaseRetriever = QueryFusionRetriever(
                parts,
                mode="reciprocal_rerank",
                num_queries=1,
                similarity_top_k=2 * self.candidate_k,
                use_async=False,
                llm=MockLLM(),
            )
        else:
            self._inner = parts[0]
        super().__init__()

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        nodes = self._inner.retrieve(query_bundle)
        if self.exclude:
            nodes = [n for n in nodes if (n.node.ref_doc_id or n.node.node_id) not in self.exclude]
        return one_per_source(nodes, self.top_k)


@dataclass(frozen=True)
class FusionWeights:
    """Weights of :class:`FieldedRetriever`'s score (chosen on the LiveQA tune half; see ``benchmarks/tune_liveqa.py``).

    score = (1 - question) * chunk + question * question-only + focus * topic match
    + type * [its question type was asked for] + overview * [it is an overview ("information") pair],
    where chunk and question-only are cosines, each ``(1 - sentences) * cos(whole message)
    + sentences * max over the message's sentences of cos(sentence)``.
    """

    question: float = 0.3
    focus: float = 0.15
    type: float = 0.1
    overview: float = 0.1
    sentences: float = 0.3

    @classmethod
    def from_settings(cls, settings: Settings) -> "FusionWeights":
        return cls(
            settings.question_weight, settings.focus_weight, settings.type_weight, settings.overview_weight, settings.sentence_weight
        )


@dataclass
class Candidate:
    """One QA pair's evidence for a query: the fields that :meth:`FusionWeights` combines."""

    doc_id: str
    chunk: float  # cosine of its best chunk with the whole message
    question: float  # cosine of its question alone (= chunk when it has no question vector)
    focus: float  # FocusMatcher score of its topic, 0 when not named
    type: float  # 1 when its question type was asked for
    overview: float  # 1 for an overview pair
    chunk_sentences: float = 0.0  # best cosine of its chunks with one sentence of the message (= chunk for one sentence)
    question_sentences: float = 0.0  # the same for its question vector
    chunk_record: Any = None  # its best chunk (for the whole message): (id, text, Chroma metadata)

    def node(self) -> Any:
        """The best chunk as a LlamaIndex ``TextNode``."""
        from llama_index.core.vector_stores.utils import metadata_dict_to_node

        node_id, text, meta = self.chunk_record
        node = metadata_dict_to_node(meta, text=text)
        node.id_ = node_id
        return node

    def score(self, w: FusionWeights) -> float:
        chunk = (1 - w.sentences) * self.chunk + w.sentences * self.chunk_sentences
        question = (1 - w.sentences) * self.question + w.sentences * self.question_sentences
        return (
            (1 - w.question) * chunk
            + w.question * question
            + w.focus * self.focus
            + w.type * self.type
            + w.overview * self.overview
        )


#: Most sentences of a message embedded on their own (the rest still count through the whole message).
MAX_SENTENCES = 8
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+|\n+")
_WORD = re.compile(r"[A-Za-z]{2,}")


def sentences(text: str, limit: int = MAX_SENTENCES) -> list[str]:
    """The message's sentences with at least two words, at most ``limit`` (a subject line counts as one).

    Example:
        >>> sentences("lupus. Hi, I want to know about Lupus and its treatment. Best, [NAME]")
        ['Hi, I want to know about Lupus and its treatment.', 'Best, [NAME]']
    """
    parts = [p.strip() for p in _SENTENCE_END.split(text)]
    return [p for p in parts if len(_WORD.findall(p)) >= 2][:limit]


class FieldedRetriever(BaseRetriever):
    """Fuses chunk vectors, question-only vectors, topic names and question types, one result per QA pair.

    Candidates are the QA pairs of the ``candidate_k`` nearest chunks, the ``candidate_k`` nearest questions and
    the topics the message names (:class:`rag_app.focus.FocusMatcher`); each is scored exactly from its stored
    vectors (:class:`Candidate`, :class:`FusionWeights`). Topics and types are read from the chunks' metadata.
    Without a question collection (an index built before it existed), it uses chunk vectors alone.

    Args:
        chunks: The chunk collection (Chroma).
        questions: The question collection, or None.
        embed_model: LlamaIndex embedding model (the one that built the index).
        weights: Fusion weights.
        top_k: QA pairs returned.
        candidate_k: Nearest chunks and nearest questions fetched.
        exclude: Source document ids never returned.
    """

    def __init__(
        self,
        chunks: Any,
        questions: Any,
        embed_model: Any,
        weights: FusionWeights,
        top_k: int,
        candidate_k: int,
        exclude: frozenset[str] = frozenset(),
        focus_min_score: float = 0.5,
        focus_limit: int = 100,
    ) -> None:
        from corpus.medquad import SYNONYM_SEPARATOR
        from rag_app.focus import FocusMatcher
        from rag_app.index import iter_records

        self.chunks = chunks
        self.questions = questions
        self.embed_model = embed_model
        self.weights = weights
        self.top_k = top_k
        self.candidate_k = max(candidate_k, top_k)
        self.exclude = frozenset(exclude)
        self.focus_min_score = focus_min_score
        self.focus_limit = focus_limit
        # One pass over the chunks' metadata (each chunk carries its QA pair's): the chunk ids of each pair, so
        # that scoring fetches candidates by id (primary key) rather than by a metadata filter (pairs indexed
        # after this retriever was built fall back to the filter), and each pair's topic, synonyms and type.
        self._chunk_ids: dict[str, list[str]] = defaultdict(list)
        self._doc_of_chunk: dict[str, str] = {}
        foci: dict[str, str] = {}
        synonyms: dict[str, list[str]] = {}
        self.question_type: dict[str, str] = {}
        for node_id, meta in iter_records(chunks, ["metadatas"]):
            meta = meta or {}
            doc_id = meta.get("ref_doc_id") or node_id
            self._chunk_ids[doc_id].append(node_id)
            self._doc_of_chunk[node_id] = doc_id
            if doc_id not in foci:
                foci[doc_id] = str(meta.get("focus") or "")
                synonyms[doc_id] = [n for n in str(meta.get("synonyms") or "").split(SYNONYM_SEPARATOR) if n.strip()]
                self.question_type[doc_id] = str(meta.get("question_type") or "")
        self.matcher = FocusMatcher(foci, synonyms)
        super().__init__()

    # ---- evidence ------------------------------------------------------------------
    def candidates(self, query: str, embedding: Sequence[float] | None = None) -> list[Candidate]:
        """Every candidate QA pair of ``query`` with its evidence (unsorted, excluded ids removed)."""
        import numpy as np

        from rag_app.focus import OVERVIEW_TYPE, question_types

        parts = sentences(query)
        if embedding is None:
            embedding = self.embed_model.get_query_embedding(query)
        # The sentences in a batch of their own: batched with the whole message, each would be padded to its length.
        vectors = [embedding, *(self._embed_queries(parts) if len(parts) > 1 and self.weights.sentences > 0 else [])]
        q = np.asarray(vectors[0], dtype=np.float32)
        # columns: the whole message, then each sentence when there are several
        Q = np.asarray(vectors, dtype=np.float32).T
        doc_ids: dict[str, None] = {}
        near = self.chunks.query(query_embeddings=[q.tolist()], n_results=self.candidate_k, include=[])["ids"][0]
        new_chunks = [c for c in near if c not in self._doc_of_chunk]  # indexed after this retriever was built
        if new_chunks:
            for node_id, meta in zip(new_chunks, self.chunks.get(ids=new_chunks, include=["metadatas"])["metadatas"]):
                self._doc_of_chunk[node_id] = (meta or {}).get("ref_doc_id") or node_id
        doc_ids.update(dict.fromkeys(self._doc_of_chunk[c] for c in near))
        if self.questions is not None:
            near_q = self.questions.query(query_embeddings=[q.tolist()], n_results=self.candidate_k, include=[])
            doc_ids.update(dict.fromkeys(near_q["ids"][0]))
        focus = self.matcher.doc_scores(query, self.focus_min_score, self.focus_limit)
        doc_ids.update(dict.fromkeys(focus))
        wanted = [d for d in doc_ids if d not in self.exclude]
        if not wanted:
            return []

        include = ["embeddings", "documents", "metadatas"]
        known = [cid for d in wanted for cid in self._chunk_ids.get(d, ())]
        got = self.chunks.get(ids=known, include=include) if known else {"ids": [], "embeddings": [], "documents": [], "metadatas": []}
        unknown = [d for d in wanted if d not in self._chunk_ids]
        if unknown:
            more = self.chunks.get(where={"ref_doc_id": {"$in": unknown}}, include=include)
            got = {key: list(got[key]) + list(more[key]) for key in ("ids", "embeddings", "documents", "metadatas")}
        best: dict[str, tuple[float, Any]] = {}
        best_part: dict[str, float] = {}
        if len(got["ids"]):
            sims = np.asarray(got["embeddings"], dtype=np.float32) @ Q
            for node_id, text, meta, row in zip(got["ids"], got["documents"], got["metadatas"], sims):
                doc_id = (meta or {}).get("ref_doc_id") or node_id
                sim, part = float(row[0]), float(row[1:].max()) if len(row) > 1 else float(row[0])
                best_part[doc_id] = max(best_part.get(doc_id, -1.0), part)
                if doc_id not in best or sim > best[doc_id][0]:
                    best[doc_id] = (sim, (node_id, text, meta))
        question_sim: dict[str, tuple[float, float]] = {}
        if self.questions is not None:
            got_q = self.questions.get(ids=wanted, include=["embeddings"])
            if len(got_q["ids"]):
                sims = np.asarray(got_q["embeddings"], dtype=np.float32) @ Q
                question_sim = {
                    doc_id: (float(row[0]), float(row[1:].max()) if len(row) > 1 else float(row[0]))
                    for doc_id, row in zip(got_q["ids"], sims)
                }
        asked = question_types(query)
        out = []
        for doc_id in wanted:
            if doc_id not in best:  # a question without chunks (index mid-update): nothing to show
                continue
            chunk_sim, record = best[doc_id]
            q_sim, q_part = question_sim.get(doc_id, (chunk_sim, best_part[doc_id]))
            qtype = self.question_type.get(doc_id, "")
            out.append(
                Candidate(
                    doc_id=doc_id,
                    chunk=chunk_sim,
                    question=q_sim,
                    focus=focus.get(doc_id, 0.0),
                    type=1.0 if qtype in asked else 0.0,
                    overview=1.0 if qtype == OVERVIEW_TYPE else 0.0,
                    chunk_sentences=best_part[doc_id],
                    question_sentences=q_part,
                    chunk_record=record,
                )
            )
        return out

    def _embed_queries(self, texts: list[str]) -> list[list[float]]:
        # One batched forward pass (HuggingFaceEmbedding._embed with the query prompt); else one call per text.
        embed = getattr(self.embed_model, "_embed", None)
        if callable(embed):
            try:
                return [list(v) for v in embed(texts, prompt_name="query")]
            except TypeError:
                pass
        return [self.embed_model.get_query_embedding(t) for t in texts]

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        found = self.candidates(query_bundle.query_str, query_bundle.embedding)
        scored = sorted(((c.score(self.weights), c) for c in found), key=lambda sc: (-sc[0], sc[1].doc_id))
        return [NodeWithScore(node=c.node(), score=score) for score, c in scored[: self.top_k]]


def dense_retriever(settings: Settings, embed_model: Any, similarity_top_k: int) -> BaseRetriever:
    """Vector retriever over the Chroma collection."""
    from llama_index.core import VectorStoreIndex

    from rag_app.index import vector_store

    index = VectorStoreIndex.from_vector_store(vector_store(settings), embed_model=embed_model)
    return index.as_retriever(similarity_top_k=similarity_top_k)


def bm25_retriever(nodes: Sequence[Any], similarity_top_k: int) -> BaseRetriever:
    """BM25 (bm25s, English stemming) over the given chunks."""
    import Stemmer
    from llama_index.retrievers.bm25 import BM25Retriever

    return BM25Retriever.from_defaults(
        nodes=list(nodes),
        similarity_top_k=min(similarity_top_k, len(nodes)),
        stemmer=Stemmer.Stemmer("english"),
        language="english",
    )


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
    from rag_app.index import IndexMissingError, get_collection, load_nodes, questions_collection_name
    from rag_app.models import load_embed_model

    chunks = get_collection(settings)  # fail early, with the fix, when there is no index
    if settings.retrieval_mode == "fielded":
        try:
            questions = get_collection(settings, name=questions_collection_name(settings))
        except IndexMissingError:
            logger.warning(
                "index '%s' has no question vectors; retrieval uses chunks only until `python -m rag_app.index` adds them",
                settings.collection,
            )
            questions = None
        return FieldedRetriever(
            chunks,
            questions,
            embed_model or load_embed_model(settings),
            FusionWeights.from_settings(settings),
            top_k=settings.top_k,
            candidate_k=settings.candidate_k,
            exclude=exclude,
        )
    dense = sparse = None
    if settings.retrieval_mode in {"hybrid", "dense"}:
        dense = dense_retriever(settings, embed_model or load_embed_model(settings), settings.candidate_k)
    if settings.retrieval_mode in {"hybrid", "bm25"}:
        nodes = list(nodes) if nodes is not None else load_nodes(settings)
        if nodes:
            sparse = bm25_retriever(nodes, settings.candidate_k)
        elif dense is None:
            raise ValueError("the index is empty; build it with `python -m rag_app.index`")
    return MedQARetriever(dense, sparse, top_k=settings.top_k, candidate_k=settings.candidate_k, exclude=exclude)
