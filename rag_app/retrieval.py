"""Retrieval over the Chroma index, one chunk per QA pair.

``fielded`` (the default) fuses, per QA pair, the dense similarity of its best chunk, of its question alone, the
topic named in the message, the question type asked for and a prior for its source (:class:`FieldedRetriever`,
over the opened index :class:`rag_app.store.MedQAIndex`).
``hybrid`` fuses dense and BM25 by reciprocal rank; ``dense`` and ``bm25`` use one of them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, List, Mapping, Sequence

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from rag_app.config import Settings
from rag_app.focus import PARTIAL_NAME_SCORE
from rag_app.store import IndexSnapshot, MedQAIndex, open_index

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
        self._parts = (dense, sparse)
        super().__init__()

    def with_top_k(self, top_k: int) -> "MedQARetriever":
        """A retriever over the same dense and BM25 retrievers returning ``top_k`` sources."""
        return MedQARetriever(*self._parts, top_k=top_k, candidate_k=max(self.candidate_k, top_k), exclude=self.exclude)

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        nodes = self._inner.retrieve(query_bundle)
        if self.exclude:
            nodes = [n for n in nodes if (n.node.ref_doc_id or n.node.node_id) not in self.exclude]
        return one_per_source(nodes, self.top_k)


@dataclass(frozen=True)
class FusionWeights:
    """Weights of :class:`FieldedRetriever`'s score (chosen on the LiveQA tune half; see ``benchmarks/tune_liveqa.py``).

    score = (1 - question) * chunk + question * question-only + focus * topic match
    + type * [its question type was asked for] + overview * [it is an overview ("information") pair]
    + source * [the log-odds that a pair from its source collection answers a real message (``source_prior``)],
    where chunk and question-only are cosines, each ``(1 - sentences) * cos(whole message)
    + sentences * max over the message's sentences of cos(sentence)``.
    """

    # No defaults here: the settings (``MEDQA_*_WEIGHT``) hold the chosen values; see :meth:`from_settings`.
    question: float
    focus: float
    type: float
    overview: float
    sentences: float
    source: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "FusionWeights":
        return cls(
            settings.question_weight,
            settings.focus_weight,
            settings.type_weight,
            settings.overview_weight,
            settings.sentence_weight,
            settings.source_weight,
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
    chunk_id: str = ""  # its best chunk for the whole message (the one returned)
    source: float = 0.0  # the prior log-odds of its source collection

    def score(self, w: FusionWeights) -> float:
        chunk = (1 - w.sentences) * self.chunk + w.sentences * self.chunk_sentences
        question = (1 - w.sentences) * self.question + w.sentences * self.question_sentences
        return (
            (1 - w.question) * chunk
            + w.question * question
            + w.focus * self.focus
            + w.type * self.type
            + w.overview * self.overview
            + w.source * self.source
        )


#: Most sentences of a message embedded on their own when they need a pass each (see :func:`message_vectors`).
MAX_SENTENCES = 8
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+|\n+")
_WORD = re.compile(r"[A-Za-z]{2,}")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the message's sentences with at least two words, in order.

    A subject line ending in a full stop counts as one sentence.
    """
    spans = []
    start = 0
    for end, next_start in [(m.start(), m.end()) for m in _SENTENCE_END.finditer(text)] + [(len(text), len(text))]:
        part = text[start:end]
        if len(_WORD.findall(part)) >= 2:
            lead = len(part) - len(part.lstrip())
            spans.append((start + lead, start + len(part.rstrip())))
        start = next_start
    return spans


def sentences(text: str, limit: int = MAX_SENTENCES) -> list[str]:
    """The message's sentences with at least two words, at most ``limit`` (see :func:`sentence_spans`).

    Example:
        >>> sentences("lupus. Hi, I want to know about Lupus and its treatment. Best, [NAME]")
        ['Hi, I want to know about Lupus and its treatment.', 'Best, [NAME]']
    """
    return [text[a:b] for a, b in sentence_spans(text)][:limit]


def _mean_pooled_model(embed_model: Any) -> Any:
    """The ``SentenceTransformer`` behind ``embed_model`` when it mean-pools its token embeddings, else None."""
    model = getattr(embed_model, "_model", None)
    if model is None or not hasattr(model, "tokenizer") or not hasattr(model, "forward"):
        return None
    modes = [getattr(module, "pooling_mode", None) for module in model]
    return model if "mean" in modes and all(m in (None, "mean") for m in modes) else None


