"""The built index, opened for search: :class:`MedQAIndex`.

Chroma finds the nearest neighbours and holds the texts. Ranking a few hundred candidates also needs their
vectors, topics and types, and fetching those per query would cost more than the search itself, so they are read
once into memory (about 55 MB for all of MedQuAD) as an :class:`IndexSnapshot`. The copy is read again when the
index version changes (the manifest is rewritten whenever the content changes) or when a chunk it names has gone
from the index (:meth:`MedQAIndex.reread`); records added after the last read are fetched from Chroma as they come
up. :func:`rag_app.retrieval.fielded.fielded_retriever` makes the ranking retriever over it.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from llama_index.core.schema import BaseNode
from llama_index.vector_stores.chroma import ChromaVectorStore

from rag_app.config import Settings
from rag_app.errors import IndexDamagedError, IndexMissingError
from rag_app.index.chroma import get_collection, guarded, index_location, index_version, iter_records, questions_collection_name
from rag_app.index.asked import CUES_ONLY, AskedTypes
from rag_app.index.topics import SYNONYM_SEPARATOR, FocusMatcher
from rag_app.llm.load import load_embed_model
from rag_app.text.pointers import only_points_elsewhere
from rag_app.text.prompts import answer_text

logger = logging.getLogger("rag_app")


@dataclass
class IndexSnapshot:
    """What :class:`MedQAIndex` reads from the index at once: vectors, and each pair's chunks, topic and type."""

    version: Any = None
    chunk_ids: dict[str, list[str]] = field(default_factory=dict)  # doc id -> its chunk ids
    doc_of_chunk: dict[str, str] = field(default_factory=dict)
    chunk_row: dict[str, int] = field(default_factory=dict)  # chunk id -> row of chunk_vectors
    chunk_vectors: Any = None
    question_row: dict[str, int] = field(default_factory=dict)  # doc id -> row of question_vectors
    question_vectors: Any = None
    question_type: dict[str, str] = field(default_factory=dict)
    question_of: dict[str, str] = field(default_factory=dict)  # doc id -> its QA pair's question
    chunk_at: list[str] = field(default_factory=list)  # row of chunk_vectors -> chunk id
    question_at: list[str] = field(default_factory=list)  # row of question_vectors -> doc id
    source_of: dict[str, str] = field(default_factory=dict)
    pointers: set[str] = field(default_factory=set)  # doc ids whose answer only points elsewhere (text.pointers)
    matcher: Any = None


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run an index method so that a damaged store raises :class:`rag_app.errors.IndexDamagedError` naming its folder."""

    @functools.wraps(method)
    def wrapper(self: "MedQAIndex", *args: Any, **kwargs: Any) -> Any:
        with guarded(self.location):
            return method(self, *args, **kwargs)

    return wrapper


class MedQAIndex:
    """The chunk and question collections of a built index, with the in-memory copy ranking reads.

    One instance serves every retriever made from it (the chat serves several tabs, each request with its own
    ``top_k``), so the copy is read once per index version.

    Args:
        chunks: The chunk collection, as a LlamaIndex ``ChromaVectorStore``.
        questions: The question-only vectors' collection, or None (an index built before it existed).
        embed_model: The LlamaIndex embedding model that built the index.
        version: Returns a value that changes when the index content changes (default: never re-read).
        location: Where the index lives, named when it turns out to be damaged.
        typo_similarity: Least similarity of a misspelt word to a topic-name word (``MEDQA_TYPO_SIMILARITY``).
        ask_similarity: Least similarity of a message's question to a way of asking for a question type
            (``MEDQA_ASK_SIMILARITY``, :class:`rag_app.index.asked.AskedTypes`).
    """

    def __init__(
        self,
        chunks: ChromaVectorStore,
        questions: ChromaVectorStore | None,
        embed_model: Any,
        version: Callable[[], Any] | None = None,
        location: str = "the index",
        typo_similarity: float = 1.0,
        ask_similarity: float = CUES_ONLY,
    ) -> None:
        self.chunks = chunks
        self.questions = questions
        self.embed_model = embed_model
        self.version = version or (lambda: None)
        self.location = location
        self.typo_similarity = typo_similarity
        self.asked = AskedTypes(embed_model, ask_similarity)
        self._lock = threading.Lock()
        self._snapshot = self._read()

    # ---- the in-memory copy ----------------------------------------------------------
    @_guarded
    def _read(self) -> IndexSnapshot:
        snap = IndexSnapshot(version=self.version())
        vectors = []
        foci: dict[str, str] = {}
        synonyms: dict[str, list[str]] = {}
        says_something: set[str] = set()
        # The texts, kept until the topic matcher has indexed their words (on the first message), so that they are
        # read from the store once.
        texts: list[tuple[str, str]] = []
        # Each chunk carries its QA pair's metadata, so one pass gives every pair's topic, synonyms and type.
        for node_id, meta, vector, text in iter_records(self.chunks.client, ["metadatas", "embeddings", "documents"]):
            meta = meta or {}
            doc_id = meta.get("ref_doc_id") or node_id
            texts.append((doc_id, text or ""))
            if only_points_elsewhere(answer_text(text or "")):
                snap.pointers.add(doc_id)
            else:
                says_something.add(doc_id)
            snap.chunk_ids.setdefault(doc_id, []).append(node_id)
            snap.doc_of_chunk[node_id] = doc_id
            snap.chunk_row[node_id] = len(vectors)
            vectors.append(vector)
            if doc_id not in foci:
                foci[doc_id] = str(meta.get("focus") or "")
                synonyms[doc_id] = [n for n in str(meta.get("synonyms") or "").split(SYNONYM_SEPARATOR) if n.strip()]
                snap.question_type[doc_id] = str(meta.get("question_type") or "")
                snap.question_of[doc_id] = str(meta.get("question") or "")
                snap.source_of[doc_id] = str(meta.get("collection") or "")
        snap.pointers -= says_something  # a pair is a pointer page only when none of its chunks says anything
        snap.chunk_vectors = np.asarray(vectors, dtype=np.float32) if vectors else np.zeros((0, 0), np.float32)
        vectors = []
        if self.questions is not None:
            for doc_id, vector in iter_records(self.questions.client, ["embeddings"]):
                snap.question_row[doc_id] = len(vectors)
                vectors.append(vector)
        snap.question_vectors = np.asarray(vectors, dtype=np.float32) if vectors else np.zeros((0, 0), np.float32)
        snap.matcher = FocusMatcher(foci, synonyms, texts=lambda: texts, typo_similarity=self.typo_similarity, types=snap.question_type)
        snap.chunk_at, snap.question_at = list(snap.chunk_row), list(snap.question_row)
        return snap

    def reload(self) -> None:
        """Read the index again now.

        The new copy replaces the old one in a single assignment, so a query running meanwhile reads one
        consistent copy.
        """
        self._snapshot = self._read()

    def reread(self, stale: IndexSnapshot) -> None:
        """Read the index again in place of ``stale``, unless another thread already has."""
        with self._lock:
            if self._snapshot is stale:
                logger.info("the index changed; re-reading its vectors and topics")
                self.reload()

    def snapshot(self) -> IndexSnapshot:
        """The current copy, read again first when the index version has changed since it was read."""
        snap = self._snapshot
        if self.version() != snap.version:
            self.reread(snap)
        return self._snapshot

    @property
    def matcher(self) -> Any:
        """The topic names (and synonyms) of the indexed pairs (:class:`rag_app.index.topics.FocusMatcher`)."""
        return self.snapshot().matcher

    @property
    def source_of(self) -> dict[str, str]:
        """The source collection of each QA pair."""
        return self.snapshot().source_of

    def asked_types(self, text: str, snap: IndexSnapshot | None = None) -> set[str]:
        """The question types ``text`` asks (:class:`rag_app.index.asked.AskedTypes`, reading this index's topic names)."""
        return self.asked(text, (snap or self.snapshot()).matcher)

    def asked_plainly(self, text: str, snap: IndexSnapshot | None = None) -> set[str]:
        """The question type ``text`` asks in a plain way of asking (:meth:`rag_app.index.asked.AskedTypes.asked_plainly`)."""
        return self.asked.asked_plainly(text, (snap or self.snapshot()).matcher)

    # ---- search ------------------------------------------------------------------------
    @_guarded
    def nearest(self, vector: Sequence[float], k: int, snap: IndexSnapshot) -> list[str]:
        """QA pairs of the ``k`` nearest chunks, then of the ``k`` nearest questions (doc ids, first seen first).

        The search is exact over the in-memory copy: Chroma's HNSW graph misses a real message's nearest chunk now
        and then. Chroma's own search adds what was indexed after the copy was read.
        """
        near = _top(snap.chunk_vectors, vector, k, snap.chunk_at)
        new = [c for c in self.chunks.client.query(query_embeddings=[list(vector)], n_results=k, include=[])["ids"][0] if c not in snap.doc_of_chunk]
        if new:  # indexed after the last read
            for node_id, meta in zip(new, self.chunks.client.get(ids=new, include=["metadatas"])["metadatas"]):
                snap.doc_of_chunk[node_id] = (meta or {}).get("ref_doc_id") or node_id
        doc_ids = dict.fromkeys(snap.doc_of_chunk[c] for c in near + new)
        if self.questions is not None:
            doc_ids.update(dict.fromkeys(_top(snap.question_vectors, vector, k, snap.question_at)))
            found = self.questions.client.query(query_embeddings=[list(vector)], n_results=k, include=[])["ids"][0]
            doc_ids.update(dict.fromkeys(d for d in found if d not in snap.question_row))
        return list(doc_ids)

    @_guarded
    def chunk_similarities(self, doc_ids: Sequence[str], queries: Any, snap: IndexSnapshot) -> tuple[list[str], Any]:
        """The chunks of ``doc_ids`` and their dot products with the query vectors (one column each).

        Pairs indexed after the last read are fetched from Chroma.
        """
        chunk_ids = [cid for d in doc_ids for cid in snap.chunk_ids.get(d, ())]
        sims = snap.chunk_vectors[[snap.chunk_row[c] for c in chunk_ids]] @ queries if chunk_ids else np.zeros((0, queries.shape[1]))
        unknown = [d for d in doc_ids if d not in snap.chunk_ids]
        if unknown:
            more = self.chunks.client.get(where={"ref_doc_id": {"$in": unknown}}, include=["embeddings", "metadatas"])
            for node_id, meta in zip(more["ids"], more["metadatas"]):
                snap.doc_of_chunk[node_id] = (meta or {}).get("ref_doc_id") or node_id
            if len(more["ids"]):
                chunk_ids += list(more["ids"])
                sims = np.concatenate([sims, np.asarray(more["embeddings"], dtype=np.float32) @ queries])
        return chunk_ids, sims

    @_guarded
    def question_similarities(self, doc_ids: Sequence[str], queries: Any, snap: IndexSnapshot) -> tuple[list[str], Any]:
        """The pairs of ``doc_ids`` that have a question vector, and its dot products with the query vectors."""
        if self.questions is None:
            return [], np.zeros((0, queries.shape[1]))
        have = [d for d in doc_ids if d in snap.question_row]
        sims = snap.question_vectors[[snap.question_row[d] for d in have]] @ queries if have else np.zeros((0, queries.shape[1]))
        missing = [d for d in doc_ids if d not in snap.question_row]
        if missing:
            got = self.questions.client.get(ids=missing, include=["embeddings"])
            if len(got["ids"]):
                have += list(got["ids"])
                sims = np.concatenate([sims, np.asarray(got["embeddings"], dtype=np.float32) @ queries])
        return have, sims

    @_guarded
    def nodes(self, chunk_ids: Sequence[str]) -> dict[str, BaseNode]:
        """LlamaIndex nodes of the given chunks that are still in the index, by id (one Chroma get)."""
        if not chunk_ids:  # get_nodes with no ids returns every node
            return {}
        return {node.node_id: node for node in self.chunks.get_nodes(node_ids=list(chunk_ids))}


def _top(vectors: Any, vector: Sequence[float], k: int, ids: list[str]) -> list[str]:
    """Ids of the ``k`` rows of ``vectors`` most similar to ``vector`` (dot product: the vectors are normalised), best first."""
    if not len(ids):
        return []
    # torch, not numpy: the encoder's threads have just run, and a BLAS pool of numpy's own would fight them for the
    # cores (bench_index's retrieval p50 was several times higher with numpy here).
    sims = torch.from_numpy(vectors) @ torch.tensor(vector, dtype=torch.float32)
    rows = torch.topk(sims, min(k, len(ids))).indices.tolist()
    return [ids[r] for r in rows]


def open_index(settings: Settings, embed_model: Any = None) -> MedQAIndex:
    """Open the index ``settings`` name for search.

    Args:
        settings: Index location, collection and embedding model.
        embed_model: The embedding model (loaded from ``settings`` when omitted).

    Raises:
        IndexMissingError: If the index does not exist or was built with another embedding model.
    """
    chunks = get_collection(settings)  # fail early, with the fix, when there is no index
    try:
        questions = ChromaVectorStore(chroma_collection=get_collection(settings, name=questions_collection_name(settings)))
    except IndexDamagedError:
        raise
    except IndexMissingError:
        logger.warning(
            "index '%s' has no question vectors; retrieval uses chunks only until `python -m rag_app.index` adds them",
            settings.collection,
        )
        questions = None
    return MedQAIndex(
        ChromaVectorStore(chroma_collection=chunks),
        questions,
        embed_model or load_embed_model(settings),
        version=lambda: index_version(settings),
        location=index_location(settings),
        typo_similarity=settings.typo_similarity,
        ask_similarity=settings.ask_similarity,
    )
