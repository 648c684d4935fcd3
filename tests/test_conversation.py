"""Conversations: follow-ups are made standalone before retrieval; the chat engine keeps the history."""

from __future__ import annotations

import pytest

from rag_app.answer.conversation import CLARIFY, HELLO, WELCOME, build_chat_engine, standalone_question
from rag_app.retrieval.modes import topic_matcher


@pytest.fixture()
def chat_engine(settings, embed_model):
    """A chat engine over a small real index (Glaucoma, Gout, Asthma, Anemia), with a mock LLM."""
    from llama_index.core.llms import MockLLM

    from rag_app.index.build import build_index

    build_index(settings, embed_model=embed_model, show_progress=False)
    return build_chat_engine(settings, llm=MockLLM(max_tokens=4), embed_model=embed_model)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def test_follow_ups_become_standalone_questions(chat_engine) -> None:
    matcher = topic_matcher(chat_engine.query_engine.retriever)
    ask = lambda message, *history: standalone_question(message, [user(h) for h in history], matcher)  # noqa: E731
    assert ask("How is it treated?", "What is gout?").question == "How is gout treated?"
    assert ask("What are its symptoms?", "Tell me about asthma").question == "What are asthma's symptoms?"
    assert ask("Can that condition be prevented?", "My son has asthma.").question == "Can asthma be prevented?"
    assert ask("What are the treatments?", "What is glaucoma?").question == "glaucoma: What are the treatments?"
    # A short follow-up naming nothing, or only names of common words, is about the conversation's topic.
    assert ask("what should he eat?", "my son has asthma").question == "asthma: what should he eat?"
    assert ask("is there any medicine?", "What is glaucoma?").question == "glaucoma: is there any medicine?"
    assert ask("is there any medicine for it?", "What is glaucoma?").question == "is there any medicine for glaucoma?"
    # Thanks and greetings get a reply, not a search, and the topic stays.
    assert ask("thanks a lot!", "What is gout?").reply == WELCOME and ask("Hello", "What is gout?").reply == HELLO
    assert ask("ok thank you", "What is gout?").reply == WELCOME and ask("hi, is gout hereditary?").reply is None
    assert ask("is it good?", "What is gout?").reply is None and ask("thanks " * 5000 + "x").reply is None  # at once
    assert ask("How is it treated?", "What is gout?", "thanks").question == "How is gout treated?"
    # "they" meaning the doctors: the thing referred back to comes after it.
    assert ask("how do they get rid of it?", "What is gout?").question == "how do they get rid of gout?"
    assert ask("do they run in families?", "What is gout?").question == "do gout run in families?"
    # A longer follow-up that asks an aspect and names nothing is about the conversation's topic.
    assert ask("what can she do so she does not get heart problems later?", "my wife has asthma").question == (
        "asthma: what can she do so she does not get heart problems later?"
    )
    # A new topic and nothing else keeps the aspect asked before.
    assert ask("what about anemia?", "How is gout treated?").question == "How is anemia treated?"
    assert ask("And glaucoma?", "What is gout?", "How is it treated?").question == "How is glaucoma treated?"
    # Messages that stand on their own are left exactly as written; so is every first message.
    for message, history in [("What is anemia?", ["How is gout treated?"]), ("What causes glaucoma in adults?", ["What is gout?"]),
                             ("thanks!", ["What is gout?"]), ("What is gout?", [])]:
        resolution = ask(message, *history)
        assert resolution.question == message and not resolution.changed and not resolution.clarify
    # A reference with nothing to refer to gets a clarifying question; the next bare topic answers it.
    assert ask("How is it treated?").clarify == CLARIFY
    pending = [user("How is it treated?"), {"role": "assistant", "content": CLARIFY}]
    assert standalone_question("gout", pending, matcher).question == "How is gout treated?"


def test_chat_engine_retrieves_the_follow_ups_topic(chat_engine) -> None:
    first = chat_engine.chat("What is gout?")
    assert first.source_nodes[0].node.metadata["focus"] == "Gout" and first.metadata["searched_for"] == "What is gout?"
    second = chat_engine.chat("How is it treated?")
    top = second.source_nodes[0].node.metadata
    assert top["focus"] == "Gout" and top["question_type"] == "treatment"
    assert second.metadata["searched_for"] == "How is gout treated?" and second.metadata["rewritten"]
    assert [m.role.value for m in chat_engine.chat_history] == ["user", "assistant"] * 2
    # The answer's sources travel with it in the history (what the next message's topic may follow).
    assert chat_engine.chat_history[1].additional_kwargs["source_ids"][0] == first.source_nodes[0].node.ref_doc_id
    assert first.metadata["source_ids"] == chat_engine.chat_history[1].additional_kwargs["source_ids"]
    # retrieve(message, chat_history) measures retrieval over a conversation without generating.
    nodes = chat_engine.retrieve("How is it treated?", [user("What is asthma?")])
    assert nodes[0].node.metadata["focus"] == "Asthma"
    chat_engine.reset()
    assert chat_engine.chat_history == []
    clarify = chat_engine.chat("How is it treated?")
    assert clarify.response == CLARIFY and clarify.source_nodes == [] and clarify.metadata["clarify"]
    thanks = chat_engine.chat("thank you so much!")
    assert thanks.response == WELCOME and thanks.source_nodes == []


