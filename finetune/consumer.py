"""Questions the way people write them, made from MedQuAD's own pairs (training data only).

MedQuAD's questions are templates ("What are the treatments for Gout ?") that their answer pages repeat
word for word. People write otherwise: a subject line, a story about themselves or a relative, the question
asked with "it" or "this", several questions at once, the condition misspelt, no question mark. A model
trained only on the templates learns to answer when a source repeats the question and to decline
otherwise. :func:`consumer_question` rewrites a pair's question in that style, from its topic (focus) and
question type alone, so every rewrite is still answered by the pair's page; :func:`sibling_questions`
finds the other NIH collections' questions about the same topic and type (other wordings, same answer).

Nothing here reads real consumer questions: the LiveQA messages stay evaluation-only.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import Any, Sequence

from rag_app.text.asking import ASKS, MORE_ASKS

PEOPLE = ["my mother", "my father", "my son", "my daughter", "my wife", "my husband", "my sister", "my brother",
          "my grandmother", "my friend", "my 5 year old", "my aunt", "my uncle", "my baby"]
STORIES = [
    "{p} was just diagnosed with {t}.", "{p} has {t}.", "the doctor told {p} it is {t}.",
    "i have been diagnosed with {t}.", "i was told i have {t}.", "{p} was told last week they may have {t}.",
    "i am 45 and i have {t}.", "we just found out {p} has {t} and we are worried.", "i have had {t} for years.",
    "i read about {t} online.", "our doctor mentioned {t} at the last visit.",
]
GREETINGS = ["hi,", "hello,", "dear sir or madam,", "good morning.", "hello i have a question.", ""]
CLOSINGS = ["thank you.", "thanks in advance.", "please help.", "any information would be appreciated.",
            "thank you for your time.", "please reply.", ""]
SUBJECTS = ["{t}", "question about {t}", "{t} question", "help", "question", "information"]
PRONOUNS = ["it", "this", "this condition", "that"]

# Sentences of a story that name nothing the question asks about, as long messages carry them.
BACKGROUND = [
    "i am 34 years old.", "she is 67 and has had high blood pressure for years.", "he is 8 years old.",
    "it started about two weeks ago.", "we have seen three different doctors already.", "the pain gets worse at night.",
    "i am really worried and don't know what to do.", "she takes medicine for her thyroid.", "he has been very tired lately.",
    "nobody in our family has had anything like this.", "i have been searching online for days.", "we live in a small town far from a hospital.",
    "the doctor did not explain much.", "my mother had something similar years ago.", "i am pregnant with my second child.",
    "he had surgery on his knee last year.", "i can't afford many more tests.", "she smokes and drinks a little.",
    "the symptoms come and go.", "i am a 52 year old woman.", "he was born 3 weeks early.", "we are going to see a specialist next month.",
]
DISTRACTOR_STORIES = ["{p} also has {o}.", "a few years ago {p} was treated for {o}.", "i also have {o}."]

_WORD = re.compile(r"[A-Za-z]{6,}")


def misspell(text: str, rng: random.Random, rate: float = 0.3) -> str:
    """Drop, double or swap one letter in some of the long words (as typed in a hurry)."""

    def one(match: re.Match[str]) -> str:
        word = match.group(0)
        if rng.random() >= rate:
            return word
        i = rng.randrange(1, len(word) - 2)
        kind = rng.randrange(3)
        if kind == 0:
            return word[:i] + word[i + 1 :]
        if kind == 1:
            return word[:i] + word[i] + word[i:]
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]

    return _WORD.sub(one, text)


def topic_name(focus: str) -> str:
    """The topic as people write it: lower case, no trailing qualifiers in parentheses."""
    return re.sub(r"\s*\([^)]*\)", "", focus).strip().lower() or focus.lower()


def consumer_question(
    focus: str,
    qtype: str,
    rng: random.Random,
    other_types: Sequence[str] = (),
    long_rate: float = 0.0,
    other_topics: Sequence[str] = (),
) -> str:
    """A consumer-style message asking about ``focus`` for ``qtype`` (answered by that pair's page).

    Args:
        focus: The pair's topic.
        qtype: The pair's MedQuAD question type.
        rng: Random source (seeded by the caller).
        other_types: Other question types of the same topic: one may be asked too, so the page answers
            the message only in part, as real messages often are.
        long_rate: Share of messages written long: a story of several sentences (age, history, worries,
            sometimes another condition from ``other_topics``) and the asks of :data:`MORE_ASKS` too. At 0 no
            extra random draw is made, so data built before these options is built the same.
        other_topics: Conditions a long story may mention beside the asked one.

    Returns:
        A message such as ``"gout question. hi, my father has gout. how is it treated? thanks."``.
    """
    topic = topic_name(focus)
    asks = ASKS.get(qtype) or ASKS["information"]
    long = long_rate > 0 and rng.random() < long_rate
    if long:
        asks = asks + MORE_ASKS.get(qtype if qtype in ASKS else "information", [])
    parts: list[str] = []
    story = rng.random() < 0.6 or long
    if rng.random() < 0.5:
        parts.append(rng.choice(GREETINGS))
    if long:
        person = rng.choice(PEOPLE)
        story_parts = rng.sample(BACKGROUND, rng.randint(1, 4))
        after = 0  # another condition is told before the asked one, so "it" still means the asked one
        if other_topics and rng.random() < 0.3:
            other = topic_name(rng.choice(other_topics))
            after = rng.randrange(len(story_parts) + 1)
            story_parts.insert(after, rng.choice(DISTRACTOR_STORIES).format(p=person, o=other))
            after += 1
        story_parts.insert(rng.randint(after, len(story_parts)), rng.choice(STORIES).format(p=person, t=topic))
        parts.extend(story_parts)
    elif story:
        parts.append(rng.choice(STORIES).format(p=rng.choice(PEOPLE), t=topic))
    # Once a story named the topic, people ask with a pronoun.
    ref = rng.choice(PRONOUNS) if story and rng.random() < 0.7 else topic
    ask = rng.choice(asks).format(t=ref)
    parts.append(ask)
    if other_types and rng.random() < 0.25:
        extra = rng.choice(list(other_types))
        parts.append(rng.choice(ASKS.get(extra) or ASKS["information"]).format(t=rng.choice(PRONOUNS) if ref != topic else "it"))
    if rng.random() < 0.4:
        parts.append(rng.choice(CLOSINGS))
    text = " ".join(p for p in parts if p)
    if rng.random() < 0.5:
        text = text.replace("?", "", 1 if rng.random() < 0.5 else -1)
    if rng.random() < 0.5:
        text = misspell(text, rng)
    if rng.random() < 0.5:  # sentence case, as most people write
        text = ". ".join(s[:1].upper() + s[1:] for s in text.split(". "))
    if rng.random() < 0.6:  # the subject line, as consumer messages carry one
        text = f"{rng.choice(SUBJECTS).format(t=topic)}. {text}"
    return text


def sibling_questions(rows: Sequence[dict[str, Any]], normalize: Any) -> dict[str, list[str]]:
    """Other wordings of each row's question: the questions of rows with the same topic and type.

    Args:
        rows: Split rows (``doc_id``, ``question``, ``focus``, ``question_type``).
        normalize: The topic normaliser (``finetune.data.normalize_focus``), so one topic has one key.

    Returns:
        ``{doc_id: [questions of the same topic and type worded differently]}`` (only rows that have some).
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        key = normalize(str(row.get("focus") or ""))
        if key:
            groups[(key, str(row.get("question_type") or ""))].append(row)
    out: dict[str, list[str]] = {}
    for members in groups.values():
        for row in members:
            own = " ".join(row["question"].lower().split())
            others = sorted({m["question"] for m in members if " ".join(m["question"].lower().split()) != own})
            if others:
                out[row["doc_id"]] = others
    return out


def topic_types(rows: Sequence[dict[str, Any]], normalize: Any) -> dict[str, set[str]]:
    """``{normalised topic: question types it has}`` over ``rows``."""
    out: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        key = normalize(str(row.get("focus") or ""))
        if key and row.get("question_type"):
            out[key].add(str(row["question_type"]))
    return out
