"""The re-ranker's mechanics (a tiny random cross-encoder), headings, and what the model is shown of a source."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode

from rag_app.text.headings import drop_headings, split_heading
from rag_app.text.words import sentences
from rag_app.answer.passages import page_sentences, shown_node

GOUT_OVERVIEW = (
    "Question: What is (are) Gout ?\nAnswer: Sudden, Intense Joint Pain Gout is a form of arthritis that causes the sudden "
    "onset of intense pain. Attacks frequently occur at night. Where Gout Usually Occurs Sometime during the course of the "
    "disease, many patients will develop gout in the big toe. Who is at Risk? Adult men are more likely to develop gout."
)


def node(text: str, doc_id: str, focus: str = "Gout", question: str = "What is (are) Gout ?", score: float = 0.5) -> NodeWithScore:
    n = TextNode(text=text, id_=f"{doc_id}::0", metadata={"focus": focus, "question": question, "question_type": "information"})
    n.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc_id)
    return NodeWithScore(node=n, score=score)


@pytest.mark.parametrize(
    "sentence, heading",
    [
        ("Where Gout Usually Occurs Sometime during the course of the disease, many develop gout.", "Where Gout Usually Occurs"),
        ("A Buildup of Uric Acid Before an attack, crystals of uric acid build up.", "A Buildup of Uric Acid"),
        ("Symptoms Can Be Controlled With proper treatment, most people with gout control their symptoms.", "Symptoms Can Be Controlled"),
        ("Risk Factors These risk factors are associated with gout.", "Risk Factors"),
        # Small words running on between its capitalised ones (MedlinePlus's cough treatment page).
        ("Treating the Cause of a Cough An acute cough lasts less than 3 weeks.", "Treating the Cause of a Cough"),
        # A heading with a dash, naming what its sentence starts with (NIHSeniorHealth's Alzheimer's overview).
        ("Memory Problems -- A Common Early Sign Memory problems are typically one of the first signs.", "Memory Problems -- A Common Early Sign"),
        ("Memory Problems — A Common Early Sign Memory problems are typically one of the first signs.", "Memory Problems — A Common Early Sign"),
        ("- Stage IIIB: The tumor may be anywhere in or near the eye.", ""),  # a list's label, not a heading
        # Names that open a sentence are not headings.
        ("The Human Phenotype Ontology provides the following list of signs and symptoms.", ""),
        ("Multiple Sclerosis (MS) is a disease of the brain and spinal cord.", ""),
        ("Lou Gehrig's Disease is a disease of the nerve cells.", ""),
        ("National Institutes of Health researchers found a gene.", ""),
        ("Gout is a form of arthritis.", ""),
    ],
)
def test_split_heading(sentence: str, heading: str) -> None:
    found, rest = split_heading(sentence)
    assert found == heading
    assert (heading + " " + rest if heading else rest) == sentence


def test_a_heading_may_precede_a_sentence_starting_with_the_topic() -> None:
    sentence = "Attacks Usually Start at Night Gout is a form of arthritis."
    assert split_heading(sentence) == ("", sentence)
    assert split_heading(sentence, ["gout"]) == ("Attacks Usually Start at Night", "Gout is a form of arthritis.")


def test_drop_headings_keeps_every_sentence_and_no_heading() -> None:
    text = GOUT_OVERVIEW.partition("Answer: ")[2]
    cleaned = drop_headings(text, "Gout")
    assert cleaned == (
        "Gout is a form of arthritis that causes the sudden onset of intense pain. Attacks frequently occur at night. "
        "Sometime during the course of the disease, many patients will develop gout in the big toe. "
        "Adult men are more likely to develop gout."
    )


def test_a_heading_with_a_subheading_goes_and_a_list_keeps_its_last_item() -> None:
    # MedlinePlus's cough treatment page: two headings on lines of their own, then prose.
    text = (
        "Other treatments can help relieve the cough itself.\n\nTreating the Cause of a Cough\n\nAcute and Subacute Cough\n\n"
        "An acute cough lasts less than 3 weeks."
    )
    assert sentences(drop_headings(text, "Cough")) == ["Other treatments can help relieve the cough itself.", "An acute cough lasts less than 3 weeks."]
    # A list's last item before a heading stays (NHLBI's foods: "Tofu", then the heading "Sodium").
    foods = "Good sources include:\n\nSalmon and trout\n\nTofu\n\nSodium\n\nYou should try to limit the amount of sodium that you eat."
    assert [line for line in drop_headings(foods).split("\n") if line] == [
        "Good sources include:", "Salmon and trout", "Tofu", "You should try to limit the amount of sodium that you eat."
    ]


def test_shown_node_keeps_the_question_line_metadata_and_id() -> None:
    source = node(GOUT_OVERVIEW, "gout-1")
    assert page_sentences(source)[2].startswith("Sometime during")
    shown = shown_node(source, start=2)
    assert shown.node.get_content() == (
        "Question: What is (are) Gout ?\nAnswer: Sometime during the course of the disease, many patients will develop "
        "gout in the big toe. Adult men are more likely to develop gout."
    )
    assert shown.node.node_id == source.node.node_id and shown.node.ref_doc_id == "gout-1"
    assert shown.node.metadata["focus"] == "Gout" and source.node.get_content() == GOUT_OVERVIEW  # the original is untouched


def test_a_long_page_is_shown_whole() -> None:
    """Every sentence of a long page is shown, one-word list items included: the answer copies its top source to
    its end, so a page cut after its eighth sentence cut every answer there."""
    sentences = [f"Sentence number {i} says something about gout." for i in range(1, 13)]
    text = "Question: What is (are) Gout ?\nAnswer: " + " ".join(sentences) + " Signs include\n- Pain\n- Swelling"
    source = node(text, "gout-long")
    assert len(page_sentences(source)) == 15
    shown = shown_node(source, start=1).node.get_content()
    assert shown.startswith("Question: What is (are) Gout ?\nAnswer: Sentence number 2 ") and shown.endswith("- Pain - Swelling")


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory) -> object:
    """A 2-layer random BERT cross-encoder with the bundled MiniLM tokenizer."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rag_app.llm.resolve import bundled_embed_model_dir

    tokenizer = AutoTokenizer.from_pretrained(bundled_embed_model_dir())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=512, num_labels=1)
    out: Path = tmp_path_factory.mktemp("tiny-ce")
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return CrossEncoder(str(out), max_length=64)