def test_stream_chat_streams_and_records_the_answer(chat_engine) -> None:
    response = chat_engine.stream_chat("How is it treated?", chat_history=[])
    assert "".join(response.response_gen) == CLARIFY
    chat_engine.reset()
    chat_engine.chat("What is glaucoma?")
    streamed = chat_engine.stream_chat("How is it treated?")
    tokens = list(streamed.response_gen)
    assert len(tokens) > 1 and streamed.source_nodes[0].node.metadata["focus"] == "Glaucoma"
    # Consuming the stream waits for the answer to join the history (LlamaIndex's own behaviour).
    assert chat_engine.chat_history[-1].content == "".join(tokens) and len(chat_engine.chat_history) == 4
    assert chat_engine.chat_history[-1].additional_kwargs["source_ids"][0] == streamed.source_nodes[0].node.ref_doc_id


def test_a_story_keeps_its_condition_as_the_topic_not_words_that_happen_to_be_names() -> None:
    """"all the time" is not "ALL", "kids ... syndrome" is not "KID syndrome", scattered words name nothing."""
    from rag_app.index.topics import FocusMatcher

    matcher = FocusMatcher(
        {"g/1": "Gout", "l/1": "acute lymphoblastic leukemia", "k/1": "keratitis-ichthyosis-deafness syndrome",
         "m/1": "Marfan Syndrome", "h/1": "High Blood Pressure", "h/2": "High blood pressure medicines"},
        {"l/1": ["ALL"], "k/1": ["KID syndrome"]},
    )
    ask = lambda message, *history: standalone_question(message, [user(h) for h in history], matcher)  # noqa: E731
    assert ask("Is it hereditary?", "My dad has gout and it hurts all the time, what can he take?").question == "Is gout hereditary?"
    assert ask("how is it treated?", "will all my kids get marfan syndrome?").question == "how is marfan syndrome treated?"
    story = "My mom takes medicine for her high blood pressure. what causes high blood pressure?"
    assert ask("is it inherited?", story).question == "is high blood pressure inherited?"
    assert ask("can it come back?", "My son has ALL. How is it treated?").question == "can ALL come back?"
    # What a treatment does: "it" is the pill, not the condition.
    pill = "my dad has gout, is there a pill for this?"
    assert ask("how long before it works?", pill).question == "how long before gout treatment works?"
    assert ask("does it have side effects?", pill).question == "does gout treatment have side effects?"
    assert ask("does it hurt?", pill).question == "does gout hurt?"
    # What is taken is the treatment: "them" are the pills the story named, not gout.
    assert ask("how long do i have to take them", pill).question == "how long do i have to take gout treatment"
    assert ask("can I stop using it?", pill).question == "can I stop using gout treatment?"
    assert ask("will it take long to heal?", pill).question == "will gout take long to heal?"


def test_a_story_that_describes_a_symptom_keeps_the_condition_it_names() -> None:
    """"it itches" finds the topic Itching through another form of its word; "eczema" names the condition, so the
    follow-up is about eczema (Itching is the more specific name: fewer names share its word)."""
    from rag_app.index.topics import FocusMatcher

    matcher = FocusMatcher({"e/1": "Eczema", "i/1": "Itching", "e/2": "Eczema herpeticum"}, {})
    assert matcher.named("has eczema, it itches") == ["Itching", "Eczema"]  # without the rule, Itching would be the topic
    story = "my son is 6 and has eczema on both arms, it itches so bad he cant sleep. what can we put on it?"
    assert standalone_question("will he grow out of it?", [user(story)], matcher).question == "will he grow out of eczema?"
    assert standalone_question("does it go away?", [user("I have itching all over my back")], matcher).question == (
        "does itching go away?"
    )


