"""Writing files and folders so that an interruption never leaves half of one behind.

Everything medqa stores (index manifests, document stores, converted models, splits, adapters, caches) is
written under a temporary sibling name and renamed into place in one step: readers see the old version or
the new one, never a mix.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rag_app.errors import DiskFullError


@contextmanager
def atomic_path(dest: str | Path, directory: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``dest`` to write; renamed over ``dest`` when the block ends without an error.

    Args:
        dest: The file or folder to write (replaced if it exists).
        directory: Create the temporary path as an empty folder (for a folder of files).

    Yields:
        The temporary path. On an error it is removed and ``dest`` is left as it was.

    Raises:
        DiskFullError: If the disk filled up while writing (``dest`` is left as it was).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    remove_path(tmp)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException as err:
        remove_path(tmp)
        if is_disk_full(err):
            raise disk_full(dest, what=f"writing {dest.name}", kept=f"the previous {dest.name} is unchanged") from err
        raise
    if dest.is_dir() and not dest.is_symlink():
        old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
        remove_path(old)
        dest.rename(old)  # a folder can't be replaced in one step: move the old one aside first
        tmp.rename(dest)
        remove_path(old)
    else:
        tmp.replace(dest)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: Any, sort_keys: bool = False) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (values JSON can't hold are written as text)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")


def is_disk_full(err: BaseException) -> bool:
    """True when ``err`` says the disk (or the quota) is full: ``ENOSPC``/``EDQUOT``, or SQLite's "disk is full"."""
    if isinstance(err, DiskFullError):
        return False  # already explained
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err).lower()
    return "no space left on device" in text or "database or disk is full" in text


def free_bytes(path: str | Path) -> int | None:
    """Free space on the file system holding ``path`` (its nearest existing parent), or None when unknown."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def megabytes(n: int) -> str:
    """``n`` bytes in MB, rounded up (``"12 MB"``)."""
    return f"{-(-n // 1_000_000):,} MB"


def disk_full(path: str | Path, what: str, kept: str, need: int | None = None) -> DiskFullError:
    """The one-line error for a full disk: the path, the space the step needs, what was kept and how to go on.

    Args:
        path: The file or folder being written.
        what: What was being done (``"indexing"``).
        kept: What is intact (``"the previous index is intact"``).
        need: Roughly how many more bytes the step needs, when known.
    """
    free = free_bytes(path)
    room = f" ({megabytes(free)} free" + (f"; about {megabytes(need)} more needed" if need else "") + ")" if free is not None else ""
    return DiskFullError(
        f"no space left on the device holding {path} while {what}{room}; {kept}: free some space and run it again",
    )


def require_space(path: str | Path, need: int, what: str) -> None:
    """Raise :class:`DiskFullError` before a big write when the file system holding ``path`` has less than ``need`` bytes free."""
    free = free_bytes(path)
    if free is not None and free < need:
        raise disk_full(path, what=what, kept="nothing was written", need=need - free)


def remove_path(path: Path) -> None:
    """Delete a file, link or folder (with its contents) if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