def test_rerank_fuses_scores_keeps_top_n_and_records_relevance(tiny_cross_encoder) -> None:
    from rag_app.retrieval.rerank import RELEVANCE_KEY, CrossEncoderRerank, fused_score

    nodes = [node(f"Question: q{i}\nAnswer: text number {i} about gout", f"d{i}", score=0.1 * i) for i in range(5)]
    query = "is gout hereditary"
    reranker = CrossEncoderRerank(tiny_cross_encoder, top_n=3, weight=0.7)
    logits = reranker.logits(query, nodes)
    expected = sorted(range(5), key=lambda i: -fused_score(nodes[i].score, logits[i], 0.7))[:3]
    out = reranker.postprocess_nodes([NodeWithScore(node=n.node, score=n.score) for n in nodes], QueryBundle(query))
    assert [n.node.ref_doc_id for n in out] == [f"d{i}" for i in expected]
    assert [n.score for n in out] == sorted((n.score for n in out), reverse=True)
    assert all(0.0 <= n.node.metadata[RELEVANCE_KEY] <= 1.0 for n in out)
    # Weight 0 keeps the retriever's order.
    kept = CrossEncoderRerank(tiny_cross_encoder, top_n=5, weight=0.0).postprocess_nodes(list(nodes), QueryBundle(query))
    assert [n.node.ref_doc_id for n in kept] == [f"d{i}" for i in range(4, -1, -1)]
    assert reranker.with_top_n(1).postprocess_nodes(list(nodes), QueryBundle(query))[0].node.ref_doc_id == f"d{expected[0]}"


