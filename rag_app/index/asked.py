"""Which question types a message asks, where no cue word says it: the nearest plain way of asking, by meaning.

:func:`rag_app.index.topics.question_types` reads cue words ("treat", "cause", "inherit", ...). People also ask without
them: "How did she end up with this?", "Is there a pill or a shot for this?", "what kind of check-up shows it?".
:class:`AskedTypes` embeds each of the message's questions, with the topic it names written as "it", and compares it
with the ways people ask each MedQuAD question type (:mod:`rag_app.text.asking`, embedded once with the index's
model); the nearest counts when it is similar enough (``MEDQA_ASK_SIMILARITY``). Cue words, where they find a type,
decide alone: they are right more often on the wordings they were written from.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import numpy as np

from rag_app.index.topics import FocusMatcher, question_types, questions_of, run_on_question
from rag_app.llm.load import embed_queries
from rag_app.text.asking import ASKS, MORE_ASKS

#: A least similarity above any cosine: only cue words are read (``MEDQA_ASK_SIMILARITY=1.01``).
CUES_ONLY = 1.01
#: Cosine from which a message's question is one of the plain ways of asking itself ("What are the symptoms of
#: gout?" is "what are the symptoms of it?"): the re-ranker reads such a question as written.
PLAIN_SIMILARITY = 0.95
#: Messages whose nearest way of asking is remembered (the oldest is forgotten first).
READ_MEMORY = 64


def ways_of_asking() -> list[tuple[str, str]]:
    """``(question type, question with "it" for the topic)`` for every way of asking in :mod:`rag_app.text.asking`."""
    out = []
    for table in (ASKS, MORE_ASKS):
        for qtype, asks in table.items():
            out.extend((qtype, ask.format(t="it")) for ask in asks)
    return list(dict.fromkeys(out))


def with_topic_as_it(text: str, matcher: FocusMatcher | None) -> str:
    """``text`` with the words of the topics it names (in full or without a generic head word) written as "it".

    Example: "how did my sister get hanhart syndrome" -> "how did my sister get it".
    """
    if matcher is None:
        return text
    spans = sorted({span for name in matcher.named(text) + matcher.named_in_part(text) for span in matcher.mentions(text, name)})
    for start, end in reversed(spans):
        text = text[:start] + "it" + text[end:]
    return re.sub(r"\bit(\s+it\b)+", "it", text)


class AskedTypes:
    """The question types a message asks: its cue words' (:func:`question_types`), else the nearest way of asking.

    Only the message's questions are compared (:func:`rag_app.index.topics.questions_of`, or the question a story runs
    on into): the story around them ("my son was diagnosed with ...") is near ways of asking it doesn't ask.

    Args:
        embed_model: The LlamaIndex embedding model (the index's).
        min_similarity: Least cosine of the nearest way of asking (``MEDQA_ASK_SIMILARITY``; :data:`CUES_ONLY`: cue
            words only).
    """

    def __init__(self, embed_model: Any, min_similarity: float) -> None:
        self.embed_model = embed_model
        self.min_similarity = min_similarity
        self._types: list[str] = []
        self._vectors: Any = None
        self._lock = threading.Lock()
        # The last messages read, for the index copy's topic names they were read with: the engine and the retriever
        # read the same message once each, and it is embedded once.
        self._read: dict[str, tuple[str, float]] = {}
        self._read_with: FocusMatcher | None = None

    def _ways(self) -> tuple[list[str], Any]:
        if self._vectors is None:
            with self._lock:
                if self._vectors is None:
                    ways = ways_of_asking()
                    self._types = [qtype for qtype, _ in ways]
                    self._vectors = _normalised(embed_queries(self.embed_model, [ask for _, ask in ways]))
        return self._types, self._vectors

    def nearest(self, text: str, matcher: FocusMatcher | None = None) -> tuple[str, float]:
        """The question type of the way of asking nearest to one of ``text``'s questions, and its cosine.

        A message that asks nothing ("my son was diagnosed with celiac disease": a story, whatever it is near) gives
        ``("", 0.0)``.
        """
        with self._lock:
            if matcher is not self._read_with:
                self._read, self._read_with = {}, matcher
            if text in self._read:
                return self._read[text]
        questions = [with_topic_as_it(q, matcher) for q in questions_of(text) or [run_on_question(text)] if q]
        if not questions:
            return "", 0.0
        types, vectors = self._ways()
        sims = _normalised(embed_queries(self.embed_model, questions)) @ vectors.T
        best = np.unravel_index(int(sims.argmax()), sims.shape)
        found = types[best[1]], float(sims[best])
        with self._lock:
            if matcher is self._read_with:
                if len(self._read) >= READ_MEMORY:
                    self._read.pop(next(iter(self._read)))
                self._read[text] = found
        return found

    def asked_plainly(self, text: str, matcher: FocusMatcher | None = None) -> set[str]:
        """The question type ``text`` asks in one of the plain ways of asking (cosine >= :data:`PLAIN_SIMILARITY`),
        as MedQuAD's own questions do; empty for any other wording."""
        qtype, similarity = self.nearest(text, matcher)
        return {qtype} if qtype and similarity >= PLAIN_SIMILARITY else set()

    def __call__(self, text: str, matcher: FocusMatcher | None = None) -> set[str]:
        """The question types ``text`` asks (may be empty).

        Args:
            text: The message.
            matcher: The index's topic names, so the topic a question names reads as "it", as the ways of asking do.
        """
        cued = question_types(text)
        if cued or self.min_similarity > 1 or not text.strip():
            return cued
        qtype, similarity = self.nearest(text, matcher)
        return {qtype} if qtype and similarity >= self.min_similarity else set()


def _normalised(vectors: Any) -> Any:
    array = np.asarray(vectors, dtype=np.float32)
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)
