"""Download public corpora for users who are online.

    python -m corpus.download medquad                 # → data/medquad (MedQuAD, NIH, CC BY 4.0)
    python -m corpus.download liveqa-train            # → data/liveqa-train (TREC 2017 LiveQA, evaluation only)
    python -m corpus.download medquad --dest /somewhere/medquad

Then point ``MEDQA_CORPUS`` at the MedQuAD folder (``data/medquad`` is the default).
"""

from __future__ import annotations

import argparse
import io
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

MEDQUAD_ZIP = "https://github.com/abachaa/MedQuAD/archive/refs/heads/master.zip"
LIVEQA_RAW = "https://raw.githubusercontent.com/abachaa/LiveQA_MedicalTask_TREC2017/{commit}/TrainingDatasets/{name}"
LIVEQA_FILES = {
    "TREC-2017-LiveQA-Medical-Train-1.xml": "b7d350d6eff0de250ca8fc5e564d1888e59ac769",
    "TREC-2017-LiveQA-Medical-Train-2.xml": "74d361222a641703edd9874211cd84081bf1b042",
}
DEFAULT_DEST = {"medquad": Path("data/medquad"), "liveqa-train": Path("data/liveqa-train")}


def _fetch(url: str, timeout: float = 60) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed https URLs)
        return response.read()


def download_medquad(dest: Path) -> Path:
    """Download MedQuAD's collection folders into ``dest`` (atomically: a failed download leaves nothing)."""
    from rag_app.files import atomic_path

    data = _fetch(MEDQUAD_ZIP, timeout=300)
    with zipfile.ZipFile(io.BytesIO(data)) as archive, atomic_path(dest, directory=True) as tmp:
        for member in archive.infolist():
            parts = Path(member.filename).parts
            if len(parts) < 2 or member.is_dir():
                continue
            rel = Path(*parts[1:])  # strip the "MedQuAD-master/" prefix
            if rel.suffix.lower() not in {".xml", ".txt"} or ".." in rel.parts:
                continue
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))
    return dest


def download_liveqa_train(dest: Path) -> Path:
    """Download the two TREC 2017 LiveQA medical training files from their source commits."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, commit in LIVEQA_FILES.items():
        (dest / name).write_bytes(_fetch(LIVEQA_RAW.format(commit=commit, name=name)))
    return dest


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m corpus.download", description="Download a public corpus.")
    parser.add_argument("name", choices=sorted(DEFAULT_DEST), help="which corpus")
    parser.add_argument("--dest", type=Path, help="target folder (default: data/<name>)")
    args = parser.parse_args(argv)
    dest = args.dest or DEFAULT_DEST[args.name]
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        path = download_medquad(dest) if args.name == "medquad" else download_liveqa_train(dest)
    except (urllib.error.URLError, OSError, zipfile.BadZipFile) as err:
        print(f"error: could not download {args.name} ({err}); check your internet connection, "
              f"or copy the files to {dest} by hand", file=sys.stderr)
        return 2
    print(f"{args.name} saved to {path}" + ("; set MEDQA_CORPUS to use another location" if args.name == "medquad" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
