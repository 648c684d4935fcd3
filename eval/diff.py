"""Two reports of the same questions, compared: which answers and top sources changed, and what it did to ROUGE-L.

    python -m eval.diff --before storage/reports/tune-44a --after storage/reports/tune-45a --system raft+rag

Reads each report folder's ``details.jsonl`` (written by ``python -m eval.compare``) and pairs the questions both
scored. Prints how many answers and top sources differ, the mean ROUGE-L of ``--system`` in each report with the
paired difference and its two-sided paired bootstrap p-value (over every paired question), and the ``--show``
largest changes. Use it where one command was run on two commits over the same index (``--no_cache`` on the second,
so no answer is reused).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from eval.arguments import EvalError
from finetune.cli import parse_or_exit, run_cli

METRIC = "rougeL"


@dataclass
class DiffArguments:
    """Options of ``python -m eval.diff``."""

    before: str = field(default="", metadata={"help": "Report folder of the earlier run (holds details.jsonl)."})
    after: str = field(default="", metadata={"help": "Report folder of the later run."})
    system: str = field(default="raft+rag", metadata={"help": "System whose answers are compared."})
    show: int = field(default=5, metadata={"help": "How many of the largest ROUGE-L changes to print."})


def read_details(folder: str) -> dict[str, dict[str, Any]]:
    """A report's ``details.jsonl`` rows by question id (``doc_id``; the question's text where a row has none).

    Raises:
        EvalError: When the folder has no readable ``details.jsonl``.
    """
    path = Path(folder) / "details.jsonl"
    if not folder or not path.is_file():
        raise EvalError(f"report folder {folder!r} has no details.jsonl; give a folder `python -m eval.compare` wrote")
    rows: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            rows[str(row.get("doc_id") or row["question"])] = row
        except (ValueError, KeyError, TypeError):
            print(f"skipped line {number} of {path}: not a details row", file=sys.stderr)
    return rows


def _top(row: dict[str, Any]) -> str:
    sources = row.get("sources") or []
    return str(sources[0].get("doc_id")) if sources else ""


def compare(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], system: str) -> dict[str, Any]:
    """The paired comparison of ``system`` over the questions both reports scored it on.

    Returns:
        ``{"paired", "answers_changed", "top_changed", "before", "after", "diff", "p", "changes"}``; ``changes`` holds
        ``(ROUGE-L change, question text)`` for every changed answer, largest change first.

    Raises:
        EvalError: When no question has an answer of ``system`` in both reports.
    """
    from eval.metrics import paired_bootstrap_pvalue

    shared = [q for q in before if q in after and system in before[q].get("scores", {}) and system in after[q].get("scores", {})]
    if not shared:
        raise EvalError(f"no question has a {system!r} answer in both reports; check --system and the folders")
    a = [float(before[q]["scores"][system][METRIC]) for q in shared]
    b = [float(after[q]["scores"][system][METRIC]) for q in shared]
    changed = [i for i, q in enumerate(shared) if before[q]["answers"].get(system) != after[q]["answers"].get(system)]
    return {
        "paired": len(shared),
        "answers_changed": len(changed),
        "top_changed": sum(_top(before[q]) != _top(after[q]) for q in shared),
        "before": sum(a) / len(a),
        "after": sum(b) / len(b),
        "diff": (sum(b) - sum(a)) / len(a),
        "p": paired_bootstrap_pvalue(b, a) if a != b else 1.0,
        "changes": sorted(((b[i] - a[i], after[shared[i]]["question"]) for i in changed), key=lambda c: -abs(c[0])),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the comparison; returns the exit status."""

    def body() -> int:
        (args,) = parse_or_exit([DiffArguments], argv, prog="python -m eval.diff")
        found = compare(read_details(args.before), read_details(args.after), args.system)
        print(f"{found['paired']} questions in both reports; {args.system}: {found['answers_changed']} answers changed, "
              f"{found['top_changed']} top sources changed")
        print(f"ROUGE-L {found['before']:.5f} -> {found['after']:.5f} ({found['diff']:+.5f}, paired p = {found['p']:.3f})")
        for change, question in found["changes"][: args.show]:
            print(f"  {change:+.3f}  {' '.join(question.split())[:100]}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