def test_start_sentence_moves_only_past_the_margin(tiny_cross_encoder) -> None:
    from rag_app.retrieval.rerank import CrossEncoderRerank

    source = node(GOUT_OVERVIEW, "gout-1")
    reranker = CrossEncoderRerank(tiny_cross_encoder)
    sentences = page_sentences(source)
    assert reranker.start_sentence("where does gout occur", source, sentences, margin=1e9) == 0
    best = reranker.start_sentence("where does gout occur", source, sentences, margin=-1e9)
    assert 0 <= best < len(sentences)
    assert reranker.start_sentence("anything", source, sentences[:1], margin=-1e9) == 0


def test_load_reranker_is_off_or_a_clear_error(tmp_path: Path) -> None:
    from rag_app.config import Settings
    from rag_app.errors import ModelUnavailableError
    from rag_app.retrieval.rerank import load_reranker

    assert load_reranker(Settings(rerank=False)) is None
    with pytest.raises(ModelUnavailableError, match="MEDQA_RERANK_MODEL"):
        load_reranker(Settings(rerank_model=str(tmp_path / "missing")))


def test_a_page_is_shown_from_its_start_for_an_overview_or_when_its_tail_is_too_short(tiny_cross_encoder) -> None:
    """The start sentence the re-ranker picks is kept only where it leaves enough to answer from and the message asks
    more than "info about X"; a page's last sentence alone is not shown."""
    from llama_index.core.llms import MockLLM

    from rag_app.answer.engine import MedQAQueryEngine
    from rag_app.retrieval.rerank import CrossEncoderRerank

    long_page = GOUT_OVERVIEW + " " + " ".join(f"Attacks of gout can be treated with medicine number {i}." for i in range(8))
    source = node(long_page, "gout-1")
    engine = MedQAQueryEngine(llm=MockLLM(), reranker=CrossEncoderRerank(tiny_cross_encoder), sentence_margin=-1e9)
    sentences = page_sentences(source)
    best = engine.reranker.start_sentence("where on the body does gout start", source, sentences, -1e9)
    assert best > 0  # the random model prefers some later sentence over the first
    expected_start = best if len(" ".join(sentences[best:]).split()) >= 30 else 0
    assert engine.shown("where on the body does gout start", [source], False)[0].node.get_content() == shown_node(source, expected_start).node.get_content()
    assert engine.shown("I would like more info about gout", [source], False)[0].node.get_content() == shown_node(source, 0).node.get_content()
    short = node(GOUT_OVERVIEW, "gout-2")  # every later sentence leaves fewer than 30 words
    assert engine.shown("where on the body does gout start", [short], False)[0].node.get_content() == shown_node(short, 0).node.get_content()


def test_an_overview_answering_an_asked_aspect_is_shown_from_the_sentence_that_says_it(tiny_cross_encoder) -> None:
    """"What causes gout?" answered from the gout overview: the page is shown from its first sentence naming a cause
    (the random re-ranker would pick otherwise), unless too little follows it; a page of the asked type, or a message
    that also asks "what is", is left to the re-ranker's rule."""
    from llama_index.core.llms import MockLLM

    from rag_app.answer.engine import MedQAQueryEngine
    from rag_app.retrieval.rerank import CrossEncoderRerank

    page = GOUT_OVERVIEW + " Gout is caused by too much uric acid in the blood." + " It builds up when the body makes a lot of it." * 4
    source = node(page, "gout-1")
    engine = MedQAQueryEngine(llm=MockLLM(), reranker=CrossEncoderRerank(tiny_cross_encoder), sentence_margin=1e9)
    shown = engine.shown("my dad has gout, why do people get this?", [source], False)[0].node.get_content()
    assert shown.split("Answer: ", 1)[1].startswith("Gout is caused by too much uric acid")
    last = node(GOUT_OVERVIEW + " Gout is caused by too much uric acid in the blood.", "gout-3")  # the page's last sentence
    assert engine.shown("why do people get gout?", [last], False)[0].node.get_content() == shown_node(last, 0).node.get_content()
    for message in ("what is gout and what causes it?", "what causes gout?"):
        own_type = source if "what is" in message else node(page, "gout-2", question="What causes Gout ?")
        own_type.node.metadata["question_type"] = "information" if "what is" in message else "causes"
        assert engine.shown(message, [own_type], False)[0].node.get_content() == shown_node(own_type, 0).node.get_content()