def message_vectors(embed_model: Any, text: str, split: bool = True) -> Any:
    """Query vectors of a message: row 0 the whole message, then one row per sentence when it has several.

    With a mean-pooled sentence-transformers model (the default all-MiniLM-L6-v2), all rows come from one forward
    pass: row 0 is the model's own embedding of the message, and each sentence's vector is the mean of its tokens'
    contextual embeddings ("late chunking"), so a long message costs one pass, not two. Other models embed up to
    :data:`MAX_SENTENCES` sentences in a second, batched pass.

    Args:
        embed_model: The LlamaIndex embedding model that built the index.
        text: The message.
        split: Whether to add sentence rows.

    Returns:
        A float32 array of shape ``(1 + sentences, dim)``, rows L2-normalised as the model normalises them.
    """
    import numpy as np

    spans = sentence_spans(text) if split else []
    model = _mean_pooled_model(embed_model)
    if model is None:
        whole = embed_model.get_query_embedding(text)
        parts = _embed_queries(embed_model, [text[a:b] for a, b in spans][:MAX_SENTENCES]) if len(spans) > 1 else []
        return np.asarray([whole, *parts], dtype=np.float32)

    import torch

    prompt = (getattr(model, "prompts", None) or {}).get("query") or ""
    encoded = model.tokenizer(
        prompt + text, return_offsets_mapping=True, truncation=True, max_length=model.max_seq_length, return_tensors="pt"
    )
    offsets = encoded.pop("offset_mapping")[0] - len(prompt)
    with torch.inference_mode():
        out = model.forward({key: value.to(model.device) for key, value in encoded.items()})
    whole = out["sentence_embedding"][0].float().cpu()
    rows = [torch.nn.functional.normalize(whole, dim=0) if getattr(embed_model, "normalize", True) else whole]
    if len(spans) > 1:
        tokens = out["token_embeddings"][0].float().cpu()
        real = offsets[:, 1] > offsets[:, 0]  # not [CLS], [SEP] or the prompt's special tokens
        for start, end in spans:
            inside = real & (offsets[:, 0] >= start) & (offsets[:, 1] <= end)
            if inside.any():  # a sentence past the model's length limit has no tokens
                rows.append(torch.nn.functional.normalize(tokens[inside].mean(0), dim=0))
    return torch.stack(rows).numpy()


def _embed_queries(embed_model: Any, texts: list[str]) -> list[list[float]]:
    # One batched forward pass (HuggingFaceEmbedding._embed with the query prompt); else one call per text.
    embed = getattr(embed_model, "_embed", None)
    if callable(embed):
        try:
            return [list(v) for v in embed(texts, prompt_name="query")]
        except TypeError:
            pass
    return [embed_model.get_query_embedding(t) for t in texts]


def _whole_and_best_part(sims: Any) -> tuple[list[float], list[float]]:
    """Per row of cosines (column 0 the whole message, then its sentences): that cosine, and the best sentence's
    (the whole message's when there are no sentence columns)."""
    whole = sims[:, 0]
    return whole.tolist(), (sims[:, 1:].max(axis=1) if sims.shape[1] > 1 else whole).tolist()


