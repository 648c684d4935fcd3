"""Question types asked without cue words: the nearest plain way of asking, with the real embedding model."""

from __future__ import annotations

import pytest

from rag_app.index.asked import CUES_ONLY, AskedTypes, with_topic_as_it
from rag_app.index.topics import FocusMatcher, question_types


@pytest.fixture(scope="module")
def asked(embed_model) -> AskedTypes:
    from rag_app.config import Settings

    return AskedTypes(embed_model, Settings().ask_similarity)


#: The index's topic names, as far as these tests need them.
MATCHER = FocusMatcher({"a": "Lupus", "b": "Celiac Disease", "c": "Hiatal Hernia", "d": "Sarcoidosis"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # No cue word in any of them (question_types reads nothing).
        ("My husband was told he has a hiatal hernia. what would it feel like?", {"symptoms"}),
        ("she was just diagnosed with lupus. which pills work for it?", {"treatment"}),
        ("is lupus deadly?", {"outlook"}),
        ("what happens to people with lupus over the years?", {"outlook"}),
        ("i think i might have celiac disease, how can i be sure i have it?", {"symptoms"}),
    ],
)
def test_a_question_without_cue_words_gets_the_type_of_the_nearest_way_of_asking(asked: AskedTypes, text: str, expected: set[str]) -> None:
    assert question_types(text) == set()
    assert asked(text, MATCHER) == expected


def test_the_topic_named_reads_as_it_as_the_ways_of_asking_write_it(asked: AskedTypes) -> None:
    # With "lupus" in it the question is further from "is it fatal?" than the cutoff.
    assert asked.nearest("is lupus deadly?")[1] < asked.min_similarity <= asked.nearest("is lupus deadly?", MATCHER)[1]


@pytest.mark.parametrize("text", ["my son was diagnosed with celiac disease", "please help me, I feel so tired", "thank you so much"])
def test_a_message_that_asks_nothing_in_particular_gets_no_type(asked: AskedTypes, text: str) -> None:
    assert asked(text, MATCHER) == set()


def test_cue_words_decide_where_they_find_a_type_and_cues_only_reads_nothing_else(asked: AskedTypes, embed_model) -> None:
    assert asked("is there any cure for lupus? what causes it") == {"treatment", "causes"}
    assert AskedTypes(embed_model, CUES_ONLY)("she was just diagnosed with lupus. which pills work for it?", MATCHER) == set()


def test_the_topic_a_question_names_reads_as_it() -> None:
    matcher = FocusMatcher({"a": "Hanhart syndrome", "b": "Parkinson's Disease", "c": "Gout"})
    assert with_topic_as_it("how did my sister end up with hanhart syndrome?", matcher) == "how did my sister end up with it?"
    assert with_topic_as_it("Gout. why does it hurt so much", matcher) == "it. why does it hurt so much"
    assert with_topic_as_it("nothing named here", matcher) == "nothing named here"
    assert with_topic_as_it("how did he get gout", None) == "how did he get gout"


def test_a_message_is_remembered_for_the_topic_names_it_was_read_with(asked: AskedTypes, monkeypatch) -> None:
    """The engine and the retriever read the same message: the second reading embeds nothing; other topic names
    (a new index copy) read it afresh."""
    import rag_app.index.asked as module

    text = "she was just diagnosed with lupus. which pills work for it?"
    first = asked.nearest(text, MATCHER)
    calls = []
    real = module.embed_queries
    monkeypatch.setattr(module, "embed_queries", lambda model, texts: calls.append(texts) or real(model, texts))
    assert asked.nearest(text, MATCHER) == first and calls == []
    other = FocusMatcher({"a": "Lupus"})
    assert asked.nearest(text, other)[0] == first[0] and len(calls) == 1


def test_the_types_asked_are_asked_again_plainly_for_the_reranker() -> None:
    from rag_app.text.asking import with_plain_asks

    assert with_plain_asks("My mom has kidney stones. What brings it on?", {"causes"}) == (
        "My mom has kidney stones. What brings it on? What causes it?"
    )
    both = with_plain_asks("what can he take and will it come back?", {"treatment", "outlook"})
    assert both.endswith("? What is the outlook for it? How is it treated?")
    assert with_plain_asks("my son was diagnosed with celiac disease", set()) == "my son was diagnosed with celiac disease"


def test_a_question_asked_the_plain_way_is_told_apart_from_other_wordings(asked: AskedTypes) -> None:
    """MedQuAD's own wording is a plain way of asking (the re-ranker reads it as written); a patient's isn't."""
    assert asked.asked_plainly("What are the symptoms of Lupus ?", MATCHER) == {"symptoms"}
    assert asked.asked_plainly("How is sarcoidosis treated?", MATCHER) == {"treatment"}
    assert asked.asked_plainly("My sister has lupus. What brings it on?", MATCHER) == set()
    assert asked.asked_plainly("she was just diagnosed with lupus. which pills work for it?", MATCHER) == set()
