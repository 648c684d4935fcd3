"""The corpus' user-facing error (a :class:`rag_app.errors.MedQAError`)."""

from __future__ import annotations

from rag_app.errors import MedQAError


class CorpusError(MedQAError, ValueError):
    """A corpus source that cannot be used (missing, of an unknown kind, or without the expected fields)."""
