"""Answers that never loop.

Small models decoding greedily fall into loops ("Gout is a form of arthritis. Gout is a form of
arthritis. ..."). The usual generation knobs fight loops by penalising tokens already seen
(``repetition_penalty``, ``no_repeat_ngram_size``), but they count the prompt too, so they also stop a
model from copying the wording of its sources, which is what a grounded answer does. Instead, the
stop looks only at the answer (:mod:`rag_app.llm.decoding` ends generation there): an answer repeats itself as soon
as a complete sentence (or a long run of words) repeats one it already said; :func:`trim_repetition` cuts the
repeat off and :class:`StreamTrimmer` never shows it. An answer that never repeats is left exactly as the model
wrote it.

The decline is an answer's end the same way: a model that has said what its source says and runs out of it may go
on with "I don't know: the provided sources don't cover this question.", which reads as if what it just said were
not so. A sentence opening with the decline's words after the answer has said something ends the answer there.
"""

from __future__ import annotations

from rag_app.text.prompts import ABSTAIN_ANSWER
from rag_app.text.words import SENTENCE_BREAK, WORD, words

#: A sentence shorter than this (in words) may legitimately recur ("Yes.", "- Fever"): never a loop by itself.
MIN_WORDS = 4
#: A run of this many words said twice is a loop even without a sentence end.
RUN_WORDS = 12
#: The words the decline opens with ("I don't know"): a sentence opening with them after the first ends the answer.
DECLINE_WORDS = tuple(words(ABSTAIN_ANSWER)[:4])


def _key(sentence: str) -> tuple[str, ...]:
    return tuple(words(sentence))


def _declines(key: tuple[str, ...]) -> bool:
    return key[: len(DECLINE_WORDS)] == DECLINE_WORDS


def repeat_start(text: str) -> int | None:
    """Character offset where ``text`` starts repeating itself, or None when it doesn't.

    A repeat is a complete sentence of at least :data:`MIN_WORDS` words equal (case and punctuation
    aside) to an earlier one, or a run of :data:`RUN_WORDS` words said again (not overlapping itself; punctuation and
    list bullets aside). A sentence
    after the first that opens with the decline's words (:data:`DECLINE_WORDS`) counts as one too.
    """
    seen: set[tuple[str, ...]] = set()
    start = 0
    ends = [(m.start(), m.end()) for m in SENTENCE_BREAK.finditer(text)]
    if text.rstrip().endswith((".", "!", "?")):  # the last sentence is complete too (a citation may follow it)
        ends.append((len(text.rstrip()), len(text)))
    for end, after in ends:
        key = _key(text[start:end])
        if start and _declines(key):
            return start
        if len(key) >= MIN_WORDS:
            if key in seen:
                return start
            seen.add(key)
        start = after
    if start and _declines(_key(text[start:])):  # the decline, still being written
        return start
    # Words only: a list copied again without its bullets ("- find it hard to remember things - ask the same
    # questions ..." then "find it hard to remember things ask the same questions ...") is the same run.
    found = list(WORD.finditer(text.lower()))
    tokens = [w.group(0) for w in found]
    first: dict[tuple[str, ...], int] = {}
    for i in range(len(tokens) - RUN_WORDS + 1):
        run = tuple(tokens[i : i + RUN_WORDS])
        if run in first and i >= first[run] + RUN_WORDS:
            return found[i].start()
        first.setdefault(run, i)
    return None


def trim_repetition(text: str) -> str:
    """``text`` cut before its first repeat (:func:`repeat_start`); unchanged when it has none."""
    cut = repeat_start(text)
    return text if cut is None else text[:cut].rstrip()


def repeats(text: str) -> bool:
    """True when ``text`` repeats a sentence or a run of words, or declines after saying something
    (:func:`repeat_start`; the generation stop and the evaluation's repetition measure)."""
    return repeat_start(text) is not None


class StreamTrimmer:
    """Streams an answer without its repeat: text that may be starting a repeated sentence is held back.

    Feed it the model's deltas; it returns what can be shown. Text after the last sentence end is held
    only while it is the beginning of a sentence the answer already said, the last words only while they are words
    said before in the same order (a run being repeated), a word only until it is complete; once the repeat completes,
    everything from it on is dropped (the generation stop ends the answer there).
    """

    def __init__(self) -> None:
        self.text = ""
        self.shown = 0
        self.done = False

    def feed(self, delta: str) -> str:
        """Add a delta; return the text that can be shown now."""
        if self.done:
            return ""
        self.text += delta
        cut = repeat_start(self.text)
        if cut is not None:
            self.done = True
            return self._show(len(self.text[:cut].rstrip()))
        end = tail = 0  # end of the last complete sentence, and where the text after it starts
        for match in SENTENCE_BREAK.finditer(self.text):
            end, tail = match.start(), match.end()
        partial = _key(self.text[tail:])
        said = [_key(s) for s in SENTENCE_BREAK.split(self.text[:tail])]
        if tail:  # a sentence after the first may be the decline starting
            said.append(DECLINE_WORDS)
        if partial and any((len(k) >= MIN_WORDS or k == DECLINE_WORDS) and k[: len(partial)] == partial for k in said):
            return self._show(end)
        return self._show(self._run_start())

    def _run_start(self) -> int:
        """Where the text may be starting a run of :data:`RUN_WORDS` words said before: its last words, when they are
        words said earlier in the same order (far enough back for :func:`repeat_start` to count them), are held back
        until they turn out a repeat or not; so is a word still being written, past the first :data:`RUN_WORDS` words.
        The end of the text otherwise."""
        found = list(WORD.finditer(self.text.lower()))
        upto = len(self.text)
        if len(found) <= RUN_WORDS:  # too few words to repeat a run: the first ones stream as they come
            return upto
        if found[-1].end() == len(self.text):
            upto = found.pop().start()
        tokens = [w.group(0) for w in found]
        n, longest = len(tokens), 0
        for j in range(n - RUN_WORDS):  # an earlier word equal to the last one, far enough back
            k = 0
            while k < min(RUN_WORDS - 1, j + 1) and tokens[j - k] == tokens[n - 1 - k]:
                k += 1
            longest = max(longest, k)
        return found[n - longest].start() if longest else upto

    def finish(self) -> str:
        """The rest of the answer once generation has ended."""
        return "" if self.done else self._show(len(self.text))

    def _show(self, upto: int) -> str:
        out = self.text[self.shown : upto] if upto > self.shown else ""
        self.shown = max(self.shown, upto)
        return out
