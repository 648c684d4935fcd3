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