def test_an_answer_does_not_start_at_a_sentence_that_leans_on_the_one_before(tiny_cross_encoder) -> None:
    """The first sentence naming a cause is "It is caused by ...": the page is shown from the sentence "It" refers to."""
    from llama_index.core.llms import MockLLM

    from rag_app.answer.engine import MedQAQueryEngine
    from rag_app.retrieval.rerank import CrossEncoderRerank

    page = GOUT_OVERVIEW + " Crystals form in the joint. It is caused by too much uric acid in the blood." + " It builds up when the body makes a lot of it." * 4
    source = node(page, "gout-1")
    engine = MedQAQueryEngine(llm=MockLLM(), reranker=CrossEncoderRerank(tiny_cross_encoder), sentence_margin=1e9)
    shown = engine.shown("my dad has gout, why do people get this?", [source], False)[0].node.get_content()
    assert shown.split("Answer: ", 1)[1].startswith("Crystals form in the joint. It is caused by too much uric acid")


def test_the_start_sentence_is_chosen_on_the_message_as_written(tiny_cross_encoder) -> None:
    """Pages are ranked on the message with its asked type asked again ("... What causes it?"), but the sentence a page
    without a sentence of that type is shown from is chosen on the message as written."""
    from llama_index.core.llms import MockLLM

    from rag_app.answer.engine import MedQAQueryEngine
    from rag_app.answer.plan import Reading
    from rag_app.retrieval.rerank import CrossEncoderRerank

    read = []

    class Spy(CrossEncoderRerank):
        def start_sentence(self, query, node, sentences, margin, limit=12):
            read.append(query)
            return super().start_sentence(query, node, sentences, margin, limit)

    message = "my dad has gout. what brings it on?"
    reading = Reading(message, frozenset({"causes"}), f"{message} What causes it?")
    source = node(GOUT_OVERVIEW + " Attacks frequently occur at night in the big toe." * 4, "gout-1")  # no cause sentence
    engine = MedQAQueryEngine(llm=MockLLM(), reranker=Spy(tiny_cross_encoder))
    engine.shown(message, [source], False, reading)
    assert read == [message]


def test_a_top_page_of_the_asked_type_is_shown_from_its_start(tiny_cross_encoder) -> None:
    """"will he get better?" answered from a stroke outlook page opened at "The pain is often worse ...", the sentence
    the re-ranker chose: a page of the asked type answers it from its first sentence. An overview is still shown from
    a later sentence."""
    from llama_index.core.llms import MockLLM

    from rag_app.answer.engine import MedQAQueryEngine
    from rag_app.answer.plan import Reading
    from rag_app.retrieval.rerank import CrossEncoderRerank

    class Later(CrossEncoderRerank):
        def start_sentence(self, query, node, sentences, margin, limit=12):
            return 2

    page = ("Although stroke is a disease of the brain, it can affect the entire body. Stroke survivors often have problems "
            "understanding speech. Stroke survivors may also have numbness. The pain is often worse in the hands and feet. "
            "Recurrent stroke is frequent; about 25 percent of people who recover will have another stroke within 5 years.")
    message = "My father had a stroke last week. will he get better?"
    reading = Reading(message, frozenset({"outlook"}), message)
    outlook = node("Question: What is the outlook for Stroke ?\nAnswer: " + page, "stroke-1", focus="Stroke")
    outlook.node.metadata["question_type"] = "outlook"
    overview = node("Question: What is (are) Stroke ?\nAnswer: " + page, "stroke-2", focus="Stroke")
    engine = MedQAQueryEngine(llm=MockLLM(), reranker=Later(tiny_cross_encoder))
    answer = lambda source: engine.shown(message, [source], False, reading)[0].node.get_content().split("Answer: ", 1)[1]  # noqa: E731
    assert answer(outlook).startswith("Although stroke is a disease of the brain")
    assert not answer(overview).startswith("Although stroke")  # another type's page: from the sentence that answers


