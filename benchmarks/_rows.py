"""Printing a benchmark's rows (figure, value, same-run baseline, ratio, target) and writing them as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

KEYS = ("figure", "value", "baseline", "ratio", "target")


def emit_rows(rows: Sequence[tuple], json_path: str | None, target_width: int = 8) -> None:
    """Print ``rows`` as a Markdown table and, when ``json_path`` is set, write ``{"rows": [...]}`` there.

    Args:
        rows: ``(figure, value, baseline text, ratio, target)`` tuples; ``value`` is a number.
        json_path: The ``--json`` file that ``benchmarks/run_all.py`` collects, or None.
        target_width: Width of the target column.
    """
    w = target_width
    print(f"| {'figure':<44} | {'value':>10} | {'baseline (same run)':<28} | {'ratio':>6} | {'target':<{w}} |")
    print(f"|{'-' * 46}|{'-' * 12}|{'-' * 30}|{'-' * 8}|{'-' * (w + 2)}|")
    for name, value, base, ratio, target in rows:
        print(f"| {name:<44} | {value:>10.3f} | {base:<28} | {ratio:>6} | {target:<{w}} |")
    if json_path:
        Path(json_path).write_text(json.dumps({"rows": [dict(zip(KEYS, row)) for row in rows]}, indent=2))
