"""Supervised chat examples and leakage-free train/val/test splits.

Every answered QA pair of the corpus (MedQuAD XML folders and seed-format ``Description``/``Patient``/
``Doctor`` CSV/Parquet files) becomes one example ``{question, answer, doc_id, focus, ...}``. Splits are
made so that no test question, nor a near twin of it, is seen in training:

* identical questions (after normalisation: case, punctuation, MedQuAD's "(are)") are de-duplicated,
  keeping the first by document id;
* examples are grouped by normalised focus (the topic, e.g. "Glaucoma", shared across collections) or,
  without a focus, by source document; whole groups go to one split.

The splits are written to ``<storage>/splits/{train,val,test}.jsonl`` with a ``manifest.json`` holding
counts, seed, sources and a content hash. The eval package reads exactly ``test.jsonl``.

Example::

    MEDQA_CORPUS=../shared/data/medquad python -m finetune.data
    python -m finetune.data --corpus ../shared/data/medquad --storage_dir /tmp/ft-storage --force
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from finetune import UserError
from finetune.arguments import SplitArguments

logger = logging.getLogger("finetune")

SPLITS = ("train", "val", "test")
#: Keys every split line carries (the eval package relies on them).
EXAMPLE_KEYS = ("question", "answer", "doc_id", "focus", "collection", "url", "question_type", "source", "document_id")
MANIFEST_NAME = "manifest.json"
SPLIT_FORMAT_VERSION = 1


class DataError(UserError):
    """An empty, missing or malformed dataset."""


# ---- examples -----------------------------------------------------------------------------------------------

_PARENS = re.compile(r"\((?:are|is|s|es)\)")
_WORDS = re.compile(r"[a-z0-9]+")


def normalize_question(text: str) -> str:
    """Normalise a question for duplicate detection: lower case, alphanumeric words, no "(are)"."""
    return " ".join(_WORDS.findall(_PARENS.sub(" ", text.lower())))


def normalize_focus(text: str) -> str:
    """Normalise a focus (topic) so the same topic in two collections gets one key."""
    return " ".join(_WORDS.findall(text.lower()))


def _answer_from_text(text: str) -> str:
    head, sep, tail = text.partition("\nAnswer: ")
    return tail.strip() if sep else ""


def document_to_example(doc: Any) -> dict[str, str] | None:
    """Turn one corpus Document (MedQuAD or seed format) into a split line, or None without an answer.

    Args:
        doc: A LlamaIndex ``Document`` from :mod:`corpus` (text ``"Question: ...\\nAnswer: ..."``).
    """
    meta = dict(doc.metadata or {})
    answer = _answer_from_text(doc.text or "")
    question = str(meta.get("patient") or meta.get("question") or "").strip()
    if not question:  # documents of other loaders: fall back to the "Question:" line
        head = (doc.text or "").partition("\nAnswer: ")[0]
        question = head.removeprefix("Question: ").strip()
    if not question or not answer:
        return None
    return {
        "question": question,
        "answer": answer,
        "doc_id": doc.id_,
        "focus": str(meta.get("focus") or ""),
        "collection": str(meta.get("collection") or ""),
        "url": str(meta.get("url") or ""),
        "question_type": str(meta.get("question_type") or ""),
        "source": str(meta.get("source") or ""),
        "document_id": str(meta.get("document_id") or ""),
    }


def group_key(example: dict[str, str]) -> str:
    """The leakage group of an example: its normalised focus, else its source document."""
    focus = normalize_focus(example.get("focus", ""))
    if focus:
        return f"focus:{focus}"
    return f"doc:{example.get('collection', '')}/{example.get('document_id') or example['doc_id']}"


def deduplicate(examples: Iterable[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
    """Keep the first example (by doc id) of each normalised question.

    Returns:
        ``(kept, removed_count)``.
    """
    seen: set[str] = set()
    kept: list[dict[str, str]] = []
    removed = 0
    for ex in sorted(examples, key=lambda e: e["doc_id"]):
        key = normalize_question(ex["question"])
        if key in seen:
            removed += 1
            continue
        seen.add(key)
        kept.append(ex)
    return kept, removed


def _stable_rank(key: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def split_examples(
    examples: Sequence[dict[str, str]], val_fraction: float = 0.05, test_fraction: float = 0.05, seed: int = 42
) -> tuple[dict[str, list[dict[str, str]]], dict[str, Any]]:
    """De-duplicate and split examples by leakage group.

    Groups are ordered by a seeded hash of their key (stable when unrelated groups are added) and fill the
    test split, then validation, up to their target sizes; the rest is training.

    Args:
        examples: Split lines from :func:`document_to_example`.
        val_fraction: Target share of the validation split.
        test_fraction: Target share of the test split.
        seed: Seed of the group order.

    Returns:
        ``(splits, stats)``: examples per split (sorted by doc id) and counts for the manifest.

    Raises:
        DataError: If there are no examples or the fractions don't leave room for training.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) and sum below 1")
    kept, duplicates = deduplicate(examples)
    if not kept:
        raise DataError("the corpus holds no answered question/answer pairs; check the corpus path")
    groups: dict[str, list[dict[str, str]]] = {}
    for ex in kept:
        groups.setdefault(group_key(ex), []).append(ex)
    order = sorted(groups, key=lambda k: _stable_rank(k, seed))
    targets = {"test": round(len(kept) * test_fraction), "val": round(len(kept) * val_fraction)}
    splits: dict[str, list[dict[str, str]]] = {name: [] for name in SPLITS}
    for key in order:
        members = groups[key]
        for name in ("test", "val"):
            # A group goes to a held-out split only if it fits in what is left of the target, so one huge
            # topic can't swallow (or overshoot) a split; groups that don't fit stay in training.
            room = targets[name] - len(splits[name])
            if 0 < len(members) <= room:
                splits[name].extend(members)
                break
        else:
            splits["train"].extend(members)
    for name in SPLITS:
        splits[name].sort(key=lambda e: e["doc_id"])
    sizes = sorted((len(v) for v in groups.values()), reverse=True)
    stats = {
        "examples": len(kept),
        "duplicates_removed": duplicates,
        "groups": len(groups),
        "largest_group": sizes[0] if sizes else 0,
        "counts": {name: len(splits[name]) for name in SPLITS},
        "groups_per_split": {name: len({group_key(e) for e in splits[name]}) for name in SPLITS},
    }
    return splits, stats


