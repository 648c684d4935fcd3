"""Writing files and folders so that an interruption never leaves half of one behind.

Everything medqa stores (index manifests, document stores, converted models, splits, adapters, caches) is
written under a temporary sibling name and renamed into place in one step: readers see the old version or
the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(dest: str | Path, directory: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``dest`` to write; renamed over ``dest`` when the block ends without an error.

    Args:
        dest: The file or folder to write (replaced if it exists).
        directory: Create the temporary path as an empty folder (for a folder of files).

    Yields:
        The temporary path. On an error it is removed and ``dest`` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    _remove(tmp)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if dest.is_dir() and not dest.is_symlink():
        old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
        _remove(old)
        dest.rename(old)  # a folder can't be replaced in one step: move the old one aside first
        tmp.rename(dest)
        _remove(old)
    else:
        tmp.replace(dest)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: Any, sort_keys: bool = False) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (values JSON can't hold are written as text)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
