"""Load MedQuAD (NIH; CC BY 4.0) XML collections into LlamaIndex Documents.

Layout: ``<root>/<collection>/<document>.xml``, each file a ``<Document>`` with a
``<Focus>`` and ``<QAPairs>``. One Document is produced per QA pair that has an answer.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

from llama_index.core import Document

from corpus.errors import CorpusError
from corpus.report import LoadReport
from rag_app.index.topics import SYNONYM_SEPARATOR

#: Metadata keys carried by every MedQuAD Document (and by the chunks made from it).
METADATA_KEYS = (
    "source",
    "collection",
    "document_id",
    "question_id",
    "question",
    "question_type",
    "focus",
    "synonyms",
    "url",
)

_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def is_medquad_dir(path: Path) -> bool:
    """True when ``path`` looks like a MedQuAD root (collection folders of XML files) or one collection."""
    if not path.is_dir():
        return False
    if any(path.glob("*.xml")) and _looks_like_medquad_xml(next(path.glob("*.xml"))):
        return True
    for sub in path.iterdir():
        if sub.is_dir():
            first = next(sub.glob("*.xml"), None)
            if first is not None and _looks_like_medquad_xml(first):
                return True
    return False


def _looks_like_medquad_xml(path: Path) -> bool:
    try:
        head = path.read_bytes()[:4096]
    except OSError:
        return False
    return any(tag in head for tag in (b"<Document", b"<doc ", b"<DiseaseFile")) and any(
        tag in head for tag in (b"<QAPairs", b"<qaPairs", b"<Focus", b"<doctitle-focus")
    )


def clean_text(text: str | None) -> str:
    """Unescape entities (also double-escaped ones) and normalise whitespace, keeping paragraphs."""
    text = html.unescape(text or "")
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    text = "\n".join(lines)
    return _BLANK_LINES.sub("\n\n", text).strip()


def iter_medquad_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Yield ``(collection, xml_path)`` in a stable order for a MedQuAD root or a single collection."""
    if any(root.glob("*.xml")):
        for path in sorted(root.glob("*.xml")):
            yield root.name, path
        return
    for collection in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(collection.glob("*.xml")):
            yield collection.name, path


# MedQuAD's collections use three spellings of one schema (e.g. NINDS uses <doc>/<pair>/<question>).
_ROOT_TAGS = {"document", "doc", "diseasefile"}
_FOCUS_TAGS = {"focus", "doctitle-focus"}
_PAIR_TAGS = {"qapair", "pair"}


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in element if c.tag.lower() == name), None)


def parse_medquad_file(collection: str, path: Path, report: LoadReport) -> list[Document]:
    """Parse one MedQuAD XML file; problems are recorded in ``report`` and yield no Documents."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError, UnicodeDecodeError, ValueError) as err:
        report.skip(str(path), f"malformed XML ({err})")
        return []
    if root.tag.lower() not in _ROOT_TAGS:
        report.skip(str(path), f"root element is <{root.tag}>, expected <Document>")
        return []
    url = root.get("url", "")
    focus_el = next((c for c in root if c.tag.lower() in _FOCUS_TAGS), None)
    focus = clean_text(focus_el.text if focus_el is not None else "")
    # <FocusAnnotations><Synonyms><Synonym>: the topic's other names (GARD, GHR, MedlinePlus collections).
    synonyms = list(dict.fromkeys(
        name for name in (clean_text(el.text or "") for el in root.iter() if el.tag.lower() == "synonym")
        if name and name.lower() != focus.lower()
    ))
    document_id = root.get("id") or root.get("docid") or root.get("fid") or path.stem
    docs: list[Document] = []
    seen: set[str] = set()
    for pair in (el for el in root.iter() if el.tag.lower() in _PAIR_TAGS):
        question_el = _child(pair, "question")
        answer_el = _child(pair, "answer")
        question = clean_text(question_el.text if question_el is not None else "")
        answer = clean_text("".join(answer_el.itertext()) if answer_el is not None else "")
        if not answer:
            report.unanswered += 1
            continue
        if not question:
            report.skip(f"{path} (QAPair pid={pair.get('pid')})", "answer without a question")
            continue
        qid = (question_el.get("qid") if question_el is not None else None) or f"pid{pair.get('pid')}"
        doc_id = f"medquad/{collection}/{path.stem}/{qid}"
        if doc_id in seen:  # a repeated qid inside one file: keep both, ids stay stable by order
            doc_id = f"{doc_id}#{pair.get('pid')}"
        seen.add(doc_id)
        metadata = {
            "source": "MedQuAD",
            "collection": collection,
            "document_id": document_id,
            "question_id": qid,
            "question": question,
            "question_type": (question_el.get("qtype") if question_el is not None else "") or "",
            "focus": focus,
            "synonyms": SYNONYM_SEPARATOR.join(synonyms),
            "url": url,
        }
        docs.append(
            Document(
                id_=doc_id,
                text=f"Question: {question}\nAnswer: {answer}",
                metadata=metadata,
                # Text already holds the question; keep metadata out of embeddings and prompts.
                excluded_embed_metadata_keys=list(METADATA_KEYS),
                excluded_llm_metadata_keys=list(METADATA_KEYS),
            )
        )
    return docs


def load_medquad(root: str | Path, report: LoadReport | None = None, show_progress: bool = False) -> list[Document]:
    """Load every answered QA pair under a MedQuAD root (or one collection folder).

    Args:
        root: The MedQuAD folder, e.g. ``../shared/data/medquad``.
        report: Collects counts and skipped files; a new one is made when omitted.
        show_progress: Show a progress bar over files.

    Returns:
        Documents with stable ids ``medquad/<collection>/<file>/<qid>``.

    Raises:
        FileNotFoundError: If ``root`` does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(
            f"MedQuAD folder {str(root)!r} does not exist; run `python -m corpus.download medquad` or set MEDQA_CORPUS"
        )
    report = report if report is not None else LoadReport()
    files = list(iter_medquad_files(root))
    if show_progress:
        from tqdm.auto import tqdm

        files = tqdm(files, desc="Reading MedQuAD", unit="file")
    docs: list[Document] = []
    for collection, path in files:
        docs.extend(parse_medquad_file(collection, path, report))
    report.loaded += len(docs)
    return docs
