"""Citations that point where their words came from.

A small model copies one source and often writes another's number after it. :func:`attribute_citations` (and
:class:`StreamAttributor` while streaming) renumbers each ``[n]`` to the source that holds clearly more of the words
it closes; :func:`citation_to_add` cites the source of an answer that cites nothing.
"""

from __future__ import annotations

import re
from typing import Sequence

from rag_app.text.prompts import ABSTAIN_ANSWER, SINGLE_CITATION, cited_numbers
from rag_app.text.words import content_words, sentences, share_found

def supporting_source(answer: str, passages: Sequence[str], min_share: float = 0.6) -> int | None:
    """The 1-based number of the passage that most of the answer's opening words come from, if any.

    The answer's first two sentences are compared word by word (lower-case words of 3+ characters) with each
    passage; the best passage counts when it holds at least ``min_share`` of them.
    """
    opening = " ".join(sentences(answer)[:2])
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
    return [set(content_words(p)) for p in passages]


def _shares(text: str, vocabularies: Sequence[set[str]]) -> list[float] | None:
    """Share of ``text``'s words (lower-case, 3+ characters) in each vocabulary; None under 4 words or none given."""
    found = content_words(text)
    if len(found) < 4 or not vocabularies:
        return None
    return [share_found(found, vocab) for vocab in vocabularies]


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