# ---- files ---------------------------------------------------------------------------------------------------


def _dumps(example: dict[str, Any]) -> str:
    return json.dumps(example, ensure_ascii=False, sort_keys=True)


def content_hash(split_dir: Path) -> str:
    """SHA-256 over the three split files, in train/val/test order."""
    digest = hashlib.sha256()
    for name in SPLITS:
        digest.update(name.encode())
        digest.update((split_dir / f"{name}.jsonl").read_bytes())
    return digest.hexdigest()


def write_splits(splits: dict[str, list[dict[str, Any]]], split_dir: str | Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``{train,val,test}.jsonl`` and ``manifest.json`` atomically (a temp folder renamed into place).

    Returns:
        The manifest as written, with ``content_hash`` and ``files`` added.
    """
    from rag_app.files import atomic_path

    manifest = dict(manifest)
    with atomic_path(Path(split_dir), directory=True) as tmp:
        for name in SPLITS:
            with (tmp / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
                for ex in splits.get(name, []):
                    handle.write(_dumps(ex) + "\n")
        manifest["content_hash"] = content_hash(tmp)
        manifest["files"] = {name: f"{name}.jsonl" for name in SPLITS}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def read_manifest(split_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a split folder, or None when there is none (or it is unreadable)."""
    path = Path(split_dir) / MANIFEST_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_split(path: str | Path, required: Sequence[str] = ("question", "answer")) -> list[dict[str, Any]]:
    """Read a ``.jsonl`` split file, validating every line.

    Raises:
        DataError: If the file is missing, empty, or a line is not a JSON object with non-empty ``required`` keys.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset file {str(path)!r} does not exist; run `python -m finetune.data` first")
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise DataError(f"{path}:{lineno}: malformed JSON ({err.msg}); rebuild with `python -m finetune.data --force`") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
            missing = [k for k in required if not isinstance(row.get(k), str) or not row[k].strip()]
            if missing:
                raise DataError(f"{path}:{lineno}: missing or empty field(s) {missing}")
            rows.append(row)
    if not rows:
        raise DataError(f"dataset file {str(path)!r} is empty")
    return rows


# ---- orchestration -------------------------------------------------------------------------------------------


def sample_rows(
    rows: list[dict[str, Any]], limit: int | None, seed: int, weight: Callable[[dict[str, Any]], float] | None = None
) -> list[dict[str, Any]]:
    """A seeded sample of at most ``limit`` rows, in ``doc_id`` order; all rows when ``limit`` is None.

    Args:
        rows: Split rows.
        limit: Sample size.
        seed: Seed of the draw.
        weight: Optional positive weight per row: rows are drawn without replacement with probability
            proportional to it (Efraimidis-Spirakis keys); uniform when omitted.
    """
    if limit is None or limit >= len(rows):
        return rows
    rng = random.Random(seed)
    if weight is None:
        chosen = rng.sample(rows, limit)
    else:
        keyed = sorted(rows, key=lambda r: -(rng.random() ** (1.0 / max(weight(r), 1e-9))))
        chosen = keyed[:limit]
    return sorted(chosen, key=lambda r: r.get("doc_id", ""))


def resolve_dirs(args: SplitArguments) -> tuple[list[str], Path, Path]:
    """``(corpus sources, storage dir, splits dir)`` from the arguments, falling back to the settings."""
    from rag_app.config import Settings

    overrides: dict[str, Any] = {}
    if args.storage_dir:
        overrides["storage_dir"] = args.storage_dir
    if args.corpus:
        overrides["corpus"] = args.corpus
    try:
        settings = Settings(**overrides)
    except ValueError as err:
        raise UserError(f"invalid settings: {str(err).splitlines()[0]}") from None
    storage = Path(settings.storage_dir)
    split_dir = Path(args.splits_dir) if args.splits_dir else storage / "splits"
    return list(settings.corpus), storage, split_dir


def _params(sources: Sequence[str], args: SplitArguments) -> dict[str, Any]:
    return {
        "sources": [str(Path(s).expanduser().resolve()) if Path(s).expanduser().exists() else s for s in sources],
        "val_fraction": args.val_fraction,
        "test_fraction": args.test_fraction,
        "seed": args.split_seed,
        "format_version": SPLIT_FORMAT_VERSION,
    }


def prepare_splits(args: SplitArguments, show_progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """Build (or reuse) the splits described by ``args``.

    Splits are reused when the manifest records the same sources, fractions and seed and the files still
    match its content hash; ``args.force`` rebuilds them.

    Returns:
        ``(split_dir, manifest)``.

    Raises:
        DataError: If the corpus is missing or yields no examples.
    """
    from corpus import CorpusError, LoadReport, load_corpus

    sources, _, split_dir = resolve_dirs(args)
    params = _params(sources, args)
    manifest = read_manifest(split_dir)
    if manifest and not args.force and manifest.get("params") == params:
        try:
            if content_hash(split_dir) == manifest.get("content_hash"):
                logger.info("splits in %s are up to date (hash %s)", split_dir, manifest["content_hash"][:12])
                return split_dir, manifest
        except OSError:
            pass
    report = LoadReport()
    try:
        docs, report = load_corpus(sources, report, show_progress=show_progress)
    except (CorpusError, FileNotFoundError, ValueError) as err:
        raise DataError(str(err).splitlines()[0]) from None
    examples = [ex for ex in (document_to_example(d) for d in docs) if ex is not None]
    splits, stats = split_examples(examples, args.val_fraction, args.test_fraction, args.split_seed)
    manifest = {
        "params": params,
        "seed": args.split_seed,
        "source": params["sources"],
        "counts": stats["counts"],
        "stats": stats,
        "corpus_report": {"loaded": report.loaded, "unanswered": report.unanswered, "skipped": report.skipped},
        "grouping": "normalised focus, else source document; identical normalised questions de-duplicated",
    }
    manifest = write_splits(splits, split_dir, manifest)
    logger.info("wrote splits to %s: %s", split_dir, stats["counts"])
    return split_dir, manifest


def select_rows(
    data_args: Any, seed: int, by_source: bool | None = None, type_balance: float = 0.0
) -> tuple[dict[str, list[dict[str, Any]]], set[str], dict[str, Any], Path, dict[str, list[dict[str, Any]]]]:
    """The (sampled) train and validation rows, every train pair id, the split manifest, the storage dir and
    every row of both splits.

    The same seeded sample as :func:`build_datasets` takes for bare pairs; with ``by_source`` (default: the RAFT
    options' ``raft_weight_by_source``) the train pairs are drawn with weights ``exp(source prior)`` of their
    collection (MEDQA_SOURCE_PRIOR); ``type_balance`` (0 to 1) divides each pair's weight by the number of train
    pairs of its question type to that power, so rare types (causes, tests) are drawn as often as common ones at 1.
    """
    import math

    _, storage_dir, split_dir = resolve_dirs_checked(data_args)
    manifest = read_manifest(split_dir) or {}
    full = {"train": read_split(split_dir / "train.jsonl"), "val": read_split(split_dir / "val.jsonl")}
    if by_source is None:
        by_source = data_args.raft and data_args.raft_weight_by_source
    prior: dict[str, float] = {}
    if by_source:
        from rag_app.config import Settings

        prior = Settings(storage_dir=storage_dir).source_prior
    per_type = Counter(str(row.get("question_type") or "") for row in full["train"])

    def weight(row: dict[str, Any]) -> float:
        w = math.exp(prior.get(str(row.get("collection", "")), 0.0))
        return w / per_type[str(row.get("question_type") or "")] ** type_balance

    rows = {
        "train": sample_rows(full["train"], data_args.max_train_samples, seed, weight if by_source or type_balance else None),
        "val": sample_rows(full["val"], data_args.max_eval_samples, seed),
    }
    return rows, {r["doc_id"] for r in full["train"]}, manifest, storage_dir, full


def resolve_dirs_checked(data_args: Any) -> tuple[list[str], Path, Path]:
    """:func:`resolve_dirs`, raising :class:`UserError` when the splits are missing."""
    sources, storage_dir, split_dir = resolve_dirs(data_args)
    if not (split_dir / "train.jsonl").is_file():
        raise UserError(f"no splits in {split_dir}; write them with `python -m finetune.data`")
    return sources, storage_dir, split_dir


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: build the splits and print the manifest summary. Returns the exit status."""
    from finetune.cli import parse_or_exit, run_cli

    def _run() -> int:
        (args,) = parse_or_exit([SplitArguments], argv, prog="python -m finetune.data")
        split_dir, manifest = prepare_splits(args)
        counts = manifest["counts"]
        print(
            f"splits in {split_dir}: train={counts['train']} val={counts['val']} test={counts['test']} "
            f"(duplicates removed: {manifest['stats']['duplicates_removed']}, groups: {manifest['stats']['groups']}, "
            f"hash {manifest['content_hash'][:12]})"
        )
        return 0

    return run_cli(_run)


__all__ = [
    "DataError",
    "SplitArguments",
    "SPLITS",
    "content_hash",
    "deduplicate",
    "document_to_example",
    "group_key",
    "normalize_question",
    "prepare_splits",
    "read_manifest",
    "read_split",
    "split_examples",
    "write_splits",
]

if __name__ == "__main__":
    sys.exit(main())
