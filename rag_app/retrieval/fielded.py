"""The default retrieval (``fielded``): each QA pair scored by its chunk vectors, its question vector, the topic the
message names, the question type it asks and a prior for its source collection (:class:`FieldedRetriever`, over the
opened index :class:`rag_app.index.store.MedQAIndex`)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Hashable, List, Mapping, Sequence, TypeVar

import numpy as np
import torch
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from rag_app.config import Settings
from rag_app.index.store import IndexSnapshot, MedQAIndex
from rag_app.index.topics import OVERVIEW_TYPE, PARTIAL_NAME_SCORE, FocusMatcher, topic_key
from rag_app.llm.load import embed_queries, mean_pooled_encoder
from rag_app.text.words import sentence_spans

logger = logging.getLogger("rag_app")
T = TypeVar("T")


@dataclass(frozen=True)
class FusionWeights:
    """Weights of :class:`FieldedRetriever`'s score (chosen on the LiveQA tune half; see ``benchmarks/tune_liveqa.py``).

    score = (1 - question) * chunk + question * question-only + focus * topic match
    + type * ([its question type was asked for] or nearest_type * [it is of the type nearest an asked one, on a topic with
    no page of an asked type (:data:`NEAREST_TYPE`)]) + overview * [it is an overview ("information") pair], where overview is
    ``overview_asked`` instead when the message asks some question type (the overview then competes with the asked page)
    + source * [the log-odds that a pair from its source collection answers a real message (``source_prior``)], where
    source is ``source_asked`` instead for a pair of the type the message asks (the asked page of a collection that
    real messages rarely need may still be the page asked for)
    - pointer * [its answer only points elsewhere (:func:`rag_app.text.pointers.only_points_elsewhere`)],
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
    overview_asked: float
    pointer: float
    source_asked: float
    nearest_type: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "FusionWeights":
        return cls(
            settings.question_weight,
            settings.focus_weight,
            settings.type_weight,
            settings.overview_weight,
            settings.sentence_weight,
            settings.source_weight,
            settings.overview_asked_weight,
            settings.pointer_weight,
            settings.source_asked_weight,
            settings.nearest_type_share,
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
    asked: bool = False  # whether the message asks for some question type (cue words, ``question_types``)
    pointer: float = 0.0  # 1 when its answer only points elsewhere (an address, a link; rag_app.text.pointers)
    nearest: float = 0.0  # 1 when of the type nearest an asked one, on a topic named in full with no page of an asked type

    def score(self, w: FusionWeights) -> float:
        chunk = (1 - w.sentences) * self.chunk + w.sentences * self.chunk_sentences
        question = (1 - w.sentences) * self.question + w.sentences * self.question_sentences
        return (
            (1 - w.question) * chunk
            + w.question * question
            + w.focus * self.focus
            + w.type * (self.type or w.nearest_type * self.nearest)
            + (w.overview_asked if self.asked else w.overview) * self.overview
            + (w.source_asked if self.type else w.source) * self.source
            - w.pointer * self.pointer
        )


#: The question type nearest each asked one, for a topic with no page of the asked type: "what can she do so she
#: doesn't get heart problems?" about Marfan syndrome (no prevention page) is answered by its treatment page.
NEAREST_TYPE = {
    "prevention": "treatment",
    "complications": "symptoms",
    "susceptibility": "causes",
    "causes": "susceptibility",
    "inheritance": "genetic changes",
    "genetic changes": "inheritance",
}

#: Most sentences of a message embedded on their own when they need a pass each (see :func:`message_vectors`).
MAX_SENTENCES = 8


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
    spans = sentence_spans(text) if split else []
    model = mean_pooled_encoder(embed_model)
    if model is None:
        whole = embed_model.get_query_embedding(text)
        parts = embed_queries(embed_model, [text[a:b] for a, b in spans][:MAX_SENTENCES]) if len(spans) > 1 else []
        return np.asarray([whole, *parts], dtype=np.float32)
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


def _mark_nearest(found: Sequence[Candidate], nearest: set[str], snap: Any) -> None:
    """Mark the candidates of a ``nearest`` type on each topic the message names in full none of whose candidates is of
    an asked type (not on a topic it names in part: "How to prevent Wilson Disease?" is not about Mowat-Wilson
    syndrome)."""
    by_topic: dict[frozenset[str], list[Candidate]] = {}
    for c in found:
        if c.focus >= 1.0:
            by_topic.setdefault(topic_key((snap.matcher.names_of(c.doc_id) or [c.doc_id])[0]), []).append(c)
    for group in by_topic.values():
        if not any(c.type for c in group):
            for c in group:
                if snap.question_type.get(c.doc_id, "") in nearest:
                    c.nearest = 1.0


def _whole_and_best_part(sims: Any) -> tuple[list[float], list[float]]:
    """Per row of cosines (column 0 the whole message, then its sentences): that cosine, and the best sentence's
    (the whole message's when there are no sentence columns)."""
    whole = sims[:, 0]
    return whole.tolist(), (sims[:, 1:].max(axis=1) if sims.shape[1] > 1 else whole).tolist()


class FieldedRetriever(BaseRetriever):
    """Fuses chunk vectors, question-only vectors, topic names and question types, one result per QA pair.

    Candidates are the QA pairs of the ``candidate_k`` nearest chunks, the ``candidate_k`` nearest questions and
    the topics the message names (:class:`rag_app.index.topics.FocusMatcher`); each is scored exactly from its stored
    vectors (:class:`Candidate`, :class:`FusionWeights`). Topics and types are read from the chunks' metadata.
    Without a question collection (an index built before it existed), it uses chunk vectors alone.

    It holds no data: the vectors and topics are the index's (:class:`rag_app.index.store.MedQAIndex`), so retrievers
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
        same_question_limit: Most pairs with the same source and question ranked before the others
            (:func:`repeats_last`); 0 ranks by score alone.
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
        same_question_limit: int = 0,
    ) -> None:
        self.index = index
        self.weights = weights
        self.top_k = top_k
        self.candidate_k = max(candidate_k, top_k)
        self.exclude = frozenset(exclude)
        self.focus_min_score = focus_min_score
        self.focus_limit = focus_limit
        self.source_prior = dict(source_prior or {})
        self.same_question_limit = same_question_limit
        super().__init__()

    def with_top_k(self, top_k: int) -> "FieldedRetriever":
        """A retriever over the same index returning ``top_k`` pairs (the chat's per-request choice)."""
        return FieldedRetriever(
            self.index, self.weights, top_k, max(self.candidate_k, top_k), self.exclude, self.focus_min_score, self.focus_limit,
            self.source_prior, self.same_question_limit,
        )

    @property
    def matcher(self) -> FocusMatcher:
        """The topic names (and synonyms) of the indexed pairs (:class:`rag_app.index.topics.FocusMatcher`)."""
        return self.index.matcher

    @property
    def source_of(self) -> dict[str, str]:
        """The source collection of each QA pair."""
        return self.index.source_of

    def asked_types(self, text: str) -> set[str]:
        """The question types ``text`` asks (cue words, else the nearest way of asking: :class:`rag_app.index.asked.AskedTypes`)."""
        return self.index.asked_types(text)

    def asked_plainly(self, text: str) -> set[str]:
        """The question type ``text`` asks in a plain way of asking (:meth:`rag_app.index.store.MedQAIndex.asked_plainly`)."""
        return self.index.asked_plainly(text)

    # ---- evidence ------------------------------------------------------------------
    def candidates(self, query: str, embedding: Sequence[float] | None = None, snap: IndexSnapshot | None = None) -> list[Candidate]:
        """Every candidate QA pair of ``query`` with its evidence (unsorted, excluded ids removed).

        Args:
            query: The message.
            embedding: Its whole-message vector, when already computed.
            snap: The index copy to read (default: the current one).
        """
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
        asked = self.index.asked_types(query, snap)
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
                    asked=bool(asked),
                    pointer=1.0 if doc_id in snap.pointers else 0.0,
                )
            )
        nearest = {NEAREST_TYPE[t] for t in asked if t in NEAREST_TYPE} - asked
        if nearest:
            _mark_nearest(out, nearest, snap)
        return out

    def rank(
        self, found: Sequence[Candidate], snap: IndexSnapshot | None = None, weights: FusionWeights | None = None, limit: int | None = None
    ) -> list[tuple[float, Candidate]]:
        """``(score, candidate)`` best first, a pair repeating a better one's source and question after the others.

        Args:
            found: The candidates (:meth:`candidates`).
            snap: The index copy they were read from (default: the current one).
            weights: Fusion weights (default: the retriever's).
            limit: Pairs with the same source and question before the others (default: ``same_question_limit``).
        """
        snap = snap or self.index.snapshot()
        weights = weights or self.weights
        ranked = sorted(((c.score(weights), c) for c in found), key=lambda sc: (-sc[0], sc[1].doc_id))
        same = lambda sc: (snap.source_of.get(sc[1].doc_id, ""), snap.question_of.get(sc[1].doc_id) or sc[1].doc_id)  # noqa: E731
        return repeats_last(ranked, same, self.same_question_limit if limit is None else limit)

    def _rank(self, query_bundle: QueryBundle, snap: IndexSnapshot) -> list[tuple[float, Candidate]]:
        return self.rank(self.candidates(query_bundle.query_str, query_bundle.embedding, snap), snap)[: self.top_k]

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


