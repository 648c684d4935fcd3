"""Access to the Chroma index: the client, its collections, their records, and the manifest that describes them.

The index is two collections: the chunks (``settings.collection``) and one question-only vector per QA pair (the same
name with :data:`QUESTIONS_SUFFIX`). A manifest beside them (:func:`manifest_path`) says what the index holds; it is
rewritten whenever the content changes, so its modification time is the index's version (:func:`index_version`).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import chromadb
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import InternalError
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node
from llama_index.vector_stores.chroma import ChromaVectorStore

from rag_app.config import Settings
from rag_app.errors import IndexDamagedError, IndexMissingError, MedQAError
from rag_app.files import disk_full, is_disk_full, remove_path

#: Suffix of the question-vector collection (see :func:`questions_collection_name`).
QUESTIONS_SUFFIX = "-questions"
#: The file that describes the default collection's content (written by :mod:`rag_app.index.build`).
MANIFEST = "index_manifest.json"
#: The default collection, whose manifest keeps the plain name the DVC pipeline tracks.
DEFAULT_COLLECTION = Settings.model_fields["collection"].default
#: Held while this process opens a Chroma client or moves a damaged folder aside, so neither sees the other half done.
_CLIENTS = threading.RLock()


def manifest_path(settings: Settings) -> Path:
    """Where the manifest of ``settings``' collection lives: one per collection and per Chroma server.

    Like the document store (``settings.docstore_path``), so indexes of different collections in one storage folder
    never describe each other.
    """
    if settings.collection == DEFAULT_COLLECTION and not settings.server_mode:
        return settings.storage_dir / MANIFEST
    return settings.storage_dir / f"{Path(MANIFEST).stem}-{settings.docstore_path.stem}.json"


def local_companions(settings: Settings) -> list[Path]:
    """The manifests and document stores of every collection in ``settings``' Chroma folder (not a server's)."""
    names = {settings.collection}
    for path in settings.storage_dir.glob(f"{Path(MANIFEST).stem}*.json"):
        try:
            names.add(json.loads(path.read_text())["collection"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not readable: nothing to say which collection it describes, so it stays
    paths = []
    for name in sorted(names):
        local = settings.model_copy(update={"collection": name, "chroma_host": None})
        paths += [p for p in (manifest_path(local), local.docstore_path) if p.exists()]
    return paths


def index_location(settings: Settings) -> str:
    """Where the index lives, for messages: the Chroma folder, or the Chroma server."""
    return f"Chroma server {settings.chroma_host}:{settings.chroma_port}" if settings.server_mode else str(settings.chroma_dir)


def read_error(location: str, err: BaseException) -> MedQAError | None:
    """The user-facing error for an exception raised by Chroma, or None when it is not one of a damaged or full store.

    Chroma reports a store it can't read (an SQLite file or an HNSW segment cut short or corrupted) as an
    ``InternalError``, SQLite as a ``DatabaseError`` and its Rust core, at worst, as a panic.
    """
    if isinstance(err, MedQAError):
        return None
    if is_disk_full(err):
        return disk_full(location, what="writing the index", kept="what the index held before is kept")
    if isinstance(err, (InternalError, sqlite3.DatabaseError)) or type(err).__name__ == "PanicException":
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        return IndexDamagedError(
            f"the index in {location} is damaged and can't be read ({reason}); "
            "rebuild it with `python -m rag_app.index --rebuild` (the damaged folder is moved aside)"
        )
    return None


@contextmanager
def guarded(location: str) -> Iterator[None]:
    """Turn Chroma's errors for a damaged store or a full disk into :class:`IndexDamagedError` / ``DiskFullError``."""
    try:
        yield
    except BaseException as err:
        translated = read_error(location, err)
        if translated is None:
            raise
        raise translated from err


def check_readable(settings: Settings) -> None:
    """Read a little of every collection of the index, its search graph included, so a damaged store shows now.

    Raises:
        IndexDamagedError: If a collection can't be read.
    """
    client = chroma_client(settings)
    with guarded(index_location(settings)):
        for listed in client.list_collections():
            collection = client.get_collection(listed if isinstance(listed, str) else listed.name)
            if collection.count():
                first = collection.get(limit=1, include=["embeddings"])
                collection.query(query_embeddings=[list(first["embeddings"][0])], n_results=1, include=[])


