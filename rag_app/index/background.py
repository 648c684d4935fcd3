"""Building the index in the background, so a chat can open (and answer) before the index is complete.

    from rag_app.index.background import BackgroundBuild
    build = BackgroundBuild(settings, embed_model)
    build.start()                    # returns at once; build.progress() tells how far it got

:func:`rag_app.index.build.build_index` commits in batches, the collections patients' messages need most first,
and rewrites the index manifest after each batch, so a retriever opened meanwhile answers from what is
indexed so far; an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from rag_app.config import Settings
from rag_app.index.build import build_index

logger = logging.getLogger("rag_app")


@dataclass(frozen=True)
class BuildProgress:
    """A snapshot of a background build.

    Attributes:
        state: ``"idle"`` (never started), ``"running"``, ``"done"`` or ``"failed"``.
        fraction: 0..1.
        text: What it is doing, e.g. ``"Embedding: 1,024/16,407 documents"``.
        error: Why it failed (``"failed"`` only).
        summary: What it did (``"done"`` only).
        seconds: Time since it started.
    """

    state: str = "idle"
    fraction: float = 0.0
    text: str = ""
    error: str = ""
    summary: str = ""
    seconds: float = 0.0

    @property
    def running(self) -> bool:
        """True while the build runs."""
        return self.state == "running"


class BackgroundBuild:
    """One index build at a time in a daemon thread; its progress is readable from any thread.

    Args:
        settings: Storage, corpus and model settings of the index to build.
        embed_model: The embedding model (shared with the retriever); loaded from settings when None.
    """

    def __init__(self, settings: Settings, embed_model: Any = None) -> None:
        self.settings = settings
        self.embed_model = embed_model
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._progress = BuildProgress()
        self._started = 0.0

    def start(self, rebuild: bool = False) -> bool:
        """Start building unless a build is already running; True when this call started one."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._started = time.monotonic()
            self._progress = BuildProgress("running", 0.0, "Starting…")
            self._thread = threading.Thread(target=self._run, args=(rebuild,), name="medqa-index-build", daemon=True)
            self._thread.start()
            return True

    def progress(self) -> BuildProgress:
        """The current state, fraction and text."""
        p = self._progress
        return BuildProgress(p.state, p.fraction, p.text, p.error, p.summary, time.monotonic() - self._started if self._started else 0.0)

    def wait(self, timeout: float | None = None) -> BuildProgress:
        """Block until the build ends (or ``timeout`` seconds pass); the progress then."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.progress()

    def _report(self, fraction: float, text: str) -> None:
        self._progress = BuildProgress("running", min(max(fraction, 0.0), 1.0), text)

    def _run(self, rebuild: bool) -> None:
        try:
            stats = build_index(self.settings, embed_model=self.embed_model, rebuild=rebuild, show_progress=False, on_progress=self._report)
        except Exception as err:  # reported in the UI; the committed batches stay usable
            logger.exception("the background index build failed")
            self._progress = BuildProgress("failed", self._progress.fraction, self._progress.text, f"{type(err).__name__}: {err}")
            return
        logger.info("background index build: %s", stats.summary())
        self._progress = BuildProgress("done", 1.0, "Done", summary=stats.summary())
