"""What the model is shown of each source: the page's sentences without glued headings, from a chosen sentence on.

A QA pair's chunk is ``Question: ...\\nAnswer: ...`` (later chunks of a long page start mid-text). The engine shows
the model each source's answer without the section headings NIH pages lost their line breaks around
(:func:`rag_app.headings.drop_headings`), so a copied heading is never glued into a sentence; and the top source from
the sentence that answers what was asked (:func:`shown_node`, the sentence chosen by the re-ranker), so the answer
opens there and not with the page's first words. In a conversation, a page the answers so far already quoted is
shown without the sentences they said (:func:`unsaid_sentences`).
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

from llama_index.core.schema import NodeWithScore

from rag_app.index.topics import topic_key
from rag_app.text.headings import drop_headings
from rag_app.text.prompts import CITATION
from rag_app.text.pointers import points_elsewhere
from rag_app.text.words import sentences, words

ANSWER_MARK = "Answer: "


def split_passage(text: str) -> tuple[str, str]:
    """``(question line with its answer mark, answer text)`` of a chunk; the first part is empty for a later chunk."""
    head, sep, answer = text.partition(ANSWER_MARK)
    return (head + sep, answer) if sep else ("", text)


def page_sentences(node: NodeWithScore) -> list[str]:
    """The sentences of a source's answer text, section headings and sentences that only point elsewhere dropped
    (:func:`rag_app.text.pointers.points_elsewhere`; a page of nothing else keeps them), a chunk's leading fragment
    included."""
    _, answer = split_passage(node.node.get_content())
    found = sentences(drop_headings(answer, str(node.node.metadata.get("focus") or "")))
    return [s for s in found if not points_elsewhere(s)] or found


def shown_node(
    node: NodeWithScore, start: int = 0, keep: Sequence[int] | None = None, page: Sequence[str] | None = None
) -> NodeWithScore:
    """``node`` as the model is shown it: its answer without glued headings, from sentence ``start`` on (or only the
    sentences ``keep`` names, by index).

    The question line stays, so the prompt keeps the format the model was trained on; the metadata (topic, link) and
    id are the source's own. ``page``: its :func:`page_sentences`, when already read.
    """
    head, _ = split_passage(node.node.get_content())
    page = page_sentences(node) if page is None else page
    body = " ".join(page[start:] if keep is None else [page[i] for i in keep])
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


def unsaid_sentences(page: Sequence[str], said: str) -> list[int]:
    """The indexes of the ``page``'s sentences that ``said`` (the answers so far) doesn't hold, citations aside (most of
    a sentence's three-word runs, :data:`SAID_SHARE`). A sentence under :data:`SAID_WORDS` words ("Signs include:",
    "- Fever") goes with the next longer one (the last ones with the one before them).

    Example:
        >>> page = ["Gout is a form of arthritis.", "It runs in families.", "Signs:", "A red, swollen big toe."]
        >>> unsaid_sentences(page, "Gout is a form of arthritis [1]. It runs in families.")
        [2, 3]
    """
    held = _runs(words(CITATION.sub(" ", said)))
    verdicts: list[bool | None] = []
    for sentence in page:
        found = words(sentence)
        runs = _runs(found)
        verdicts.append(len(runs & held) < SAID_SHARE * len(runs) if len(found) >= SAID_WORDS else None)
    following: bool | None = None
    for i in reversed(range(len(page))):
        verdicts[i] = following = verdicts[i] if verdicts[i] is not None else following
    last = next((v for v in reversed(verdicts) if v is not None), True)
    return [i for i, v in enumerate(verdicts) if (last if v is None else v)]


def _form_of(name: str, topic: frozenset[str]) -> bool:
    """Whether ``name`` names a form of ``topic`` (its words): it ends with them, as "type 1 diabetes" ends with
    "diabetes" ("pain medicines" is no form of pain)."""
    key = topic_key(name)
    found = [w for w in words(name) if w in key]
    return bool(topic) and len(found) > len(topic) and set(found[-len(topic):]) == topic


def _sibling(name: str, asked: Sequence[frozenset[str]]) -> bool:
    """Whether topic ``name`` is another form of the asked topic: it shares a word with one of its names and holds none
    of them nor is held by one ("type 2 diabetes" beside "type 1 diabetes"; not "diabetes", which one holds, nor "type 1
    diabetes in children")."""
    key = topic_key(name)
    return any(key & own for own in asked) and not any(key <= own or own <= key for own in asked)


def turns_to_sibling(
    page: Sequence[str], start: int, topic: str, asked: Iterable[str], named: Callable[[str], list[str]],
    synonyms: Callable[[list[str]], list[str]] = list,
) -> int | None:
    """The first of the ``page``'s sentences after ``start`` that turns to another form of an ``asked`` topic (names one
    that shares a word with it, :func:`_sibling`, and names no asked topic), or None.

    A page on diabetes (its ``topic``) goes on from type 1 to type 2: an answer about type 1 diabetes that copies it on
    answers what was not asked. Only asked names of a form of the page's topic count (:func:`_form_of`: a page on the
    asked topic itself may well compare it with another), the narrowest of them ("type 1 diabetes", not "diabetes")
    with their ``synonyms`` ("autoimmune diabetes"); the turn is to another form of the page's topic, never to one the
    message names ("type 2 diabetes" where both are asked about). ``named``: the topic names a text names
    (:meth:`rag_app.index.topics.FocusMatcher.named`).

    Example:
        >>> page = ["Type 1 diabetes needs insulin.", "It starts young.", "Type 2 diabetes is the most common."]
        >>> topics = lambda s: [n for n in ("type 1 diabetes", "type 2 diabetes") if n in s.lower()]
        >>> turns_to_sibling(page, 0, "Diabetes", ["type 1 diabetes"], topics)
        2
        >>> turns_to_sibling(page, 0, "Type 1 Diabetes", ["type 1 diabetes"], topics) is None
        True
    """
    asked = list(asked)
    broader = topic_key(topic)
    narrower = [n for n in asked if _form_of(n, broader)]
    narrowest = [n for n in narrower if not any(topic_key(n) < topic_key(other) for other in narrower)]
    keys = list({topic_key(n) for n in synonyms(narrowest)})
    if not keys:
        return None
    told = {topic_key(n) for n in synonyms(asked)}  # a topic the message names is never a turn away from it
    for i in range(start + 1, len(page)):
        found = named(page[i])
        turns = any(topic_key(n) not in told and _form_of(n, broader) and _sibling(n, keys) for n in found)
        if turns and not any(topic_key(n) in keys for n in found):
            return i
    return None