class FieldedRetriever(BaseRetriever):
    """Fuses chunk vectors, question-only vectors, topic names and question types, one result per QA pair.

    Candidates are the QA pairs of the ``candidate_k`` nearest chunks, the ``candidate_k`` nearest questions and
    the topics the message names (:class:`rag_app.focus.FocusMatcher`); each is scored exactly from its stored
    vectors (:class:`Candidate`, :class:`FusionWeights`). Topics and types are read from the chunks' metadata.
    Without a question collection (an index built before it existed), it uses chunk vectors alone.

    It holds no data: the vectors and topics are the index's (:class:`rag_app.store.MedQAIndex`), so retrievers
    with other options are cheap (:meth:`with_top_k`), as ``VectorStoreIndex.as_retriever`` makes them.

    Args:
        index: The opened index.
        weights: Fusion weights.
        top_k: QA pairs returned.
        candidate_k: Nearest chunks and nearest questions fetched.
        exclude: Source document ids never returned.
        focus_min_score: Least :class:`FocusMatcher` score for a named topic to add candidates.
        focus_limit: Most QA pairs a named topic adds.
        source_prior: Prior log-odds per source collection (the pairs' ``collection`` metadata); others count 0.
    """

    def __init__(
        self,
        index: MedQAIndex,
        weights: FusionWeights,
        top_k: int,
        candidate_k: int,
        exclude: frozenset[str] = frozenset(),
        focus_min_score: float = PARTIAL_NAME_SCORE,
        focus_limit: int = 100,
        source_prior: Mapping[str, float] | None = None,
    ) -> None:
        self.index = index
        self.weights = weights
        self.top_k = top_k
        self.candidate_k = max(candidate_k, top_k)
        self.exclude = frozenset(exclude)
        self.focus_min_score = focus_min_score
        self.focus_limit = focus_limit
        self.source_prior = dict(source_prior or {})
        super().__init__()

    def with_top_k(self, top_k: int) -> "FieldedRetriever":
        """A retriever over the same index returning ``top_k`` pairs (the chat's per-request choice)."""
        return FieldedRetriever(
            self.index, self.weights, top_k, max(self.candidate_k, top_k), self.exclude, self.focus_min_score, self.focus_limit, self.source_prior
        )

    @property
    def matcher(self) -> Any:
        """The topic names (and synonyms) of the indexed pairs (:class:`rag_app.focus.FocusMatcher`)."""
        return self.index.matcher

    @property
    def source_of(self) -> dict[str, str]:
        """The source collection of each QA pair."""
        return self.index.source_of

    # ---- evidence ------------------------------------------------------------------
    def candidates(self, query: str, embedding: Sequence[float] | None = None, snap: IndexSnapshot | None = None) -> list[Candidate]:
        """Every candidate QA pair of ``query`` with its evidence (unsorted, excluded ids removed).

        Args:
            query: The message.
            embedding: Its whole-message vector, when already computed.
            snap: The index copy to read (default: the current one).
        """
        import numpy as np

        from rag_app.focus import OVERVIEW_TYPE, question_types

        snap = snap or self.index.snapshot()
        vectors = message_vectors(self.index.embed_model, query, split=self.weights.sentences > 0)
        if embedding is not None:
            vectors[0] = np.asarray(embedding, dtype=np.float32)
        Q = vectors.T  # columns: the whole message, then each sentence when there are several
        doc_ids = dict.fromkeys(self.index.nearest(vectors[0].tolist(), self.candidate_k, snap))
        focus = snap.matcher.doc_scores(query, self.focus_min_score, self.focus_limit)
        doc_ids.update(dict.fromkeys(focus))
        wanted = [d for d in doc_ids if d not in self.exclude]
        if not wanted:
            return []

        chunk_ids, sims = self.index.chunk_similarities(wanted, Q, snap)
        best: dict[str, tuple[float, str]] = {}
        best_part: dict[str, float] = {}
        for node_id, sim, part in zip(chunk_ids, *_whole_and_best_part(sims)):
            doc_id = snap.doc_of_chunk[node_id]
            best_part[doc_id] = max(best_part.get(doc_id, -1.0), part)
            if doc_id not in best or sim > best[doc_id][0]:
                best[doc_id] = (sim, node_id)
        have, q_sims = self.index.question_similarities(wanted, Q, snap)
        question_sim = {doc_id: (sim, part) for doc_id, sim, part in zip(have, *_whole_and_best_part(q_sims))}
        asked = question_types(query)
        out = []
        for doc_id in wanted:
            if doc_id not in best:  # a question without chunks (index mid-update): nothing to show
                continue
            chunk_sim, chunk_id = best[doc_id]
            q_sim, q_part = question_sim.get(doc_id, (chunk_sim, best_part[doc_id]))
            qtype = snap.question_type.get(doc_id, "")
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
                    chunk_id=chunk_id,
                    source=self.source_prior.get(snap.source_of.get(doc_id, ""), 0.0),
                )
            )
        return out

    def _rank(self, query_bundle: QueryBundle, snap: IndexSnapshot) -> list[tuple[float, Candidate]]:
        found = self.candidates(query_bundle.query_str, query_bundle.embedding, snap)
        return sorted(((c.score(self.weights), c) for c in found), key=lambda sc: (-sc[0], sc[1].doc_id))[: self.top_k]

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        snap = self.index.snapshot()
        ranked = self._rank(query_bundle, snap)
        nodes = self.index.nodes([c.chunk_id for _, c in ranked])
        if len(nodes) < len(ranked):  # a chunk was replaced or deleted since the last read: read again, rank again
            self.index.reread(snap)
            snap = self.index.snapshot()
            ranked = self._rank(query_bundle, snap)
            nodes = self.index.nodes([c.chunk_id for _, c in ranked])
        return [NodeWithScore(node=nodes[c.chunk_id], score=score) for score, c in ranked if c.chunk_id in nodes]


def fielded_retriever(index: MedQAIndex, settings: Settings, exclude: frozenset[str] = frozenset()) -> FieldedRetriever:
    """The :class:`FieldedRetriever` over ``index`` with the weights, ``top_k`` and ``candidate_k`` of ``settings``."""
    return FieldedRetriever(
        index,
        FusionWeights.from_settings(settings),
        top_k=settings.top_k,
        candidate_k=settings.candidate_k,
        exclude=exclude,
        source_prior=settings.source_prior,
    )


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
    from rag_app.index import IndexMissingError, get_collection, load_nodes
    from rag_app.models import load_embed_model

    if settings.retrieval_mode == "fielded":
        return fielded_retriever(open_index(settings, embed_model), settings, exclude)
    get_collection(settings)  # fail early, with the fix, when there is no index
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


def topic_matcher(retriever: Any) -> Any:
    """The index's topic matcher behind a retriever (the fielded retriever keeps one), or None for other modes."""
    return getattr(retriever, "matcher", None) if isinstance(retriever, FieldedRetriever) else None