def test_a_page_the_answers_so_far_quoted_is_shown_without_what_they_said() -> None:
    """"will it come back?" after "what is gout?" answered from the same overview: the page is shown from where the
    last answer stopped quoting it (the model copies what it is shown, so the answer would be the same word for word);
    a page the answer quoted to its end, or a turn with no earlier answer, is shown as before."""
    from llama_index.core.llms import MockLLM

    from rag_app.answer.engine import MedQAQueryEngine

    rest = (" Attacks can come back, and most people have a second attack within one to two years of the first."
            " Medicines, a healthy weight and less alcohol lower the chance that gout comes back and damages the joints.")
    source = node(GOUT_OVERVIEW + rest, "gout-1")
    said = ("Gout is a form of arthritis that causes the sudden onset of intense pain [1]. Attacks frequently occur at night. "
            "Sometime during the course of the disease, many patients will develop gout in the big toe.")

    def shown(engine: MedQAQueryEngine) -> str:
        return engine.shown("will it come back?", [source], False)[0].node.get_content().split("Answer: ", 1)[1]

    engine = MedQAQueryEngine(llm=MockLLM())
    assert shown(engine).startswith("Gout is a form of arthritis")
    assert shown(engine.model_copy(update={"said": said})).startswith("Adult men are more likely to develop gout. Attacks can come back")
    # A sentence the answer copied with a word changed was read all the same.
    loosely = said.replace("develop gout in the big toe", "develop gout in their big toe")
    assert shown(engine.model_copy(update={"said": loosely})).startswith("Adult men are more likely to develop gout. Attacks")
    # An answer that quoted the middle of the page: the next one gets what the page says besides, not those again.
    middle = "Attacks frequently occur at night [1]. Sometime during the course of the disease, many patients will develop gout in the big toe."
    got = shown(engine.model_copy(update={"said": middle}))
    assert got.startswith("Gout is a form of arthritis") and "Adult men are more likely" in got and "Attacks can come back" in got
    assert "Attacks frequently occur" not in got and "big toe" not in got
    everything = said + " Adult men are more likely to develop gout." + rest
    assert shown(engine.model_copy(update={"said": everything})).startswith("Gout is a form of arthritis")
    # Quoted to its end, the page gives way to the next one on its topic (spelt its own way) that was not quoted.
    other = node("Question: What is (are) gout ?\nAnswer: " + "Gout comes from uric acid crystals in a joint, mostly the big toe." * 4,
                 "gout-2", focus="gout")
    stranger = node("Question: What is (are) Lupus ?\nAnswer: " + "Lupus is a disease of the immune system that attacks the body." * 4,
                    "lupus-1", focus="Lupus")
    told = engine.model_copy(update={"said": everything})
    assert [n.node.ref_doc_id for n in told.shown("will it come back?", [source, stranger, other], False)] == ["gout-2", "gout-1", "lupus-1"]
    # With none on its topic, the next page it didn't quote: the same page again would say nothing new.
    assert [n.node.ref_doc_id for n in told.shown("will it come back?", [source, stranger], False)] == ["lupus-1", "gout-1"]
    assert [n.node.ref_doc_id for n in told.shown("will it come back?", [source], False)] == ["gout-1"]


