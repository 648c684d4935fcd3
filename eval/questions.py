"""The questions ``python -m eval.compare`` asks: MedQuAD's held-out test split or real consumer questions (LiveQA)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, Sequence

from corpus import load_corpus
from corpus.liveqa import answers_of, derive_labels, half_of, load_liveqa
from eval.arguments import CompareArguments, EvalError
from finetune.data import normalize_focus, read_manifest, read_split


def load_test_split(args: CompareArguments, settings: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A seeded sample of ``--limit`` questions from exactly ``test.jsonl``, and its manifest.

    Raises:
        EvalError: If the split or its manifest is missing.
    """
    split_dir = Path(args.split_dir) if args.split_dir else settings.storage_dir / "splits"
    test = split_dir / "test.jsonl"
    manifest = read_manifest(split_dir)
    if not test.is_file() or manifest is None:
        raise EvalError(f"no test split in {split_dir}; write it with `python -m finetune.data` (or pass --split_dir)")
    rows = read_split(test, required=("question", "answer", "doc_id"))
    if args.limit <= 0:
        raise EvalError(f"--limit must be positive, got {args.limit}")
    rows = sorted(rows, key=lambda r: r["doc_id"])
    rows = random.Random(args.seed).sample(rows, min(args.limit, len(rows)))
    rows = [{**r, "references": [r["answer"]], "relevant": [r["doc_id"]], "subset": None} for r in rows]
    return rows, manifest


def default_liveqa_dir() -> Path:
    """``../shared/data/liveqa-train`` when it exists (beside a checkout), else ``data/liveqa-train``."""
    shared = Path("..") / "shared" / "data" / "liveqa-train"
    return shared if shared.is_dir() else Path("data") / "liveqa-train"


def load_liveqa_rows(args: CompareArguments, settings: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The LiveQA training questions of ``--half`` as evaluation rows, with their relevant MedQuAD pairs.

    Each row: ``question`` (``SUBJECT. MESSAGE`` as written), ``references`` (NLM's answers; ROUGE scores the
    best-matching one), ``relevant`` (MedQuAD pair ids holding >= 80% of a reference's 5-grams), ``subset``
    (``answerable`` when there is one, else ``rest``).

    Raises:
        EvalError: For an unknown half or a missing LiveQA folder.
    """
    if args.half not in ("tune", "report", "all"):
        raise EvalError(f"--half {args.half!r} is not one of tune, report, all")
    path = Path(args.liveqa) if args.liveqa else default_liveqa_dir()
    if not path.exists():
        raise EvalError(f"no LiveQA questions at {path}; get them with `python -m corpus.download liveqa-train` or pass --liveqa")
    questions = load_liveqa([path])
    documents, _ = load_corpus(settings.corpus)
    labels = derive_labels(questions, answers_of(documents))
    rows = [
        {
            "question": q.query,
            "answer": q.answers[0] if q.answers else "",
            "references": q.answers,
            "relevant": sorted(labels.get(q.qid, ())),
            "subset": "answerable" if q.qid in labels else "rest",
            "doc_id": q.qid,
            "focus": "; ".join(f for f in q.focus if f),
        }
        for q in questions
        if q.answers and (args.half == "all" or half_of(q.qid) == args.half)
    ]
    if args.limit <= 0:
        raise EvalError(f"--limit must be positive, got {args.limit}")
    rows = sorted(rows, key=lambda r: r["doc_id"])
    if args.limit < len(rows):
        rows = sorted(random.Random(args.seed).sample(rows, args.limit), key=lambda r: r["doc_id"])
    digest = hashlib.sha256(json.dumps([[r["doc_id"], r["relevant"]] for r in rows]).encode()).hexdigest()[:12]
    return rows, {"content_hash": digest, "source": f"LiveQA {args.half} half ({path})"}


def exclusion_set(rows: Sequence[dict[str, Any]], nodes: Sequence[Any]) -> frozenset[str]:
    """Ids of the test questions' own pairs and of every indexed pair sharing a test question's focus.

    Topics are compared with the splits' own normaliser (:func:`finetune.data.normalize_focus`), so a topic
    the splits hold out as one group is excluded as one.
    """
    focuses = {normalize_focus(str(r.get("focus") or "")) for r in rows} - {""}
    ids = {r["doc_id"] for r in rows}
    ids |= {n.ref_doc_id for n in nodes if normalize_focus(str(n.metadata.get("focus") or "")) in focuses}
    return frozenset(ids)