def repeats_last(ranked: Sequence[T], key: Callable[[T], Hashable], limit: int) -> list[T]:
    """``ranked`` with each item beyond the first ``limit`` of its ``key`` moved after all the others (order kept).

    NIHSeniorHealth splits a topic's overview into several QA pairs that all ask "What is (are) Alzheimer's Disease?";
    without a limit they take most of the re-ranker's candidates, and the page that answers what was asked ("is it
    genetic?") is never read. ``limit`` 0 keeps ``ranked`` as it is.

    Example:
        >>> repeats_last(["a1", "a2", "b1", "a3", "c1"], key=lambda s: s[0], limit=1)
        ['a1', 'b1', 'c1', 'a2', 'a3']
    """
    if limit <= 0:
        return list(ranked)
    seen: Counter[Hashable] = Counter()
    first, later = [], []
    for item in ranked:
        k = key(item)
        seen[k] += 1
        (first if seen[k] <= limit else later).append(item)
    return first + later


def fielded_retriever(index: MedQAIndex, settings: Settings, exclude: frozenset[str] = frozenset()) -> FieldedRetriever:
    """The :class:`FieldedRetriever` over ``index`` with the weights, ``top_k`` and ``candidate_k`` of ``settings``."""
    return FieldedRetriever(
        index,
        FusionWeights.from_settings(settings),
        top_k=settings.top_k,
        candidate_k=settings.candidate_k,
        exclude=exclude,
        source_prior=settings.source_prior,
        same_question_limit=settings.same_question_limit,
    )
