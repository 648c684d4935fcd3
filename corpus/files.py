"""Load a folder of ``.txt``/``.md``/``.html``/``.pdf`` files with LlamaIndex's SimpleDirectoryReader."""

from __future__ import annotations

from pathlib import Path

from llama_index.core import Document, SimpleDirectoryReader

from corpus.report import LoadReport

FILE_EXTENSIONS = (".txt", ".md", ".html", ".htm", ".pdf")
_TEXT_EXTENSIONS = {".txt", ".md", ".html", ".htm"}


def load_folder(root: str | Path, report: LoadReport | None = None, show_progress: bool = False) -> list[Document]:
    """Read every supported file below ``root``; unreadable files are reported and skipped.

    Files that are not valid UTF-8 are named in the report and read with replacement characters.
    Document ids are the files' paths relative to ``root``, so they stay stable between runs.
    """
    root = Path(root)
    report = report if report is not None else LoadReport()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in FILE_EXTENSIONS)
    if not files:
        report.skip(str(root), f"no {'/'.join(FILE_EXTENSIONS)} files found")
        return []
    for path in files:
        if path.suffix.lower() in _TEXT_EXTENSIONS:
            try:
                path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as err:
                report.problems.append((str(path), f"not valid UTF-8 ({err.reason} at byte {err.start}); read with replacement characters"))
    reader = SimpleDirectoryReader(
        input_files=files,
        encoding="utf-8",
        errors="replace",
        raise_on_error=False,
    )
    docs: list[Document] = []
    loaded_paths: set[str] = set()
    for doc in reader.load_data(show_progress=show_progress):
        file_path = Path(doc.metadata.get("file_path", ""))
        if not doc.text.strip():
            continue
        loaded_paths.add(str(file_path))
        rel = file_path.relative_to(root.resolve()) if file_path.is_absolute() and file_path.is_relative_to(root.resolve()) else file_path.name
        page = doc.metadata.get("page_label")
        doc.id_ = f"files/{root.name}/{rel}" + (f"#p{page}" if page else "")
        title = file_path.stem.replace("_", " ").replace("-", " ")
        doc.metadata.update(
            {
                "source": "files",
                "collection": root.name,
                "document_id": str(rel),
                "question_id": doc.id_,
                "question": "",
                "question_type": "",
                "focus": title,
                "url": file_path.as_uri() if file_path.is_absolute() else "",
            }
        )
        doc.excluded_embed_metadata_keys = list(doc.metadata)
        doc.excluded_llm_metadata_keys = list(doc.metadata)
        docs.append(doc)
    for path in files:
        if str(path.resolve()) not in loaded_paths and str(path) not in loaded_paths:
            if path.stat().st_size == 0:
                report.skip(str(path), "empty file")
            else:
                report.skip(str(path), "could not be read")
    report.loaded += len(docs)
    return docs
