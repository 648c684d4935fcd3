"""Topic (focus) matching and question-type cues on consumer wording."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rag_app.index.topics import FocusMatcher, question_types, topic_key

FOCI = {
    "gard/1": "Gilbert syndrome",
    "ghr/1": "Gilbert syndrome",
    "mplus/1": "Lupus",
    "mplus/2": "Breast Cancer",
    "mplus/3": "Lung Cancer",
    "ghr/2": "Klinefelter syndrome",
    "ghr/3": "Down syndrome",
    "x/1": "",
}


def test_named_topic_scores_one_and_stems_match_plurals_and_possessives() -> None:
    matcher = FocusMatcher(FOCI)
    assert len(matcher) == 6  # distinct non-empty names
    scores = matcher.focus_scores("Klinefelter Syndrome. I would like to learn more about my condition.")
    assert scores["Klinefelter syndrome"] == pytest.approx(1.0)
    assert scores["Down syndrome"] < 0.5 and scores["Gilbert syndrome"] < 0.5  # "syndrome" alone is common
    # "gilberts diseases": the rare token carries most of the name's weight
    assert matcher.focus_scores("gilberts diseases. my bilirubin is high")["Gilbert syndrome"] > 0.5


def test_doc_scores_keep_whole_topics_best_first_and_respect_the_threshold() -> None:
    matcher = FocusMatcher(FOCI)
    got = matcher.doc_scores("my mother has breast cancer, and her sister had lupus", min_score=0.5)
    assert got["mplus/2"] == pytest.approx(1.0) and got["mplus/1"] == pytest.approx(1.0)
    assert "mplus/3" not in got  # "cancer" without "lung" stays under the threshold
    assert matcher.doc_scores("gilbert syndrome", limit=1) == {"gard/1": 1.0, "ghr/1": 1.0}  # a topic is never split
    assert matcher.doc_scores("what is the weather like") == {}


def test_a_synonym_finds_the_topic_and_a_pair_keeps_its_best_name() -> None:
    matcher = FocusMatcher(
        {"ghr/at": "ataxia-telangiectasia", "ghr/bs": "Barth syndrome"},
        {"ghr/at": ["Louis-Bar syndrome", "AT"]},
    )
    got = matcher.doc_scores("Louis Bar Syndrome. My brother died young from it")
    assert got == {"ghr/at": pytest.approx(1.0)}


def test_topics_are_told_apart_by_their_words_however_a_collection_spells_them() -> None:
    assert topic_key("Crohn's Disease") == topic_key("Crohn disease") != topic_key("Crohn's Disease in Children")
    matcher = FocusMatcher({**FOCI, "mplus/4": "Male Breast Cancer", "mplus/5": "Diseases of the Heart"})
    assert matcher.shares_a_word(["Breast Cancer"], "mplus/4") and matcher.shares_a_word(["Lung Cancer", "Lupus"], "mplus/1")
    assert not matcher.shares_a_word(["Down syndrome"], "mplus/1")
    assert not matcher.shares_a_word(["The Flu"], "mplus/5")  # a stopword shares nothing
    assert not matcher.shares_a_word(["Lupus"], "unknown/1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("is there any cure for lupus?", {"treatment"}),
        ("what causes leukemia and how is it diagnosed", {"causes", "exams and tests"}),
        ("Is leukemia inherited? Can I pass it on to my kids?", {"inheritance"}),
        ("Klinefelter Syndrome. I would like to learn more about my condition.", {"information"}),
        ("what is the chance to survive stage 4 liver cancer", {"outlook"}),
        # As people ask, not as MedQuAD's templates do.
        ("its gout. what can he take for the pain and will it come back?", {"treatment", "outlook"}),
        ("Marfans syndrom. My wife has marfans, can our kids get it?", {"inheritance"}),
        ("Does it run in families?", {"inheritance", "susceptibility"}),  # family history is a risk factor too
        ("my dad has macular degeneration. can his brother get it too?", {"inheritance"}),
        ("I want to know about lupus", {"information"}),
        ("my son has eczema on both arms. what can we put on it?", {"treatment"}),
        ("I have tried everything for my psoriasis, what else can I do?", {"treatment"}),
        ("can anything be done for macular degeneration?", {"treatment"}),
        ("what can I do to prevent kidney stones", {"prevention"}),  # preventing is not treating
        ("third kidney stone in two years. how do i stop them from coming back", {"prevention", "outlook"}),
        ("what is shingles and how do people catch it?", {"information", "causes"}),
        ("she gets kidney stones every year. what brings them on?", {"causes"}),
        ("she has marfan syndrome. what can she do so she doesnt get heart problems?", {"prevention"}),
        # The story says what happened; only the question says what is asked.
        ("My wife was diagnosed with acromegaly last month and takes medicine for it. Is it hereditary?", {"inheritance", "susceptibility"}),
        ("my son was diagnosed with celiac disease", set()),
        ("please help me, I feel so tired", set()),
    ],
)
def test_question_types_read_from_cue_words(text: str, expected: set[str]) -> None:
    assert question_types(text) == expected


def test_a_long_message_is_split_into_its_sentences() -> None:
    from rag_app.text.words import sentence_spans

    def sentences(text: str) -> list[str]:
        return [text[a:b] for a, b in sentence_spans(text)]

    message = ". Hello, my name is [NAME]. I have diabetes!! what can i do? ok"
    assert sentences(message) == ["Hello, my name is [NAME].", "I have diabetes!!", "what can i do?"]
    assert sentences("glaucoma") == []  # one word: the whole message is the only query


def test_one_pass_gives_the_message_and_each_sentence_a_vector(embed_model) -> None:
    """Row 0 is the model's own embedding of the message; each sentence row leans towards that sentence's topic."""
    import numpy as np

    from rag_app.retrieval.fielded import message_vectors

    message = "Hello doctor. My knee swells and hurts after running. I also worry about my blood sugar and diabetes."
    vectors = message_vectors(embed_model, message)
    assert vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the model's own vector (rounded to bfloat16 where the encoder runs in it: 3 decimals)
    assert np.allclose(vectors[0], embed_model.get_query_embedding(message), atol=2e-3)
    knee, sugar = (np.asarray(embed_model.get_query_embedding(t)) for t in ("knee pain", "diabetes"))
    assert vectors[2] @ knee > vectors[2] @ sugar and vectors[3] @ sugar > vectors[3] @ knee
    assert message_vectors(embed_model, message, split=False).shape == (1, 384)
    assert message_vectors(embed_model, "glaucoma treatment").shape == (1, 384)  # one sentence: no extra row


def test_models_without_mean_pooling_embed_each_sentence(embed_model) -> None:
    import numpy as np

    from rag_app.retrieval.fielded import message_vectors

    class Plain:  # any LlamaIndex embedding model: no sentence-transformers model behind it
        def get_query_embedding(self, text: str) -> list[float]:
            return embed_model.get_query_embedding(text)

    message = "Hello doctor. My knee swells and hurts after running."
    vectors = message_vectors(Plain(), message)
    assert vectors.shape == (3, 384)
    assert np.allclose(vectors[2], embed_model.get_query_embedding("My knee swells and hurts after running."), atol=1e-5)


def test_source_coverage_counts_a_topic_named_in_part() -> None:
    """A source on a topic the message names only in part is about it; a partial name never makes a decline."""
    from llama_index.core.schema import NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode

    from rag_app.answer.plan import source_coverage

    def source(doc_id: str) -> NodeWithScore:
        node = TextNode(text="...", relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc_id)})
        return NodeWithScore(node=node, score=1.0)

    matcher = FocusMatcher(FOCI)
    gilbert, lupus, lung = source("ghr/1"), source("mplus/1"), source("mplus/3")
    assert source_coverage("Is Gilbert syndrome dangerous?", [gilbert], matcher) == "covered"
    assert source_coverage("Is Gilbert syndrome dangerous?", [lupus], matcher) == "uncovered"
    # "gilberts" names the rare part of "Gilbert syndrome": its pages are about the message; others are not known
    # to be off topic, so the model may still decline by itself.
    assert source_coverage("are gilberts dangerous? my bilirubin is high", [lupus, gilbert], matcher) == "covered"
    assert source_coverage("are gilberts dangerous? my bilirubin is high", [lupus], matcher) == "unknown"
    # "cancer" alone is a small part of "Lung Cancer": not enough.
    assert source_coverage("my aunt has cancer, what now?", [lung], matcher) == "unknown"
    assert source_coverage("Is Gilbert syndrome dangerous?", [gilbert], None) == "unknown"


def test_only_names_written_as_names_and_not_made_of_common_words_decline() -> None:
    """ "all", "had" and "my medicine" name no topic; "ALL" does; a common word covers but never declines."""
    from llama_index.core.schema import NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode

    from rag_app.answer.plan import source_coverage

    def source(doc_id: str) -> NodeWithScore:
        node = TextNode(text="...", relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc_id)})
        return NodeWithScore(node=node, score=1.0)

    foci = {"ghr/all": "acute lymphoblastic leukemia", "mplus/med": "Medicines", "ghr/evc": "Ellis-van Creveld syndrome",
            "ghr/had": "3-hydroxyacyl-CoA dehydrogenase deficiency", "gard/ma": "Mucopolysaccharidosis"}
    synonyms = {"ghr/all": ["ALL"], "ghr/had": ["HAD deficiency"], "gard/ma": ["M-A"]}
    # "medicine" is on most pages here; "leukemia" on its own page only
    pages = [(f"x/{i}", "Take your medicine as told. Your medicines and you.") for i in range(8)]
    pages += [("ghr/all", "ALL is a leukemia of the blood."), ("ghr/evc", "Ellis-van Creveld syndrome is inherited.")]
    matcher = FocusMatcher(foci, synonyms, texts=lambda: pages)
    evc, lupus = source("ghr/evc"), source("mplus/1")

    assert matcher.written("My son has ALL.", "ALL") and not matcher.written("will all their children get it", "ALL")
    assert not matcher.written("I'm a mother of two", "M-A")  # one-letter words name nothing
    assert matcher.written("MY SON HAS ALL", "ALL")  # a message in capitals: no telling
    assert matcher.common("Medicines") and not matcher.common("acute lymphoblastic leukemia")
    # the misspelt condition, named in part, is what the message is about: not declined for "all" or "medicine"
    question = "If both parents have Ellis-Van Crevald, will all their children get it? what medicine helps?"
    assert source_coverage(question, [evc], matcher) == "covered"
    assert source_coverage("I had a deficiency of iron", [lupus], matcher) == "unknown"
    assert source_coverage("My son has ALL. What now?", [lupus], matcher) == "uncovered"
    assert source_coverage("What medicines are safe in pregnancy?", [source("mplus/med")], matcher) == "covered"
    assert FocusMatcher(foci, synonyms).common("Medicines") is False  # without texts no name is common


def test_sources_on_another_topic_the_message_names_in_part_keep_a_topic_named_by_accident_from_declining() -> None:
    """"... my hands hurt ... a twist sends a shock thru my body": "Shock" is named in full and no source is about it,
    but the sources are on hand disorders, which the message names in part: not declined. A topic named in part that
    shares a word with the name ("Male Breast Cancer" for "Breast Cancer") is no other subject: declined."""
    from llama_index.core.schema import NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode

    from rag_app.answer.plan import source_coverage
    from rag_app.index.topics import PARTIAL_NAME_SCORE

    def source(doc_id: str, focus: str) -> NodeWithScore:
        node = TextNode(text="...", metadata={"focus": focus}, relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc_id)})
        return NodeWithScore(node=node, score=1.0)

    foci = {"mplus/shock": "Shock", "mplus/hand": "Hand Injuries and Disorders", "mplus/bc": "Breast Cancer",
            "mplus/mbc": "Male Breast Cancer", "mplus/lupus": "Lupus"}
    # "injuries" and "disorders" are in many names, so "hands" names most of "Hand Injuries and Disorders"
    foci.update({f"mplus/{part}": f"{part} Injuries and Disorders" for part in ("Foot", "Knee", "Eye", "Neck", "Back", "Hip")})
    matcher = FocusMatcher(foci)
    hands = source("mplus/hand", "Hand Injuries and Disorders")
    message = "my hands hurt when cooking, and a sudden twist sends a shock thru my body. what is this?"
    assert matcher.named(message) == ["Shock"]
    assert source_coverage(message, [hands], matcher) == "unknown"
    assert source_coverage(message, [hands], matcher, named_in_part_keeps=False) == "uncovered"  # the rule before
    assert source_coverage(message, [source("mplus/lupus", "Lupus")], matcher) == "uncovered"  # nothing named in part
    male = source("mplus/mbc", "Male Breast Cancer")
    sister = "my sister has breast cancer. is it inherited?"
    assert "mplus/mbc" in matcher.doc_scores(sister, PARTIAL_NAME_SCORE) and matcher.named(sister) == ["Breast Cancer"]
    assert source_coverage(sister, [male], matcher) == "uncovered"


def test_a_misspelt_topic_name_still_finds_its_topic_but_never_counts_as_named_in_full() -> None:
    """"Familial Mediterean Fever" finds Familial Mediterranean fever (not only Fever); a word found on some page
    ("cancel") is never taken for a misspelling, nor is a short one; without page texts nothing is."""
    from rag_app.index.topics import PARTIAL_NAME_SCORE

    foci = {"fmf": "Familial Mediterranean fever", "fever": "Fever", "cancer": "Breast Cancer", "migraine": "Migraine"}
    pages = [("fmf", "Familial Mediterranean fever causes fever."), ("cancer", "Breast cancer. Do not cancel a visit."),
             ("migraine", "Migraine is a headache."), ("fever", "A fever is a high temperature.")]
    matcher = FocusMatcher(foci, texts=lambda: pages, typo_similarity=0.8)
    message = "My husband has Familial Mediterean Fever and migranes, can I cancle his visit?"
    assert set(matcher.misspelt(message)) == {"mediterranean", "migrain"}
    scores = matcher.focus_scores(message)
    assert PARTIAL_NAME_SCORE < scores["Familial Mediterranean fever"] < 1.0 and PARTIAL_NAME_SCORE < scores["Migraine"] < 1.0
    assert "Migraine" not in matcher.named(message)
    assert matcher.misspelt("I had to cancel") == {} and matcher.misspelt("my canc") == {}  # on a page; too short
    assert FocusMatcher(foci, typo_similarity=0.8).misspelt(message) == {}
    off = FocusMatcher(foci, texts=lambda: pages)  # 1.0 by default: the index's matcher takes MEDQA_TYPO_SIMILARITY
    assert off.misspelt(message) == {} and "Migraine" not in off.focus_scores(message)


def test_a_long_misspelt_word_is_read_as_written_and_names_its_topic() -> None:
    """"degeneraton" is far from the stem "degener" but near "degeneration"; "alzeimers" misses a generic head word."""
    foci = {"amd": "Macular Degeneration", "ad": "Alzheimer's Disease", "d1": "Heart Disease", "d2": "Kidney Disease"}
    pages = [("amd", "Macular degeneration is an eye disease."), ("ad", "Alzheimer's disease is a brain disease."),
             ("d1", "Heart disease."), ("d2", "Kidney disease.")]
    matcher = FocusMatcher(foci, texts=lambda: pages, typo_similarity=0.8)
    assert matcher.named_misspelt("My dad has macular degeneraton in one eye") == ["Macular Degeneration"]
    assert matcher.named_misspelt("my mom has alzeimers, is it inherited") == ["Alzheimer's Disease"]
    assert matcher.named_misspelt("my mom has macular degeneration") == []  # written right: nothing misspelt


def test_misspelt_names_are_corrected_and_a_misspelt_everyday_word_is_left_alone() -> None:
    """"degeneraton" is written "degeneration" for retrieval; "diagnozed" is nearer "diagnosed", a word of the pages,
    than the name word "diagnostic", so it is no misspelt name (a word on fewer than three pages doesn't count)."""
    foci = {"amd": "Macular Degeneration", "dt": "Diagnostic Tests", "g": "Glaucoma"}
    pages = [("amd", "Macular degeneration is an eye disease, diagnosed by an eye exam."), ("dt", "Diagnostic tests."),
             ("g", "Glaucoma is diagnosed by an eye exam."), ("x", "He was diagnosed last year. A diagnozd case.")]
    matcher = FocusMatcher(foci, texts=lambda: pages, typo_similarity=0.8)
    assert matcher.corrected("My dad has macular degeneraton, he was diagnozed last year") == (
        "My dad has macular degeneration, he was diagnozed last year"
    )
    assert matcher.misspelt("he was diagnozed") == {}
    assert matcher.corrected("nothing misspelt here") == "nothing misspelt here"


def test_the_reading_of_a_misspelling_is_the_same_in_every_process() -> None:
    """Two words of the pages are as near "grabbing" as each other; the first of them decides whether it misspells the
    name word "Gray", so they are read in one order whatever the process's string hashing (PYTHONHASHSEED)."""
    program = (
        "from rag_app.index.topics import FocusMatcher\n"
        "pages = [(f'p{i}', 'The grading and graying of cells.') for i in range(4)] + [('g', 'Gray platelet syndrome.')]\n"
        "m = FocusMatcher({'g': 'Gray Platelet Syndrome'}, texts=lambda: pages, typo_similarity=0.75)\n"
        "print(m.corrected('he is improving in grabbing things'))\n"
    )
    seen = {
        subprocess.run([sys.executable, "-c", program], env={**os.environ, "PYTHONHASHSEED": str(seed)}, capture_output=True,
                       text=True, check=True).stdout.strip()
        for seed in range(6)
    }
    assert seen == {"he is improving in grabbing things"}
