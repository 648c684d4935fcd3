"""Corpus loaders: every source becomes LlamaIndex ``Document``s with stable ids and shared metadata keys.

Sources: MedQuAD XML folders, seed-format (``Description``/``Patient``/``Doctor``) CSV/Parquet files or
dataset names, and folders of ``.txt``/``.md``/``.html``/``.pdf`` files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from llama_index.core import Document

from corpus.errors import CorpusError

from corpus.files import load_folder
from corpus.medquad import load_medquad
from corpus.report import LoadReport
from corpus.seed import load_seed_dataset, load_seed_file


def load_source(source: str, report: LoadReport, show_progress: bool = False) -> list[Document]:
    """Load one corpus source, choosing the loader by what the path holds.

    Raises:
        CorpusError: If the source does not exist and is not a dataset name.
    """
    from corpus.medquad import is_medquad_dir

    path = Path(source).expanduser()
    if path.is_dir():
        if is_medquad_dir(path):
            return load_medquad(path, report, show_progress=show_progress)
        return load_folder(path, report, show_progress=show_progress)
    if path.is_file():
        if path.suffix.lower() in {".csv", ".parquet", ".pq"}:
            return load_seed_file(path, report)
        raise CorpusError(f"corpus file {source!r} is not a .csv or .parquet file; point MEDQA_CORPUS at a folder or a seed-format file")
    if "/" in source and not source.startswith((".", "/", "~")) and source.count("/") == 1:
        return load_seed_dataset(source, report=report)
    raise CorpusError(
        f"corpus path {source!r} does not exist; run `python -m corpus.download medquad` "
        "(or set MEDQA_CORPUS to your MedQuAD folder, e.g. MEDQA_CORPUS=../shared/data/medquad)"
    )


def load_corpus(sources: str | Path | Iterable[str | Path], report: LoadReport | None = None, show_progress: bool = False) -> tuple[list[Document], LoadReport]:
    """Load and concatenate several sources.

    Args:
        sources: One path or dataset name, or several (see :func:`load_source`).
        report: Collects counts and problems; created when omitted.
        show_progress: Show progress bars while reading.

    Returns:
        ``(documents, report)``; documents with duplicate ids keep the first occurrence.

    Raises:
        CorpusError: If no source is given or a source cannot be used.
    """
    if isinstance(sources, (str, Path)):  # one source, not the characters of its name
        sources = [sources]
    sources = [s for s in sources if str(s).strip()]
    if not sources:
        raise CorpusError("no corpus configured; run `python -m corpus.download medquad` or set MEDQA_CORPUS")
    report = report if report is not None else LoadReport()
    docs: list[Document] = []
    ids: set[str] = set()
    for source in sources:
        for doc in load_source(str(source), report, show_progress=show_progress):
            if doc.id_ in ids:
                report.problems.append((doc.id_, "duplicate document id; kept the first"))
                continue
            ids.add(doc.id_)
            docs.append(doc)
    return docs, report


__all__ = ["CorpusError", "LoadReport", "load_corpus", "load_source", "load_medquad", "load_folder", "load_seed_file", "load_seed_dataset"]
