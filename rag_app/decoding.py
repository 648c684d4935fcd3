"""Answers that never loop, and citations that point where their words came from.

Small models decoding greedily fall into loops ("Gout is a form of arthritis. Gout is a form of
arthritis. ..."). The usual generation knobs fight loops by penalising tokens already seen
(``repetition_penalty``, ``no_repeat_ngram_size``), but they count the prompt too, so they also stop a
model from copying the wording of its sources, which is what a grounded answer does. Instead, the
stop here looks only at the answer: generation ends as soon as a complete sentence (or a long run of
words) repeats one the answer already said, and :func:`trim_repetition` cuts the repeat off. An answer
that never repeats is left exactly as the model wrote it.

Citations that point where the words came from: a small model copies one source and often writes another's
number after it. :func:`attribute_citations` (and :class:`StreamAttributor` while streaming) renumbers each
``[n]`` to the source that holds clearly more of the words it closes; :func:`citation_to_add` cites the source
of an answer that cites nothing.

An answer that opens with the top source: the retriever ranks the sources, but a 135M fine-tune often copies a lower-ranked
one, and picks the relevant one less often than the ranking does (its first word leans to the topic's name, "Gout often prescribed ...",
which then drifts into whichever source goes on from there). :func:`answer_opening` makes the answer quote the top
source's first words, as far as needed to tell it from the other sources, and then leaves the model free; where
the model may decline, declining stays its choice at the first token (:class:`Opening`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from rag_app.prompts import SINGLE_CITATION

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+")
#: A sentence shorter than this (in words) may legitimately recur ("Yes.", "- Fever"): never a loop by itself.
MIN_WORDS = 4
#: A run of this many words said twice is a loop even without a sentence end.
RUN_WORDS = 12


def _key(sentence: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(sentence.lower()))


def repeat_start(text: str) -> int | None:
    """Character offset where ``text`` starts repeating itself, or None when it doesn't.

    A repeat is a complete sentence of at least :data:`MIN_WORDS` words equal (case and punctuation
    aside) to an earlier one, or a run of :data:`RUN_WORDS` words said again (not overlapping itself).
    """
    seen: set[tuple[str, ...]] = set()
    start = 0
    ends = [(m.start(), m.end()) for m in _SENTENCE_END.finditer(text)]
    if text.rstrip().endswith((".", "!", "?")):  # the last sentence is complete too (a citation may follow it)
        ends.append((len(text.rstrip()), len(text)))
    for end, after in ends:
        key = _key(text[start:end])
        if len(key) >= MIN_WORDS:
            if key in seen:
                return start
            seen.add(key)
        start = after
    words = list(re.finditer(r"\S+", text))
    tokens = [w.group(0).lower() for w in words]
    first: dict[tuple[str, ...], int] = {}
    for i in range(len(tokens) - RUN_WORDS + 1):
        run = tuple(tokens[i : i + RUN_WORDS])
        if run in first and i >= first[run] + RUN_WORDS:
            return words[i].start()
        first.setdefault(run, i)
    return None


def trim_repetition(text: str) -> str:
    """``text`` cut before its first repeat (:func:`repeat_start`); unchanged when it has none."""
    cut = repeat_start(text)
    return text if cut is None else text[:cut].rstrip()


def repeats(text: str) -> bool:
    """True when ``text`` repeats a sentence or a run of words (the evaluation's repetition measure)."""
    return repeat_start(text) is not None


def answer_start_ids(tokenizer: Any) -> list[int]:
    """The token ids the chat template puts right before an answer (e.g. ``<|im_start|>assistant\\n``).

    Found by comparing a one-message conversation rendered with and without the generation prompt;
    empty when the tokenizer has no chat template.
    """
    if not getattr(tokenizer, "chat_template", None):
        return []
    messages = [{"role": "user", "content": "x"}]
    with_prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    without = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    suffix = with_prompt[len(without) :] if with_prompt.startswith(without) else ""
    return tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []


def _last_index(ids: Sequence[int], pattern: Sequence[int]) -> int | None:
    n = len(pattern)
    for i in range(len(ids) - n, -1, -1):
        if list(ids[i : i + n]) == list(pattern):
            return i + n
    return None


def answer_repeats(ids: Sequence[int], header: Sequence[int], tokenizer: Any) -> bool:
    """True when the answer in ``ids`` (the tokens after the last ``header``, the chat template's answer start)
    repeats itself; False while there is no answer yet."""
    start = _last_index(ids, header) if header else None
    if start is None:
        return False
    return repeats(tokenizer.decode(list(ids[start:]), skip_special_tokens=True))


def repetition_stop(tokenizer: Any) -> Any:
    """A ``transformers`` stopping criterion that ends each sequence once its answer repeats itself.

    It is stateless: each call finds where the answer starts (after the chat template's answer header),
    so one criterion serves every request and every row of a batch.
    """
    import torch
    from transformers import StoppingCriteria

    header = answer_start_ids(tokenizer)

    class RepeatedSentenceStop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = [answer_repeats(row, header, tokenizer) for row in input_ids.tolist()]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return RepeatedSentenceStop()


class StreamTrimmer:
    """Streams an answer without its repeat: text that may be starting a repeated sentence is held back.

    Feed it the model's deltas; it returns what can be shown. Text after the last sentence end is held
    only while it is the beginning of a sentence the answer already said; once the repeat completes,
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
        for match in _SENTENCE_END.finditer(self.text):
            end, tail = match.start(), match.end()
        partial = _key(self.text[tail:])
        said = [_key(s) for s in _SENTENCE_END.split(self.text[:tail])]
        if partial and any(len(k) >= MIN_WORDS and k[: len(partial)] == partial for k in said):
            return self._show(end)
        return self._show(len(self.text))

    def finish(self) -> str:
        """The rest of the answer once generation has ended."""
        return "" if self.done else self._show(len(self.text))

    def _show(self, upto: int) -> str:
        out = self.text[self.shown : upto] if upto > self.shown else ""
        self.shown = max(self.shown, upto)
        return out


_CONTENT = re.compile(r"[a-z0-9]{3,}")


def supporting_source(answer: str, passages: Sequence[str], min_share: float = 0.6) -> int | None:
    """The 1-based number of the passage that most of the answer's opening words come from, if any.

    The answer's first two sentences are compared word by word (lower-case words of 3+ characters) with each
    passage; the best passage counts when it holds at least ``min_share`` of them.
    """
    opening = " ".join(_SENTENCE_END.split(answer.strip())[:2])
    shares = _shares(opening, _vocabularies(passages))
    if not shares:
        return None
    best = max(range(len(shares)), key=shares.__getitem__)
    return best + 1 if shares[best] >= min_share else None


def citation_to_add(answer: str, passages: Sequence[str]) -> str:
    """`` [n]`` for an answer that cites nothing but is taken from source n (the chat links it); else ``""``.

    A small model copying its source often leaves the number out; the reader still needs to see where the text
    comes from. An answer that cites something, or that declines, gets nothing.
    """
    from rag_app.prompts import ABSTAIN_ANSWER, cited_numbers

    if not answer.strip() or cited_numbers(answer) or answer.strip().startswith(ABSTAIN_ANSWER[:12]):
        return ""
    number = supporting_source(answer, passages)
    return f" [{number}]" if number else ""


#: A citation is renumbered only to a source that holds at least this share of its text's words ...
ATTRIBUTION_MIN_SHARE = 0.6
#: ... and this much more of them than the source it names (so near ties, e.g. two pages saying the same, stay).
ATTRIBUTION_MARGIN = 0.2
#: What may still become a citation at the end of streamed text ("[", "[1", "[12").
_OPEN_CITATION = re.compile(r"\[\d{0,2}$")


def _vocabularies(passages: Sequence[str]) -> list[set[str]]:
    return [set(_CONTENT.findall(p.lower())) for p in passages]


def _shares(text: str, vocabularies: Sequence[set[str]]) -> list[float] | None:
    """Share of ``text``'s words (lower-case, 3+ characters) in each vocabulary; None under 4 words or none given."""
    words = _CONTENT.findall(text.lower())
    if len(words) < 4 or not vocabularies:
        return None
    return [sum(w in vocab for w in words) / len(words) for vocab in vocabularies]


def _attributed_source(text: str, vocabularies: Sequence[set[str]], cited: int) -> int:
    """The number a citation closing ``text`` should carry: ``cited``, or the source the text was taken from.

    Small models copy a passage and then write the wrong number after it ("A hernia happens when ... [1]" with the
    hernia page as [2]). The citation is moved to source m when m holds at least :data:`ATTRIBUTION_MIN_SHARE` of the
    text's words and :data:`ATTRIBUTION_MARGIN` more than source ``cited`` does.
    """
    shares = _shares(text, vocabularies)
    if not shares:
        return cited
    best = max(range(len(shares)), key=shares.__getitem__)
    named = shares[cited - 1] if 1 <= cited <= len(shares) else 0.0
    return best + 1 if shares[best] >= ATTRIBUTION_MIN_SHARE and shares[best] >= named + ATTRIBUTION_MARGIN else cited


class StreamAttributor:
    """Streams an answer with every single-number citation ``[n]`` pointing at the source its text came from.

    Each ``[n]`` closes the text since the previous citation; it is renumbered to the source that holds clearly more
    of those words (:data:`ATTRIBUTION_MIN_SHARE`, :data:`ATTRIBUTION_MARGIN`). Text found in no source keeps the
    number the model wrote, and lists (``[1, 2]``) are left as they are. Feed it the text as it is shown; it returns
    what can be shown now, holding back only an unfinished ``[n`` (a number depends only on the text before it, so
    nothing shown changes later).
    """

    def __init__(self, passages: Sequence[str]) -> None:
        self.vocabularies = _vocabularies(passages)
        self.text = ""
        self.shown = 0  # characters of ``text`` already returned
        self.closes = 0  # where the text the next citation closes starts

    def feed(self, delta: str) -> str:
        """Add shown text; return its attributed part that can be shown now."""
        self.text += delta
        held = _OPEN_CITATION.search(self.text, self.shown)
        return self._show(held.start() if held else len(self.text))

    def finish(self) -> str:
        """The rest (an unfinished ``[`` at the very end is shown as it is)."""
        return self._show(len(self.text))

    def _show(self, upto: int) -> str:
        out = []
        for match in SINGLE_CITATION.finditer(self.text, self.shown, upto):
            cited = int(match.group(1))
            number = _attributed_source(self.text[self.closes : match.start()], self.vocabularies, cited)
            out.append(self.text[self.shown : match.start()] + (match.group(0) if number == cited else f"[{number}]"))
            self.shown = self.closes = match.end()
        out.append(self.text[self.shown : upto])
        self.shown = max(self.shown, upto)
        return "".join(out)


def attribute_citations(answer: str, passages: Sequence[str]) -> str:
    """``answer`` with every single-number citation ``[n]`` pointing at the source its text came from
    (:class:`StreamAttributor`, fed the whole answer at once)."""
    attributor = StreamAttributor(passages)
    return attributor.feed(answer) + attributor.finish()


def finish_citations(answer: str, passages: Sequence[str], attribute: bool = True) -> str:
    """The citations of a finished answer: :func:`attribute_citations` (when ``attribute``), then :func:`citation_to_add`."""
    answer = attribute_citations(answer, passages) if attribute else answer
    return answer + citation_to_add(answer, passages)


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
    from rag_app.prompts import answer_text

    if not 0 <= index < len(passages):
        return ""
    texts = [answer_text(p) for p in passages]
    texts.insert(0, texts.pop(index))
    if texts[0][:1].islower():  # a chunk that starts mid-sentence: open with its first whole sentence
        rest = _SENTENCE_END.split(texts[0], maxsplit=1)
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


def answer_opening(tokenizer: Any, passages: Sequence[str], alternatives: Sequence[int] = (), index: int = 0) -> Opening | None:
    """The :class:`Opening` of an answer from ``passages`` for a model with ``tokenizer``; None without one.

    Args:
        tokenizer: The model's Hugging Face tokenizer.
        passages: The sources' texts in citation order.
        alternatives: First tokens allowed instead of the opening (e.g. the decline's), when the model may decline.
        index: The source the answer opens with (0 = the top one).
    """
    words = opening_words(passages, index)
    ids = tuple(tokenizer(words, add_special_tokens=False)["input_ids"]) if words else ()
    return Opening(ids, tuple(a for a in alternatives if a != ids[0])) if ids else None


class OpeningProcessor:
    """A transformers logits processor: each row of a batch opens as its :class:`Opening` says (None: free).

    Rows start generating together (left padding), so the first call sees every row's first answer token.
    One processor per ``generate`` call.
    """

    def __init__(self, openings: Sequence[Opening | None]) -> None:
        self.openings = list(openings)
        self.start: int | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.start is None:
            self.start = input_ids.shape[1]
        mask = None
        for row, opening in enumerate(self.openings):
            allowed = opening.allowed(input_ids[row, self.start :].tolist()) if opening else None
            if allowed is None:
                continue
            if mask is None:
                mask = scores.new_zeros(scores.shape, dtype=bool)
            mask[row] = True
            mask[row, allowed] = False
        return scores if mask is None else scores.masked_fill(mask, float("-inf"))
