"""The one sentence splitter and word tokenizer: every layer splits and counts text the same way."""

from __future__ import annotations

import re

#: Where a sentence ends: white space after ``.``, ``!`` or ``?``, or a line break.
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
#: The punctuation that ends a sentence, right after a word, a number or a closing bracket (to cut text there).
SENTENCE_END = re.compile(r"(?<=[A-Za-z0-9)\]%])([.!?])(?=\s|$)")
#: The full stop that ends a statement (not a question), right after a word (where a citation goes).
STATEMENT_END = re.compile(r"(?<=[A-Za-z0-9)\]%])(\.)(?=\s|$)")
#: A word: a run of lower-case letters and digits (match it in lower-cased text).
WORD = re.compile(r"[a-z0-9]+")
_LETTERS = re.compile(r"[A-Za-z]{2,}")


def words(text: str) -> list[str]:
    """The lower-case words of ``text`` (runs of letters and digits)."""
    return WORD.findall((text or "").lower())


def content_words(text: str) -> list[str]:
    """:func:`words` of three or more characters (what a copied passage and its copy share)."""
    return [w for w in words(text) if len(w) >= 3]


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (split after ``.``, ``!`` or ``?`` and at line breaks), empty ones left out."""
    return [s.strip() for s in SENTENCE_BREAK.split(text) if s.strip()]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences with at least two words, in order.

    A subject line ending in a full stop counts as one sentence.
    """
    spans = []
    start = 0
    for end, next_start in [(m.start(), m.end()) for m in SENTENCE_BREAK.finditer(text)] + [(len(text), len(text))]:
        part = text[start:end]
        if len(_LETTERS.findall(part)) >= 2:
            lead = len(part) - len(part.lstrip())
            spans.append((start + lead, start + len(part.rstrip())))
        start = next_start
    return spans


def share_found(found: list[str], vocabulary: set[str]) -> float:
    """The share of ``found`` (words) that are in ``vocabulary``; 0 for no words."""
    return sum(w in vocabulary for w in found) / len(found) if found else 0.0
