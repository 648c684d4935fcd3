"""What the model is shown of each source: the page's sentences without glued headings, from a chosen sentence on.

A QA pair's chunk is ``Question: ...\\nAnswer: ...`` (later chunks of a long page start mid-text). The engine shows
the model each source's answer without the section headings NIH pages lost their line breaks around
(:func:`rag_app.headings.drop_headings`), so a copied heading is never glued into a sentence; and the top source from
the sentence that answers what was asked (:func:`shown_node`, the sentence chosen by the re-ranker), so the answer
opens there and not with the page's first words. In a conversation, a page the last answer already quoted is shown
from the first sentence that answer didn't say (:func:`first_unsaid`).
"""

from __future__ import annotations

import re
from typing import Sequence

from llama_index.core.schema import NodeWithScore

from rag_app.text.headings import drop_headings
from rag_app.text.prompts import CITATION
from rag_app.text.words import sentences, words

ANSWER_MARK = "Answer: "


def split_passage(text: str) -> tuple[str, str]:
    """``(question line with its answer mark, answer text)`` of a chunk; the first part is empty for a later chunk."""
    head, sep, answer = text.partition(ANSWER_MARK)
    return (head + sep, answer) if sep else ("", text)


def page_sentences(node: NodeWithScore) -> list[str]:
    """The sentences of a source's answer text, section headings dropped (a chunk's leading fragment included)."""
    _, answer = split_passage(node.node.get_content())
    return sentences(drop_headings(answer, str(node.node.metadata.get("focus") or "")))


def shown_node(node: NodeWithScore, start: int = 0) -> NodeWithScore:
    """``node`` as the model is shown it: its answer without glued headings, from sentence ``start`` on.

    The question line stays, so the prompt keeps the format the model was trained on; the metadata (topic, link) and
    id are the source's own.
    """
    head, _ = split_passage(node.node.get_content())
    body = " ".join(page_sentences(node)[start:])
    return NodeWithScore(node=node.node.model_copy(update={"text": f"{head}{body}"}), score=node.score)


#: A sentence opening with these words leans on the one before it ("However, people with bloody diarrhea ...", "If not,
#: your health care provider can ...", "It is caused by ..."): an answer quoting it first would start mid-thought.
LEANS_BACK = re.compile(
    r"\W*(however|but|and|or|so|also|yet|still|thus|therefore|otherwise|instead|furthermore|moreover|additionally"
    r"|in addition|as a result|for this reason|even so|if (not|so)|in (this|that|these|those|such) cases?"
    r"|this|these|that|those|it|its|they|their|them|he|she|his|her|such)\b",
    re.IGNORECASE,
)


def self_contained_start(page: Sequence[str], start: int) -> int:
    """``start``, moved back over the ``page``'s sentences that lean on the one before them (:data:`LEANS_BACK`).

    Example:
        >>> self_contained_start(["Warts may go away.", "If not, a doctor can remove them.", "They can come back."], 2)
        0
    """
    while 0 < start < len(page) and LEANS_BACK.match(page[start]):
        start -= 1
    return start


#: Fewest words of a page's sentence that count as said when an answer holds them ("Yes." says nothing of its own).
SAID_WORDS = 4
#: Share of a sentence's three-word runs an answer must hold for the sentence to count as said: a model copying a long
#: list drops or adds an item, and the reader has still read the list.
SAID_SHARE = 0.6


def _runs(found: Sequence[str]) -> set[tuple[str, ...]]:
    return {tuple(found[i : i + 3]) for i in range(max(len(found) - 2, 1))}


def first_unsaid(page: Sequence[str], start: int, said: str) -> int | None:
    """The first of the ``page``'s sentences from ``start`` on that ``said`` (an earlier answer) doesn't hold, citations
    aside (most of its three-word runs, :data:`SAID_SHARE`); None when it holds them all. Sentences under
    :data:`SAID_WORDS` words don't decide.

    Example:
        >>> page = ["Gout is a form of arthritis.", "It runs in families.", "A diet low in purines helps."]
        >>> first_unsaid(page, 0, "Gout is a form of arthritis [1]. It runs in families.")
        2
    """
    held = _runs(words(CITATION.sub(" ", said)))
    for i in range(start, len(page)):
        found = words(page[i])
        runs = _runs(found)
        if len(found) >= SAID_WORDS and len(runs & held) < SAID_SHARE * len(runs):
            return i
    return None
