"""Run every ``benchmarks/bench_*.py`` and print one table of all their figures.

    python benchmarks/run_all.py            # what `make bench` runs
    python benchmarks/run_all.py --only index

Each benchmark measures its own baseline in the same run and writes its rows (figure, value,
baseline, ratio, target) to a JSON file; this script collects them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="run only bench_<NAME>.py (repeatable)")
    parser.add_argument("--out", help="also write all rows to this JSON file")
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    all_rows, failed = [], []
    for script in scripts:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            out = Path(handle.name)
        print(f"== {script.name}", flush=True)
        result = subprocess.run([sys.executable, str(script), "--json", str(out)])
        if result.returncode != 0 or not out.stat().st_size:
            failed.append(script.name)
            continue
        for row in json.loads(out.read_text())["rows"]:
            all_rows.append({"benchmark": script.stem.removeprefix("bench_"), **row})
    print()
    print(f"| {'benchmark':<9} | {'figure':<44} | {'value':>10} | {'baseline (same run)':<30} | {'ratio':>6} | {'target':<8} |")
    print(f"|{'-' * 11}|{'-' * 46}|{'-' * 12}|{'-' * 32}|{'-' * 8}|{'-' * 10}|")
    for r in all_rows:
        value = r["value"] if isinstance(r["value"], str) else f"{r['value']:.3f}"
        print(f"| {r['benchmark']:<9} | {r['figure']:<44} | {value:>10} | {str(r['baseline']):<30} | {str(r['ratio']):>6} | {str(r['target']):<8} |")
    if args.out:
        Path(args.out).write_text(json.dumps(all_rows, indent=2))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