def test_a_condition_written_without_its_head_word_is_the_topic() -> None:
    """"parkinsons" names Parkinson's Disease without "disease" (a word on most pages), so the follow-up is about it,
    not about "medicine" (the one name written in full, a common word); "kidney" alone names no topic, being on
    many other topics' pages."""
    from rag_app.index.topics import FocusMatcher

    foci = {"p/1": "Parkinson's Disease", "m/1": "Medicines", "k/1": "Kidney Disease", "g/1": "Gout"}
    foci |= {f"o/{i}": f"Topic {i}" for i in range(30)}
    pages = [("p/1", "Parkinson's disease is a brain disorder."), ("m/1", "Medicines treat diseases."), ("k/1", "Kidney disease ...")]
    pages += [(f"o/{i}", f"This disease affects the kidney and may need medicine {i}." if i % 3 == 0 else f"Page {i}.") for i in range(30)]
    matcher = FocusMatcher(foci, texts=lambda: pages)
    story = "my father is 70 and was diagnozed with parkinsons last year. is there medicine that slows it down?"
    assert matcher.named(story) == ["Medicines"] and matcher.named_in_part(story) == ["Parkinson's Disease"]
    assert standalone_question("does it get worse over time?", [user(story)], matcher).question == (
        "does parkinsons get worse over time?"
    )
    # A follow-up naming only a subject of common words (nothing but overview pages on it) asks it about the
    # conversation's topic; a condition of common words ("Kidney Disease", with pages on its treatment) stands alone.
    types = {doc_id: "information" for doc_id in foci} | {"k/2": "treatment"}
    typed = FocusMatcher(foci | {"k/2": "Kidney Disease"}, texts=lambda: pages, types=types)
    assert typed.common("Medicines") and typed.named("is there a medicine?") == ["Medicines"] and typed.common("Kidney Disease")
    assert standalone_question("is there a medicine?", [user("my dad has gout")], typed).question == "gout: is there a medicine?"
    assert standalone_question("is there a medicine?", [], typed).question == "is there a medicine?"
    assert standalone_question("how is kidney disease treated?", [user("my dad has gout")], typed).question == "how is kidney disease treated?"
    assert standalone_question("is there a medicine?", [user("my dad has gout")], matcher).question == "is there a medicine?"  # types unknown
    assert matcher.named("he has parkinsons disease") == ["Parkinson's Disease"]  # the "s" of "'s" is no name word
    assert matcher.named_in_part("my kidney hurts") == [] and matcher.named_in_part("she has gout") == []
    assert FocusMatcher(foci).named_in_part(story) == []  # without page texts nothing is known to be generic


def test_a_misspelt_condition_is_the_topic_in_the_indexs_spelling() -> None:
    """"macular degeneraton" names no topic as written; the follow-up is about Macular Degeneration, not a clarifying
    question. A misspelling counts only where nothing is named right."""
    from rag_app.index.topics import FocusMatcher

    foci = {"a/1": "Macular Degeneration", "g/1": "Glaucoma", "e/1": "Eye Diseases"}
    foci |= {f"o/{i}": f"Topic {i}" for i in range(30)}
    pages = [("a/1", "Macular degeneration is an eye disease."), ("g/1", "Glaucoma is an eye disease."), ("e/1", "Eye diseases.")]
    pages += [(f"o/{i}", f"Page {i}.") for i in range(30)]
    matcher = FocusMatcher(foci, texts=lambda: pages, typo_similarity=0.8)
    story = "My dad (78) has macular degeneraton in one eye. will he go blind?"
    resolution = standalone_question("can his brother get it too?", [user(story)], matcher)
    assert resolution.question == "can his brother get Macular Degeneration too?" and not resolution.clarify
    assert standalone_question("is it inherited?", [user("my dad has glaucoma and macular degeneraton")], matcher).question == (
        "is glaucoma inherited?"
    )


def test_the_topic_follows_the_pages_an_answer_came_from_when_the_message_named_another_by_accident() -> None:
    """"... a twist sends a shock through my body" names Shock; answered from Hand Injuries and Disorders, the
    follow-up is about the hand, not about shock. An answer about the named topic, about a topic sharing a word with it,
    or declined leaves the topic as the person named it."""
    from rag_app.answer.conversation import SOURCE_IDS, answer_message
    from rag_app.index.topics import FocusMatcher

    matcher = FocusMatcher(
        {"s/1": "Shock", "h/1": "Hand Injuries and Disorders", "h/2": "Hand Injuries and Disorders",
         "k/1": "Kidney Stones", "k/2": "Kidney Stones in Adults", "a/1": "Acne"},
        {"s/1": ["circulatory collapse"]},
    )
    story = "my fingers ache and even a sudden twist sends a shock through my body. what is this?"
    follow = "is it something that gets worse with age?"
    answered = [user(story), answer_message("Hand problems include ... [1]", ["h/1", "h/2"])]
    assert standalone_question(follow, answered, matcher).question == "is Hand Injuries and Disorders something that gets worse with age?"
    # Without the answer's sources (an older history) or with a declined answer, the named topic stays.
    assert standalone_question(follow, [user(story)], matcher).question == "is shock something that gets worse with age?"
    declined = [user(story), answer_message("I don't know: the provided sources don't cover this question.", ["h/1"])]
    assert standalone_question(follow, declined, matcher).question == "is shock something that gets worse with age?"
    # Dicts as Streamlit keeps them work too; a source about the named topic keeps it.
    as_dicts = [user(story), {"role": "assistant", "content": "Shock ...", "additional_kwargs": {SOURCE_IDS: ["h/1", "s/1"]}}]
    assert standalone_question(follow, as_dicts, matcher).question == "is shock something that gets worse with age?"
    stones = [user("my mom has kidney stones, what brings them on?"), answer_message("...", ["k/2"])]
    assert standalone_question("can they come back?", stones, matcher).question == "can kidney stones come back?"
    # A message naming no topic takes the answer's: "is it contagious?" after an answer from the acne pages.
    spots = [user("I keep getting red spots with white heads on my face"), answer_message("Acne is ... [1]", ["a/1"])]
    assert standalone_question("is it contagious?", spots, matcher).question == "is Acne contagious?"
