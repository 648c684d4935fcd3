"""The one base class of the errors a user can fix, and the settings and question errors.

Every entry point (``python -m rag_app``, ``rag_app.index``, ``finetune.*``, ``eval.compare``, the chat)
catches :class:`MedQAError` once and prints its message: one line naming the bad value and the fix, never a
stack trace. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MedQAError(Exception):
    """A problem the user can fix; the message names the bad value and what to do."""


class SettingsError(MedQAError, ValueError):
    """A ``MEDQA_*`` variable, config file or option has a bad value."""


class QuestionError(MedQAError, ValueError):
    """A question that can't be answered as given (e.g. empty)."""


class ModelUnavailableError(MedQAError):
    """No usable model could be loaded; the message says what to install or set."""


class IndexMissingError(MedQAError):
    """The index is missing or was built in a way that doesn't match the settings."""


class IndexDamagedError(IndexMissingError):
    """The index's Chroma files can't be read (cut short, corrupted); ``python -m rag_app.index --rebuild`` recovers."""


class DiskFullError(MedQAError, OSError):
    """A write ran out of disk space; the message names the path, the space needed and what was kept."""
