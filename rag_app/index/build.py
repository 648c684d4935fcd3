"""Building or updating the Chroma index from documents, incrementally.

Re-running on unchanged documents embeds nothing; changed documents are re-embedded and replaced; documents gone
from the source are deleted. Work is committed in batches, so an interrupted run leaves the previous index usable and
the next run picks up where it stopped. ``python -m rag_app.index`` builds the configured corpus
(:mod:`rag_app.index.__main__`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from llama_index.core import Document
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import MetadataMode, TransformComponent
from llama_index.core.storage.docstore import SimpleDocumentStore
from tqdm.auto import tqdm

from rag_app.config import Settings
from rag_app.errors import DiskFullError, IndexDamagedError
from rag_app.files import atomic_path, disk_full, is_disk_full, write_json_atomic
from rag_app.index.chroma import (
    check_readable,
    chroma_client,
    get_collection,
    guarded,
    index_location,
    manifest_path,
    questions_collection_name,
    set_aside,
    vector_store,
)
from rag_app.index.sources import read_sources
from rag_app.llm.load import embed_workers, load_embed_model, pick_device

logger = logging.getLogger("rag_app")

#: Documents in the first committed batch; each later batch doubles, up to :data:`MAX_BATCH_DOCS`. A small first
#: batch makes a fresh index searchable soon; larger later ones sort more chunks by length together (less padding)
#: and rewrite the document store less often. A crash loses at most one batch of embedding work.
BATCH_DOCS = 512
MAX_BATCH_DOCS = 2048
#: Disk space an indexed MedQuAD QA pair takes (its chunks and question vector in Chroma, the HNSW graphs, the
#: document store): about 30 KB on the full corpus. Used to say how much more space a build needs.
BYTES_PER_DOCUMENT = 30_000


@dataclass
class IndexStats:
    """What an indexing run did."""

    documents: int = 0
    chunks: int = 0
    embedded_documents: int = 0
    embedded_chunks: int = 0
    embedded_questions: int = 0
    unchanged_documents: int = 0
    deleted_documents: int = 0
    skipped: int = 0
    seconds: float = 0.0
    total_chunks: int = 0
    set_aside: str = ""

    def summary(self) -> str:
        """One summary line for the CLI."""
        line = (
            f"indexed {self.documents} documents: {self.embedded_documents} embedded ({self.embedded_chunks} chunks, "
            f"{self.embedded_questions} question vectors), "
            f"{self.unchanged_documents} unchanged, {self.deleted_documents} deleted, {self.skipped} skipped; "
            f"{self.total_chunks} chunks in the index; {self.seconds:.1f} s"
        )
        return f"{self.set_aside}; {line}" if self.set_aside else line


def node_parser(settings: Settings) -> SentenceSplitter:
    """Sentence-aware splitter with deterministic chunk ids (``<doc id>::<n>``), so re-adding is idempotent."""
    return SentenceSplitter(
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
        id_func=lambda i, doc: f"{doc.id_}::{i}",
    )


def embed_texts(embed_model: Any, texts: Sequence[str], workers: int = 1) -> list[list[float]]:
    """Embed ``texts`` shortest first, on ``workers`` threads that share this thread's CPU cores when there are many.

    The encoder pads each batch to its longest text, so batches of similar lengths waste little compute on
    padding. On a CPU the workers beat one encoder on all cores: each runs its own batches with one share of the
    cores (torch's thread count is per thread, so the caller's is left as it was).

    Args:
        embed_model: A LlamaIndex embedding model (its ``embed_batch_size`` texts per encoder call).
        texts: The texts.
        workers: Threads to encode on; 1 encodes in the calling thread.

    Returns:
        One vector per text, in the order of ``texts``.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batch = int(getattr(embed_model, "embed_batch_size", 1) or 1)
    workers = max(1, min(workers, len(texts) // batch))
    # Interleaved shares of the sorted texts: every worker gets the same mix of lengths and ends at about the same time.
    shares = [order[w::workers] for w in range(workers)]

    def encode(share: list[int]) -> list[list[float]]:
        return embed_model.get_text_embedding_batch([texts[i] for i in share])

    if workers == 1:
        encoded = [encode(order)]
    else:
        threads = max(1, torch.get_num_threads() // workers)

        def encode_on_share_of_cores(share: list[int]) -> list[list[float]]:
            torch.set_num_threads(threads)
            return encode(share)

        with ThreadPoolExecutor(workers, thread_name_prefix="medqa-embed") as pool:
            encoded = list(pool.map(encode_on_share_of_cores, shares))
    vectors: list[Any] = [None] * len(texts)
    for share, done in zip(shares, encoded):
        for i, vector in zip(share, done):
            vectors[i] = vector
    return vectors


def embedder(embed_model: Any, workers: int = 1) -> TransformComponent:
    """A pipeline step that gives each node its vector, through :func:`embed_texts`."""

    class Embed(TransformComponent):
        def __call__(self, nodes, **kwargs):
            texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
            for node, vector in zip(nodes, embed_texts(embed_model, texts, workers)):
                node.embedding = vector
            return nodes

    return Embed()


def _load_docstore(path: Path) -> SimpleDocumentStore:
    if path.is_file():
        return SimpleDocumentStore.from_persist_path(str(path))
    return SimpleDocumentStore()


def _persist_docstore(docstore: Any, path: Path) -> None:
    with atomic_path(path) as tmp:  # a crash mid-write never corrupts the previous docstore
        docstore.persist(str(tmp))


def build_index(
    settings: Settings,
    documents: Sequence[Document] | None = None,
    embed_model: Any = None,
    rebuild: bool = False,
    show_progress: bool = True,
    on_progress: Callable[[float, str], None] | None = None,
    discard_damaged: bool = False,
) -> IndexStats:
    """Index ``documents`` (default: the configured corpus) into Chroma, incrementally.

    Uses LlamaIndex's ``IngestionPipeline`` (sentence splitter → embeddings → Chroma) with a
    document store of content hashes, so unchanged documents are skipped and changed ones replaced.

    Args:
        settings: Storage, corpus, chunking and model settings.
        documents: Documents to index instead of reading ``settings.corpus`` (:func:`rag_app.index.sources.read_sources`).
        embed_model: A LlamaIndex embedding model; loaded from settings when omitted.
        rebuild: Drop the collection and its document store first; a damaged store is moved aside
            (``chroma.damaged-<time>``, with the manifest and document store that described it).
        show_progress: Show a progress bar.
        on_progress: Called with ``(fraction 0..1, text)`` as the build goes (e.g. a UI progress bar):
            reading the corpus fills the first 15%, embedding the rest.
        discard_damaged: With ``rebuild``, delete a damaged store instead of moving it aside.

    Returns:
        Counts of what was embedded, skipped and deleted.

    Raises:
        IndexDamagedError: If the store can't be read (and ``rebuild`` is False).
        DiskFullError: If the disk fills up; the batches committed before stay in the index.
    """
    stats = IndexStats()
    if rebuild:
        stats.set_aside = _drop(settings, discard_damaged)
    elif manifest_path(settings).is_file():
        check_readable(settings)  # adding to a damaged store would only hide the damage
    try:
        with guarded(index_location(settings)):
            return _build(settings, stats, documents, embed_model, show_progress, on_progress)
    except BaseException as err:
        if not (isinstance(err, DiskFullError) or is_disk_full(err)):
            raise
        left = max(stats.documents - stats.unchanged_documents - stats.embedded_documents, 0)
        kept = (
            f"the index keeps the {stats.unchanged_documents + stats.embedded_documents:,} documents committed so far and "
            "the next `python -m rag_app.index` resumes from there"
        )
        raise disk_full(settings.storage_dir, what="indexing", kept=kept, need=left * BYTES_PER_DOCUMENT or None) from err


def _drop(settings: Settings, remove_damaged: bool) -> str:
    """Empty the index for a rebuild; a damaged store is moved aside (or removed). Says what happened to a damaged one."""
    try:
        check_readable(settings)
        client = chroma_client(settings)
        with guarded(index_location(settings)):
            existing = {c if isinstance(c, str) else c.name for c in client.list_collections()}
            for name in (settings.collection, questions_collection_name(settings)):
                if name in existing:
                    client.delete_collection(name)
    except IndexDamagedError as err:
        if settings.server_mode:
            raise
        logger.info("rebuilding: %s", err)
        aside = set_aside(settings, remove=remove_damaged)
        return f"the damaged index was {'removed' if aside is None else f'moved to {aside}'}"
    settings.docstore_path.unlink(missing_ok=True)
    return ""


def _build(
    settings: Settings,
    stats: IndexStats,
    documents: Sequence[Document] | None,
    embed_model: Any,
    show_progress: bool,
    on_progress: Callable[[float, str], None] | None,
) -> IndexStats:
    report_progress = on_progress or (lambda fraction, text: None)
    started = time.perf_counter()
    if documents is None:
        report_progress(0.0, "Reading the corpus…")
        documents, report = read_sources(settings.corpus, show_progress=show_progress)
        stats.skipped = report.skipped
        logger.info("corpus: %s", report.summary())
    report_progress(0.15, f"Read {len(documents):,} documents")
    store = vector_store(settings, create=True)
    questions = get_collection(settings, create=True, name=questions_collection_name(settings))
    docstore = _load_docstore(settings.docstore_path)
    stats.documents = len(documents)
    known = {doc_id: h for h, doc_id in docstore.get_all_document_hashes().items()}
    todo = [d for d in documents if known.get(d.id_) != d.hash]
    # The collections that answer patients' messages most often first: a chat using the index while it is
    # built (the app does) finds useful sources soonest.
    todo.sort(key=lambda d: -settings.source_prior.get(str((d.metadata or {}).get("collection") or ""), 0.0))
    stats.unchanged_documents = len(documents) - len(todo)

    # Question vectors: for changed documents, and for any missing (an index built before they existed).
    have_question = {d.id_ for d in documents if _question_of(d)}
    stored_questions = set(questions.get(include=[])["ids"]) if have_question else set()
    changed = {d.id_ for d in todo}
    todo_questions = [d for d in documents if d.id_ in have_question and (d.id_ in changed or d.id_ not in stored_questions)]
    embed_model = embed_model if embed_model is not None or not (todo or todo_questions) else load_embed_model(settings)

    workers = embed_workers(settings, pick_device(settings.device)) if todo or todo_questions else 1
    if todo:  # the embedding model is only loaded when something needs embedding
        pipeline = IngestionPipeline(
            transformations=[node_parser(settings), embedder(embed_model, workers)],
            vector_store=store,
            docstore=docstore,
            docstore_strategy=DocstoreStrategy.UPSERTS,
        )
        bar = tqdm(total=len(todo), desc="Embedding", unit="doc", disable=not show_progress)
        pending = {d.id_ for d in todo_questions}
        for start, stop in batch_bounds(len(todo)):
            batch = list(todo[start:stop])
            nodes = pipeline.run(documents=batch, show_progress=False)
            # The batch's question vectors too, so every committed batch is fully searchable.
            asked = [d for d in batch if d.id_ in pending]
            stats.embedded_questions += _embed_questions(questions, asked, embed_model, workers, False) if asked else 0
            pending -= {d.id_ for d in asked}
            _persist_docstore(docstore, settings.docstore_path)
            stats.embedded_documents += len(batch)  # committed: the document store says so
            stats.embedded_chunks += len(nodes)
            stats.total_chunks = store._collection.count()
            _write_manifest(settings, stats, docstore, building=True)  # readers see the new batch
            bar.update(len(batch))
            done = start + len(batch)
            report_progress(0.15 + 0.85 * done / len(todo), f"Embedding: {done:,}/{len(todo):,} documents")
        bar.close()
        todo_questions = [d for d in todo_questions if d.id_ in pending]
    if todo_questions:
        stats.embedded_questions += _embed_questions(questions, todo_questions, embed_model, workers, show_progress)

    current = {d.id_ for d in documents}
    stale = [doc_id for doc_id in known if doc_id not in current]
    gone_questions = sorted((stored_questions - have_question) | (set(stale) & stored_questions))
    if gone_questions:
        questions.delete(ids=gone_questions)
    for doc_id in stale:
        store.delete(doc_id)
        docstore.delete_document(doc_id, raise_error=False)
    if stale:
        _persist_docstore(docstore, settings.docstore_path)
    stats.deleted_documents = len(stale)
    stats.total_chunks = store._collection.count()
    stats.seconds = time.perf_counter() - started
    _write_manifest(settings, stats, docstore)
    report_progress(1.0, "Done")
    return stats


def batch_bounds(total: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each committed batch of ``total`` documents: :data:`BATCH_DOCS` first, then doubling."""
    bounds, start, size = [], 0, BATCH_DOCS
    while start < total:
        bounds.append((start, min(start + size, total)))
        start += size
        size = min(size * 2, max(MAX_BATCH_DOCS, BATCH_DOCS))
    return bounds


def _question_of(document: Any) -> str:
    return str((document.metadata or {}).get("question") or "").strip()


def _embed_questions(collection: Any, documents: Sequence[Any], embed_model: Any, workers: int, show_progress: bool) -> int:
    """Embed each document's question alone and upsert it (id = document id) with its topic metadata."""
    bar = tqdm(total=len(documents), desc="Embedding questions", unit="q", disable=not show_progress)
    # Questions are a dozen tokens: batches 4x larger than for passages keep the matrix units busy.
    batch_size = getattr(embed_model, "embed_batch_size", None)
    bigger = batch_size and hasattr(embed_model, "model_copy")
    question_encoder = embed_model.model_copy(update={"embed_batch_size": batch_size * 4}) if bigger else embed_model
    documents = sorted(documents, key=lambda d: len(_question_of(d)))  # similar lengths share a batch
    for start in range(0, len(documents), BATCH_DOCS):
        batch = documents[start : start + BATCH_DOCS]
        texts = [_question_of(d) for d in batch]
        vectors = embed_texts(question_encoder, texts, workers)
        metadatas = [
            {
                "ref_doc_id": d.id_,
                "focus": str(d.metadata.get("focus") or ""),
                "synonyms": str(d.metadata.get("synonyms") or ""),
                "question_type": str(d.metadata.get("question_type") or ""),
                "collection": str(d.metadata.get("collection") or ""),
            }
            for d in batch
        ]
        collection.upsert(ids=[d.id_ for d in batch], embeddings=vectors, documents=texts, metadatas=metadatas)
        bar.update(len(batch))
    bar.close()
    return len(documents)


def _write_manifest(settings: Settings, stats: IndexStats, docstore: Any, building: bool = False) -> None:
    """Describe the index content in ``index_manifest.json``; rewritten only when the content changed.

    The file is what pipelines (DVC) depend on: the Chroma files themselves change on every read. While a
    build runs it is rewritten after every committed batch (``building``: true, ``indexed_documents`` so far),
    so readers (:func:`index_version`) see each batch.
    """
    hashes = docstore.get_all_document_hashes()
    digest = hashlib.sha256("".join(sorted(hashes)).encode()).hexdigest()
    path = manifest_path(settings)
    content = {
        "collection": settings.collection,
        "corpus": settings.corpus,
        "embed_model": settings.embed_model,
        "chunk_size": settings.chunk_size,
        "chunk_overlap": settings.chunk_overlap,
        "documents": stats.documents,
        "indexed_documents": len(hashes),
        "building": building,
        "chunks": stats.total_chunks,
        "content_hash": digest,
    }
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = {}
        if {k: previous.get(k) for k in content} == content:
            return
    manifest = {**content, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "last_run": asdict(stats)}
    write_json_atomic(path, manifest)
