"""An answer that opens with its source: the top source's first words, as far as they tell it from the others.

The retriever ranks the sources, but a 135M fine-tune often copies a lower-ranked one, and picks the relevant one less
often than the ranking does (its first word leans to the topic's name, "Gout often prescribed ...", which then drifts
into whichever source goes on from there). :func:`opening_words` are the words an answer quotes first; an
:class:`Opening` holds their token ids, forced one after another (:mod:`rag_app.llm.decoding` applies it), then leaves
the model free; where the model may decline, declining stays its choice at the first token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rag_app.text.prompts import answer_text
from rag_app.text.words import SENTENCE_BREAK

#: An answer opening quotes the top source up to the first word no other source shares at that place, and this
#: many words more ...
OPENING_EXTRA_WORDS = 2
#: ... but at least and at most this many words.
OPENING_MIN_WORDS = 4
OPENING_MAX_WORDS = 12


def opening_words(passages: Sequence[str], index: int = 0) -> str:
    """The first words of a source's answer text (the top one's by default), as far as they tell it from the others.

    Args:
        passages: The sources' texts in citation order (QA pairs: only the text after ``Answer:`` counts).
        index: Which source (0 = the top one).

    Returns:
        :data:`OPENING_MIN_WORDS` to :data:`OPENING_MAX_WORDS` words: up to the first word where the top source
        differs from every other source at the same place, plus :data:`OPENING_EXTRA_WORDS`; ``""`` without
        sources.

    Example:
        >>> opening_words(["Answer: Lupus is a chronic disease of the immune system", "Answer: Lupus is an autoimmune disease"])
        'Lupus is a chronic disease'
    """
    if not 0 <= index < len(passages):
        return ""
    texts = [answer_text(p) for p in passages]
    texts.insert(0, texts.pop(index))
    if texts[0][:1].islower():  # a chunk that starts mid-sentence: open with its first whole sentence
        rest = SENTENCE_BREAK.split(texts[0], maxsplit=1)
        texts[0] = rest[1] if len(rest) == 2 and rest[1].strip() else texts[0]
    top, *others = [t.split() for t in texts]
    distinct = 1
    while distinct < len(top) and any(o[:distinct] == top[:distinct] for o in others):
        distinct += 1
    size = min(max(distinct + OPENING_EXTRA_WORDS, OPENING_MIN_WORDS), OPENING_MAX_WORDS)
    return " ".join(top[:size])


@dataclass(frozen=True)
class Opening:
    """How an answer must open: the tokens of :func:`opening_words`, or one of ``alternatives`` as its first token.

    Attributes:
        tokens: The opening's token ids, forced one after another once the answer starts with the first.
        alternatives: Other first tokens the answer may start with instead (the decline), then free.
    """

    tokens: tuple[int, ...]
    alternatives: tuple[int, ...] = ()

    def allowed(self, generated: Sequence[int]) -> list[int] | None:
        """The token ids allowed next after the answer's ``generated`` tokens; None when any token is."""
        step = len(generated)
        if step == 0:
            return [self.tokens[0], *self.alternatives]
        if step < len(self.tokens) and list(generated) == list(self.tokens[:step]):
            return [self.tokens[step]]
        return None