def test_a_page_is_shown_up_to_where_it_turns_to_another_form_of_the_asked_topic() -> None:
    """"does he need insulin forever?" about type 1 diabetes, answered from a page on diabetes: the model is shown the
    page's type 1 sentences, not what it goes on to say of type 2 (it copies what it is shown); a question on diabetes
    itself, a page on type 1 diabetes, or a page with too little before the turn, is shown whole."""
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import BaseRetriever

    from rag_app.answer.engine import MedQAQueryEngine
    from rag_app.index.topics import FocusMatcher

    class Named(BaseRetriever):
        @property
        def matcher(self) -> FocusMatcher:
            return FocusMatcher({"d": "Diabetes", "t1": "type 1 diabetes", "t2": "Type 2 Diabetes", "g": "Gestational diabetes"},
                                {"t1": ["juvenile diabetes"]})

        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            return []

    page = ("Type 1 diabetes, which used to be called juvenile diabetes, develops most often in young people. With this form "
            "of diabetes, your body no longer makes insulin because your immune system has destroyed the cells that make it. "
            "To survive, people with type 1 diabetes must have insulin delivered by injection or a pump. Type 2 diabetes, "
            "which used to be called adult-onset diabetes, is the most common form of diabetes. It usually begins with "
            "insulin resistance.")
    source = node("Question: What is (are) Diabetes ?\nAnswer: " + page, "diabetes-1", focus="Diabetes")
    engine = MedQAQueryEngine(llm=MockLLM(), retriever=Named())

    def shown(question: str, text: NodeWithScore = source) -> str:
        return engine.shown(question, [text], False)[0].node.get_content().split("Answer: ", 1)[1]

    got = shown("type 1 diabetes: does he need insulin forever?")
    assert got.endswith("delivered by injection or a pump.") and "Type 2" not in got, got
    assert shown("does diabetes mean insulin forever?") == page  # both forms are the asked topic
    # A page on the asked topic itself may compare it with another form: shown whole.
    own = node("Question: What is (are) type 1 diabetes ?\nAnswer: " + page, "t1-1", focus="type 1 diabetes")
    assert shown("type 1 diabetes: does he need insulin forever?", own) == page
    # Another name of the asked topic is not another form of it.
    juvenile = node("Question: What is (are) Diabetes ?\nAnswer: " + page.replace("people with type 1", "people with juvenile"),
                    "diabetes-3", focus="Diabetes")
    got = shown("type 1 diabetes: does he need insulin forever?", juvenile)
    assert "people with juvenile diabetes must have insulin" in got and "Type 2" not in got, got
    assert shown("my son has type 1 diabetes and type 2 diabetes runs in the family, what is it?") == page  # both asked
    short = node("Question: What is (are) Diabetes ?\nAnswer: Type 1 diabetes needs insulin. Type 2 diabetes is common and "
                 "usually begins with insulin resistance in fat, muscle and liver cells, which then do not use insulin well.",
                 "diabetes-2", focus="Diabetes")
    assert "Type 2 diabetes is common" in shown("type 1 diabetes: does he need insulin forever?", short)


def test_a_heading_on_a_line_of_its_own_goes_and_a_list_of_short_lines_stays() -> None:
    text = (
        "Sarcoidosis is a disease of unknown cause.\n\nOutlook\n\nThe outlook for sarcoidosis varies. Many people recover.\n"
        "Other Tests\nYour doctor may recommend a lung function test.\nSigns include:\nConfusion\nTrouble speaking or understanding speech\n"
        "Headache\n"
    )
    assert sentences(drop_headings(text, "Sarcoidosis")) == [
        "Sarcoidosis is a disease of unknown cause.", "The outlook for sarcoidosis varies.", "Many people recover.",
        "Your doctor may recommend a lung function test.", "Signs include:", "Confusion", "Trouble speaking or understanding speech",
        "Headache",
    ]
