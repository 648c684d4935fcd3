"""Reading the configured corpus (``MEDQA_CORPUS``) into LlamaIndex documents, through the installed reader.

The library indexes documents; it does not know where they come from. Readers plug in as a package entry point of
the group :data:`READERS`: a callable ``reader(sources, show_progress=...) -> (documents, report)`` where ``report``
has ``skipped`` (a count) and ``summary()`` (a line). This project's ``corpus`` package registers its MedQuAD, seed
dataset and document-folder reader in ``pyproject.toml`` (``[project.entry-points."medqa.readers"]``); another
package can register its own.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Sequence

from rag_app.errors import MedQAError

#: The entry-point group of corpus readers.
READERS = "medqa.readers"


def read_sources(sources: Sequence[str], show_progress: bool = True) -> tuple[list[Any], Any]:
    """The documents of ``sources`` (and the reader's report), read by the installed corpus reader.

    Raises:
        MedQAError: If no reader is installed (the project isn't installed) or several are and none is this project's.
    """
    found = {ep.name: ep for ep in entry_points(group=READERS)}
    if not found:
        raise MedQAError(f"no corpus reader is installed (entry points {READERS!r}); install the project with `pip install -e .`")
    reader = found.get("corpus") or next(iter(found.values()))
    return reader.load()(list(sources), show_progress=show_progress)
