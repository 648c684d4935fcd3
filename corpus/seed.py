"""Load the seed project's chat dataset format (columns ``Description``, ``Patient``, ``Doctor``).

That is the layout of the ``ruslanmv/ai-medical-chatbot`` dataset: a CSV or Parquet file, or the
dataset name when the Hugging Face hub is reachable.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Iterable, Mapping

from llama_index.core import Document

from corpus.errors import CorpusError
from corpus.report import LoadReport

SEED_COLUMNS = ("Description", "Patient", "Doctor")
SEED_METADATA_KEYS = ("source", "collection", "document_id", "question_id", "question", "question_type", "focus", "url")


def _rows_from_file(path: Path) -> tuple[list[str], Iterable[Mapping[str, object]]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        handle = path.open(newline="", encoding="utf-8", errors="replace")
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), reader
    if suffix in {".parquet", ".pq"}:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return list(table.column_names), table.to_pylist()
    raise CorpusError(f"{path}: seed-format files must be .csv or .parquet")


def rows_to_documents(rows: Iterable[Mapping[str, object]], collection: str, report: LoadReport) -> list[Document]:
    """Turn seed-format rows into Documents; rows missing a question or answer are reported and skipped."""
    docs: list[Document] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        description = str(row.get("Description") or "").strip()
        patient = str(row.get("Patient") or "").strip()
        doctor = str(row.get("Doctor") or "").strip()
        if not doctor:
            report.unanswered += 1
            continue
        if not (description or patient):
            report.skip(f"{collection} row {i}", "no Description or Patient text")
            continue
        # Content-derived ids stay stable when rows are re-ordered or inserted.
        key = hashlib.sha1(f"{description}\x00{patient}".encode()).hexdigest()[:16]
        seen[key] = seen.get(key, 0) + 1
        doc_id = f"seed/{collection}/{key}" + (f"#{seen[key]}" if seen[key] > 1 else "")
        question = description or patient.split("\n")[0][:200]
        docs.append(
            Document(
                id_=doc_id,
                text=f"Question: {description}\n{patient}\nAnswer: {doctor}".replace("\n\n", "\n"),
                metadata={
                    "source": "ai-medical-chatbot",
                    "collection": collection,
                    "document_id": key,
                    "question_id": doc_id,
                    "question": question,
                    "question_type": "",
                    "focus": "",
                    "url": "",
                    "patient": patient,
                },
                excluded_embed_metadata_keys=[*SEED_METADATA_KEYS, "patient"],
                excluded_llm_metadata_keys=[*SEED_METADATA_KEYS, "patient"],
            )
        )
    return docs


def load_seed_file(path: str | Path, report: LoadReport | None = None) -> list[Document]:
    """Load a seed-format CSV/Parquet file.

    Raises:
        ValueError: If the file lacks one of the ``Description``/``Patient``/``Doctor`` columns.
    """
    path = Path(path)
    report = report if report is not None else LoadReport()
    columns, rows = _rows_from_file(path)
    missing = [c for c in SEED_COLUMNS if c not in columns]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {missing}; seed-format files need {list(SEED_COLUMNS)}")
    docs = rows_to_documents(rows, path.stem, report)
    report.loaded += len(docs)
    return docs


def load_seed_dataset(name: str, split: str = "train", report: LoadReport | None = None) -> list[Document]:
    """Load a seed-format dataset by hub name (needs network or a local `datasets` cache)."""
    import datasets


    report = report if report is not None else LoadReport()
    try:
        ds = datasets.load_dataset(name, split=split)
    except (ConnectionError, FileNotFoundError, OSError, ValueError) as err:
        # "data/medquad" reads like a hub name too: say both things it could have been.
        raise CorpusError(
            f"corpus {name!r} is neither a local folder/file nor a reachable dataset ({type(err).__name__}); "
            "run `python -m corpus.download medquad` or set MEDQA_CORPUS to your MedQuAD folder, "
            "e.g. MEDQA_CORPUS=../shared/data/medquad"
        ) from None
    missing = [c for c in SEED_COLUMNS if c not in ds.column_names]
    if missing:
        raise CorpusError(f"dataset {name!r} lacks column(s) {missing}; expected {list(SEED_COLUMNS)}")
    docs = rows_to_documents(ds, name.replace("/", "__"), report)
    report.loaded += len(docs)
    return docs