def set_aside(settings: Settings, remove: bool = False) -> Path | None:
    """Move a damaged Chroma folder aside (``chroma.damaged-<time>``), or delete it, with the manifest and document store.

    The manifests and document stores of its collections describe what the damaged store held, so they go with it:
    the next build starts from an empty index that they describe correctly.

    Returns:
        Where the damaged folder went, or None when it was removed.
    """
    with _CLIENTS:  # no client of this process may open the old files while they move
        SharedSystemClient.clear_system_cache()  # this process's open client still holds the old files
        source = settings.chroma_dir
        companions = local_companions(settings)
        if remove:
            shutil.rmtree(source, ignore_errors=True)
            for path in companions:
                remove_path(path)
            return None
        aside = source.with_name(f"{source.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        if source.exists():
            source.rename(aside)
        aside.mkdir(parents=True, exist_ok=True)
        for path in companions:
            path.rename(aside / f"medqa-{path.name}")
        return aside


def chroma_client(settings: Settings) -> chromadb.ClientAPI:
    """Embedded ``PersistentClient`` under the storage dir, or an ``HttpClient`` when a host is set.

    Telemetry is always off.
    """
    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.server_mode:
        return chromadb.HttpClient(host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings)
    # The chat's page opens a client while a rebuild may be moving a damaged folder aside (set_aside) in another thread.
    with _CLIENTS:
        settings.chroma_dir.mkdir(parents=True, exist_ok=True)
        try:
            return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)
        except Exception as err:
            if not (settings.chroma_dir / "chroma.sqlite3").is_file():
                raise
            # Chroma wraps a database it can't open in other errors (and may fail again releasing it): find the cause,
            # and forget the half-started client so the next attempt (after a rebuild) starts afresh.
            SharedSystemClient._identifier_to_system.pop(str(settings.chroma_dir), None)
            cause: BaseException | None = err
            while cause is not None and read_error("", cause) is None:
                cause = cause.__cause__ or cause.__context__
            raise read_error(index_location(settings), cause or InternalError(str(err))) from err


def questions_collection_name(settings: Settings) -> str:
    """Name of the collection holding one question-only vector per QA pair, beside the chunk collection."""
    return f"{settings.collection}{QUESTIONS_SUFFIX}"


def get_collection(settings: Settings, create: bool = False, name: str | None = None) -> chromadb.Collection:
    """Open the configured collection, checking it was built with the configured embedding model.

    Args:
        settings: Settings naming the collection and embedding model.
        create: Create the collection when it does not exist.
        name: Another collection of the same index (e.g. :func:`questions_collection_name`).

    Raises:
        IndexMissingError: If it does not exist (and ``create`` is False), or was embedded with another model.
    """
    client = chroma_client(settings)
    name = name or settings.collection
    with guarded(index_location(settings)):
        names = {c if isinstance(c, str) else c.name for c in client.list_collections()}
        if name not in names:
            if not create:
                raise IndexMissingError(
                    f"no index '{name}' in {index_location(settings)}; build it with `python -m rag_app.index` (or `make index`)"
                )
            return client.create_collection(
                name,
                metadata={"hnsw:space": "cosine", "embed_model": settings.embed_model, "chunk_size": settings.chunk_size},
            )
        collection = client.get_collection(name)
    built_with = (collection.metadata or {}).get("embed_model")
    if built_with and built_with != settings.embed_model:
        raise IndexMissingError(
            f"index '{name}' was built with embedding model {built_with!r} but MEDQA_EMBED_MODEL is "
            f"{settings.embed_model!r}; rebuild with `python -m rag_app.index --rebuild` or set MEDQA_EMBED_MODEL={built_with}"
        )
    return collection


def vector_store(settings: Settings, create: bool = False) -> ChromaVectorStore:
    """LlamaIndex ``ChromaVectorStore`` over the configured collection."""
    return ChromaVectorStore(chroma_collection=get_collection(settings, create=create))


def iter_records(collection: Any, include: Sequence[str], page: int = 5000) -> Iterator[tuple[Any, ...]]:
    """``(id, *fields)`` of every record of a Chroma collection, ``fields`` as named by ``include``, a page at a time."""
    for offset in range(0, collection.count(), page):
        got = collection.get(include=list(include), limit=page, offset=offset)
        yield from zip(got["ids"], *(got[field] for field in include))


def record_node(node_id: str, text: str, metadata: dict[str, Any] | None) -> TextNode:
    """The LlamaIndex node of one Chroma record (as ``ChromaVectorStore`` stores it), under its record id."""
    node = metadata_dict_to_node(metadata or {}, text=text)
    node.id_ = node_id
    return node


def load_nodes(settings: Settings) -> list[TextNode]:
    """Every chunk stored in the collection, as LlamaIndex nodes (text and metadata), in id order."""
    collection = get_collection(settings)
    with guarded(index_location(settings)):
        nodes = [record_node(*record) for record in iter_records(collection, ["documents", "metadatas"])]
    nodes.sort(key=lambda n: n.id_)
    return nodes


def index_version(settings: Settings) -> int | None:
    """A value that changes whenever the index content changes: the manifest's modification time (ns), or None."""
    try:
        return manifest_path(settings).stat().st_mtime_ns
    except OSError:
        return None


def index_status(settings: Settings) -> dict[str, Any]:
    """Documents, chunks, corpus and last build time of the index, or ``{"exists": False, "error": ...}``.

    A store that can't be read says ``"damaged": True`` (``python -m rag_app.index --rebuild`` recovers).
    """
    try:
        collection = get_collection(settings)
        check_readable(settings)
    except IndexDamagedError as err:
        return {"exists": False, "damaged": True, "error": str(err)}
    except IndexMissingError as err:
        return {"exists": False, "error": str(err)}
    path = manifest_path(settings)
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    return {
        "exists": True,
        "chunks": collection.count(),
        "documents": manifest.get("documents"),
        "corpus": manifest.get("corpus", settings.corpus),
        "built_at": manifest.get("built_at"),
        "embed_model": (collection.metadata or {}).get("embed_model"),
        # No manifest yet: a first build is committing its first batch.
        "building": bool(manifest.get("building")) or not manifest,
        "indexed_documents": manifest.get("indexed_documents", manifest.get("documents")),
    }
