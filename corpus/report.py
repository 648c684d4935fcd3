"""What a loader skipped and why, so bad records are reported instead of fatal."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

logger = logging.getLogger("corpus")


@dataclass
class LoadReport:
    """Counts and problems gathered while loading a corpus.

    Attributes:
        loaded: Documents produced.
        unanswered: QA pairs skipped because their answer is empty (e.g. MedQuAD's removed MedlinePlus answers).
        problems: ``(source, reason)`` for every file or record that was skipped.
    """

    loaded: int = 0
    unanswered: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, source: str, reason: str) -> None:
        """Record a skipped file/record and log it with its name."""
        self.problems.append((source, reason))
        logger.warning("skipped %s: %s", source, reason)

    def merge(self, other: "LoadReport") -> "LoadReport":
        """Add another report's counts into this one and return self."""
        self.loaded += other.loaded
        self.unanswered += other.unanswered
        self.problems.extend(other.problems)
        return self

    @property
    def skipped(self) -> int:
        """Number of files/records skipped because of a problem."""
        return len(self.problems)

    def summary(self) -> str:
        """One line for logs and CLIs."""
        return (
            f"{self.loaded} documents loaded, {self.unanswered} QA pairs without answers skipped, "
            f"{self.skipped} files/records skipped with problems"
        )
