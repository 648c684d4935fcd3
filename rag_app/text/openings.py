"""An answer that opens with its source: the top source's first words, as far as they tell it from the others.

The retriever ranks the sources, but a 135M fine-tune often copies a lower-ranked one, and picks the relevant one less
often than the ranking does (its first word leans to the topic's name, "Gout often prescribed ...", which then drifts
into whichever source goes on from there). :func:`opening_words` are the words an answer quotes first; an
:class:`Opening` holds their token ids, forced one after another (:mod:`rag_app.llm.decoding` applies it), then leaves
the model free; where the model may decline, declining stays its choice at the first token. An answer that opened with
its source and is still copying it may not end while the source goes on (:meth:`Opening.banned`): the fine-tune
otherwise often stops a sentence or two before the end of a page that goes on answering the question.
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
#: An answer is copying its source while its last this many (compared) tokens occur in the source.
COPY_TOKENS = 4


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
        source: The token ids of the source's answer text, without ``skipped`` ones; empty: the answer may end anywhere.
        skipped: Token ids not compared with the source (citation marks, digits, punctuation), so "[1]." in an answer
            still matches the source's ".".
        stops: The token ids that would end an answer while it copies ``source`` (end of turn, other special tokens) or
            turn it into the decline (its first word).
        copied: Every token id of the source's answer text, digits and punctuation included (:meth:`copying`).
        bias: Logits added to the token ``copied`` goes on with while the answer copies it (0: none).
        unbiased: Token ids never given the bias (punctuation and spaces: where the model puts a citation mark).
        alternative_bias: Logits added to ``alternatives`` at the first token (negative: the model declines only where it
            prefers declining by more than that).
    """

    tokens: tuple[int, ...]
    alternatives: tuple[int, ...] = ()
    source: tuple[int, ...] = ()
    skipped: frozenset[int] = frozenset()
    stops: tuple[int, ...] = ()
    copied: tuple[int, ...] = ()
    bias: float = 0.0
    unbiased: frozenset[int] = frozenset()
    alternative_bias: float = 0.0

    def first_biased(self, generated: Sequence[int]) -> tuple[int, ...]:
        """The token ids given :attr:`alternative_bias` next: the alternatives at the first token (else none)."""
        return self.alternatives if self.alternative_bias and not generated else ()

    def allowed(self, generated: Sequence[int]) -> list[int] | None:
        """The token ids allowed next after the answer's ``generated`` tokens; None when any token is."""
        step = len(generated)
        if step == 0:
            return [self.tokens[0], *self.alternatives]
        if step < len(self.tokens) and list(generated) == list(self.tokens[:step]):
            return [self.tokens[step]]
        return None

    def banned(self, generated: Sequence[int]) -> tuple[int, ...]:
        """The token ids not allowed next: ``stops`` while an answer that opened with its source is copying it (its last
        :data:`COPY_TOKENS` compared tokens occur in ``source``) at a place where the source goes on, except a token
        the source goes on with there.

        An answer that declined, drifted from its source or copied it to its end may end.
        """
        if not (self.source and self.stops and generated and generated[0] == self.tokens[0]):
            return ()
        tail = [t for t in generated[-4 * COPY_TOKENS :] if t not in self.skipped][-COPY_TOKENS:]
        if len(tail) < COPY_TOKENS:
            return ()
        goes_on = _goes_on(self.source, tail)
        return tuple(t for t in self.stops if t not in goes_on) if goes_on else ()

    def copying(self, generated: Sequence[int]) -> tuple[int, ...]:
        """The token ids the source goes on with where the answer's last :data:`COPY_TOKENS` tokens occur in it, all
        tokens compared (a changed digit is a changed fact), :attr:`unbiased` ones left out (a citation mark may come
        before the source's full stop); empty when the answer is not copying it word for word, declined, or has no
        :attr:`bias`.

        Example:
            >>> Opening((1,), copied=(1, 2, 3, 4, 5, 6), bias=3.0).copying([1, 2, 3, 4])
            (5,)
        """
        if not (self.copied and self.bias and generated and generated[0] == self.tokens[0]) or len(generated) < COPY_TOKENS:
            return ()
        return tuple(sorted(_goes_on(self.copied, generated[-COPY_TOKENS:]) - self.unbiased))


def _goes_on(source: Sequence[int], tail: Sequence[int]) -> set[int]:
    """The tokens that follow ``tail`` wherever it occurs in ``source`` (empty where it doesn't)."""
    tail, n = list(tail), len(tail)
    return {source[i + n] for i in range(len(source) - n) if list(source[i : i + n]) == tail}
