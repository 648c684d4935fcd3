"""TREC 2017 LiveQA medical training questions: real consumer messages, for evaluating retrieval.

Evaluation only — never train on these. Relevance labels against MedQuAD are derived, not annotated:
a MedQuAD QA pair is relevant to a question when its answer contains at least 80% of the word 5-grams
(lower-case alphanumeric tokens) of one of the question's reference answers.

    python -m corpus.download liveqa-train      # → data/liveqa-train
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from corpus.errors import CorpusError
from rag_app.text.words import words

#: The two fixed halves of the questions: ``tune`` (to choose settings on) and ``report`` (held out).
HALVES = ("tune", "report")


@dataclass
class LiveQAQuestion:
    """One consumer question with its librarian-selected reference answers.

    Attributes:
        qid: Question id, unique across the files (file stem + ``questionid``).
        subject: The message's subject line (often empty).
        message: The message as the person wrote it.
        answers: Reference answer texts.
        focus: Annotated focus of each sub-question.
        types: Annotated question type of each sub-question.
    """

    qid: str
    subject: str
    message: str
    answers: list[str] = field(default_factory=list)
    focus: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)

    @property
    def query(self) -> str:
        """The retrieval query: ``SUBJECT + ". " + MESSAGE``, exactly as written."""
        return f"{self.subject}. {self.message}"


def load_liveqa(paths: Iterable[str | Path]) -> list[LiveQAQuestion]:
    """Read LiveQA training XML files (or folders holding them).

    Raises:
        FileNotFoundError: If a path does not exist (the message names the download command).
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.glob("*.xml")))
        elif p.is_file():
            files.append(p)
        else:
            raise CorpusError(f"LiveQA path {str(p)!r} does not exist; run `python -m corpus.download liveqa-train`")
    questions = []
    for path in files:
        root = ET.fromstring(path.read_bytes())  # bytes: ElementTree handles Train-2's byte-order mark
        for q in root.iter("NLM-QUESTION"):
            item = LiveQAQuestion(
                qid=f"{path.stem.rsplit('-', 1)[-1]}:{q.get('questionid') or q.get('qid')}",
                subject=" ".join((q.findtext("SUBJECT") or "").split()),
                message=" ".join((q.findtext("MESSAGE") or "").split()),
            )
            for sub in q.iter("SUB-QUESTION"):
                item.focus.append((sub.findtext("ANNOTATIONS/FOCUS") or "").strip())
                item.types.append((sub.findtext("ANNOTATIONS/TYPE") or "").strip())
                item.answers.extend(" ".join((a.text or "").split()) for a in sub.iter("ANSWER") if (a.text or "").strip())
            questions.append(item)
    return questions


def ngrams(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """Word n-grams of lower-case alphanumeric tokens."""
    tokens = words(text)
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def derive_labels(
    questions: Sequence[LiveQAQuestion],
    pairs: dict[str, str],
    threshold: float = 0.8,
    n: int = 5,
) -> dict[str, set[str]]:
    """Relevant QA pairs per question by n-gram containment.

    Args:
        questions: LiveQA questions.
        pairs: ``{doc_id: answer text}`` of the candidate QA pairs (e.g. MedQuAD).
        threshold: Share of a reference answer's n-grams that a pair's answer must contain.
        n: N-gram length.

    Returns:
        ``{qid: {doc_id, ...}}`` for questions with at least one relevant pair.
    """
    index: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for doc_id, answer in pairs.items():
        for gram in ngrams(answer, n):
            index[gram].append(doc_id)
    labels: dict[str, set[str]] = {}
    for q in questions:
        relevant: set[str] = set()
        for answer in q.answers:
            grams = ngrams(answer, n)
            if not grams:
                continue
            hits: dict[str, int] = defaultdict(int)
            for gram in grams:
                for doc_id in index.get(gram, ()):
                    hits[doc_id] += 1
            relevant |= {d for d, c in hits.items() if c / len(grams) >= threshold}
        if relevant:
            labels[q.qid] = relevant
    return labels


def half_of(qid: str) -> str:
    """``"tune"`` or ``"report"``: a fixed function of the question id (SHA-1 parity)."""
    return HALVES[int(hashlib.sha1(qid.encode("utf-8")).hexdigest(), 16) % 2]


def split_halves(qids: Iterable[str]) -> dict[str, list[str]]:
    """``{"tune": [...], "report": [...], "all": [...]}``, each sorted; the halves are disjoint and cover all."""
    qids = sorted(set(qids))
    out: dict[str, list[str]] = {name: [] for name in HALVES}
    for qid in qids:
        out[half_of(qid)].append(qid)
    out["all"] = qids
    return out


def answers_of(documents: Iterable[Any]) -> dict[str, str]:
    """``{doc id: answer text}`` of MedQuAD Documents (text ``"Question: ...\\nAnswer: ..."``)."""
    out = {}
    for doc in documents:
        _, sep, answer = doc.text.partition("\nAnswer: ")
        out[doc.id_] = answer if sep else doc.text
    return out
