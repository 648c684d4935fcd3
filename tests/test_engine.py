"""Query engine: answers with sources from the real bundled LLM, no-RAG mode, streaming, bad input."""

from __future__ import annotations

import logging

import pytest

from rag_app import build_query_engine
from rag_app.llm.decoding import llm_tokenizer
from rag_app.text import prompts
from rag_app.index.build import build_index


@pytest.fixture()
def indexed(settings, embed_model):
    build_index(settings, embed_model=embed_model, show_progress=False)
    return settings


def test_query_returns_answer_with_cited_sources(indexed, embed_model, bundled_llm_model) -> None:
    engine = build_query_engine(indexed, llm=bundled_llm_model, embed_model=embed_model)
    response = engine.query("How is gout treated?")
    text = str(response)
    assert len(text) > 40 and prompts.MEDICAL_NOTICE in text
    assert response.source_nodes, "RAG answers carry their sources"
    top = response.source_nodes[0].node.metadata
    assert top["focus"] == "Gout" and top["url"].startswith("https://")
    assert top["collection"] and top["question_id"]
    assert response.source_nodes[0].score > 0
    # The prompt the model saw numbers the same sources in the same order.
    messages = engine.messages("How is gout treated?", response.source_nodes)
    assert "[1] (Gout)" in messages[1]["content"]
    assert engine.retrieve("How is gout treated?")[0].node.node_id == response.source_nodes[0].node.node_id


def test_no_rag_mode_uses_same_interface(bundled_llm_model) -> None:
    engine = build_query_engine(llm=bundled_llm_model, use_rag=False)
    response = engine.query("What is asthma?")
    assert response.source_nodes == [] and len(str(response)) > 20
    assert engine.retrieve("What is asthma?") == []
    assert engine.messages("What is asthma?", None)[0]["content"] == prompts.PLAIN_SYSTEM_PROMPT


def test_streaming_yields_tokens(indexed, embed_model, bundled_llm_model) -> None:
    engine = build_query_engine(indexed, llm=bundled_llm_model, embed_model=embed_model, streaming=True)
    response = engine.query("What is glaucoma?")
    tokens = list(response.response_gen)
    assert len(tokens) > 5
    assert "".join(tokens).endswith(prompts.MEDICAL_NOTICE)
    assert response.source_nodes[0].node.metadata["focus"] == "Glaucoma"


@pytest.mark.parametrize("question", ["", "   \n\t "])
def test_empty_question_is_a_clear_error(bundled_llm_model, question: str) -> None:
    engine = build_query_engine(llm=bundled_llm_model, use_rag=False)
    with pytest.raises(ValueError, match="question is empty"):
        engine.query(question)


def test_overlong_question_is_truncated_with_warning(bundled_llm_model, caplog: pytest.LogCaptureFixture) -> None:
    engine = build_query_engine(llm=bundled_llm_model, use_rag=False, max_question_tokens=32)
    with caplog.at_level(logging.WARNING, logger="rag_app"):
        response = engine.query("I have had a headache " * 400 + "what should I do?")
    assert response.metadata["warnings"] and "truncated" in caplog.text
    assert engine._count(response.metadata["question"]) <= 34


def _copies_source_two() -> object:
    """An LLM that answers with source [2]'s first answer sentence and cites [1] (a small model's misattribution)."""
    import re
    from typing import Any

    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback

    class CopiesSourceTwo(CustomLLM):
        def _answer(self, prompt: str) -> str:
            block = re.search(r"^\[2\] .*?Answer: (.+?[.!?])(?:\s|$)", prompt, re.MULTILINE | re.DOTALL)
            return f"{block.group(1)} [1]"

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="copies-source-two")

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            return CompletionResponse(text=self._answer(prompt))

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            text = self._answer(prompt)

            def gen() -> Any:
                for i in range(0, len(text), 3):
                    yield CompletionResponse(text=text[: i + 3], delta=text[i : i + 3])

            return gen()

    return CopiesSourceTwo()


@pytest.mark.parametrize("streaming", [False, True])
def test_a_citation_points_at_the_source_the_answer_was_copied_from(indexed, embed_model, streaming: bool) -> None:
    """Through the real index: the model copies source [2] and writes [1]; the reader is sent to [2]."""
    for attribute, number in ((True, "[2]"), (False, "[1]")):
        engine = build_query_engine(
            indexed.model_copy(update={"attribute_citations": attribute, "medical_notice": False}),
            llm=_copies_source_two(), embed_model=embed_model, streaming=streaming,
        )
        response = engine.query("How is gout treated?")
        text = "".join(response.response_gen) if streaming else str(response)
        second = response.source_nodes[1].node.get_content()
        assert text.endswith(number) and text[: -len(number)].strip() in second


GOUT_PAGES = {
    "information": ("What is (are) Gout ?", "Sudden, Intense Joint Pain Gout is a form of arthritis that causes sudden attacks of pain. "
                    "Where Gout Usually Occurs Sometime during the course of the disease, many patients develop gout in the big toe."),
    "treatment": ("What are the treatments for Gout ?", "Physicians often prescribe non-steroidal anti-inflammatory drugs for a sudden "
                  "attack of gout. With proper treatment, most people with gout control their symptoms."),
    "outlook": ("What is the outlook for Gout ?", "Attacks may come back months or years later. Most people with gout live active lives."),
    "causes": ("What causes Gout ?", "Most people with gout have too much uric acid in their blood."),
}


@pytest.fixture()
def gout_index(tmp_path, embed_model):
    """An index of one gout document with four pages (overview, treatment, outlook, causes) and a glaucoma page."""
    from rag_app.config import Settings

    root = tmp_path / "medquad" / "7_SeniorHealth_QA"
    root.mkdir(parents=True)
    pairs = "".join(
        f'<QAPair pid="{i}"><Question qid="0000028-{i}" qtype="{qtype}">{q}</Question><Answer>{a}</Answer></QAPair>'
        for i, (qtype, (q, a)) in enumerate(GOUT_PAGES.items(), start=1)
    )
    (root / "0000028.xml").write_text(
        f'<?xml version="1.0"?><Document id="0000028" source="NIHSeniorHealth" url="https://nih.gov/gout"><Focus>Gout</Focus>'
        f"<QAPairs>{pairs}</QAPairs></Document>", encoding="utf-8")
    (root / "0000029.xml").write_text(
        '<?xml version="1.0"?><Document id="0000029" source="NIHSeniorHealth" url="https://nih.gov/glaucoma"><Focus>Glaucoma</Focus>'
        '<QAPairs><QAPair pid="1"><Question qid="0000029-1" qtype="information">What is (are) Glaucoma ?</Question>'
        "<Answer>Glaucoma is a group of diseases that damage the optic nerve.</Answer></QAPair></QAPairs></Document>", encoding="utf-8")
    settings = Settings(storage_dir=tmp_path / "storage", corpus=[str(tmp_path / "medquad")], chunk_size=128, chunk_overlap=16)
    build_index(settings, embed_model=embed_model, show_progress=False)
    return settings


def test_plan_answers_a_message_asking_two_things_from_both_pages(gout_index, embed_model, tiny_model_dir) -> None:
    """"What can he take and will it come back?": the shipped re-ranker judges the treatment and the outlook pages more
    relevant than the overview; weighted up (``rerank_weight=1``) it puts them first, and the answer has a part
    opening with each; no glued heading reaches the model."""
    from rag_app.llm.load import load_llm

    llm = load_llm(gout_index.model_copy(update={"llm": str(tiny_model_dir), "llm_backend": "transformers", "max_new_tokens": 24}))
    message = "my dad has gout in his big toe. what can he take for the pain and will it come back?"
    default = build_query_engine(gout_index, llm=llm, embed_model=embed_model).plan(message)
    relevance = {n.node.metadata["question_type"]: n.node.metadata["relevance"] for n in default.sources}
    assert min(relevance["treatment"], relevance["outlook"]) > relevance["information"], relevance
    settings = gout_index.model_copy(update={"rerank_weight": 1.0})
    engine = build_query_engine(settings, llm=llm, embed_model=embed_model, open_with_top_source="on")
    plan = engine.plan(message)
    types = [n.node.metadata["question_type"] for n in plan.sources]
    assert set(types[:2]) == {"treatment", "outlook"}, types
    assert len(plan.parts) == 2 and all(p.opening is not None for p in plan.parts)
    second = llm_tokenizer(llm).decode(list(plan.parts[1].opening.tokens))
    assert second.strip() and second.strip() in plan.passages[1]
    answer = engine.query(message)
    text = str(answer)
    assert text.startswith(llm_tokenizer(llm).decode(list(plan.parts[0].opening.tokens)).strip())
    assert second.strip() in text  # the second part opens with the second page's words
    assert "Where Gout Usually Occurs" not in "".join(plan.passages) and "Sudden, Intense" not in "".join(plan.passages)
    # Each of two parts ends where the model ends it; one thing asked: one part, which finishes its source as shown.
    assert all(not p.opening.source for p in plan.parts)
    one = engine.plan("what can he take for gout?")
    assert len(one.parts) == 1 and one.parts[0].decoding["finish_stops"]
    source = llm_tokenizer(llm).decode(list(one.parts[0].opening.source)).split()
    assert source and source[:3] == one.passages[0].split("Answer: ", 1)[1].split()[:3]
    assert not engine.model_copy(update={"finish_source": False}).plan("what can he take for gout?").parts[0].opening.source


def test_the_reranker_orders_sources_and_decides_coverage(gout_index, embed_model) -> None:
    """Sources follow the re-ranked order; a top source the re-ranker finds answering is covered (never declined)."""
    from llama_index.core.llms import MockLLM

    from rag_app.retrieval.rerank import RELEVANCE_KEY

    engine = build_query_engine(gout_index, llm=MockLLM(), embed_model=embed_model)
    assert engine.reranker is not None  # the shipped re-ranker, on by default
    sources = engine.retrieve("Is gout hereditary?")
    assert [n.score for n in sources] == sorted((n.score for n in sources), reverse=True)
    assert all(RELEVANCE_KEY in n.node.metadata for n in sources)
    strict = engine.model_copy(update={"answer_threshold": 0.0})
    assert strict.plan("Is gout hereditary?").coverage == "covered"
    assert strict.plan("is gowt herediterry?").coverage == "covered"  # no topic named in full: the re-ranker decides
    # Gout named in full and only the glaucoma page in reach: uncovered, however sure the re-ranker is.
    glaucoma = [n for n in engine.retrieve("What is glaucoma?") if n.node.metadata["focus"] == "Glaucoma"]
    assert glaucoma and strict.coverage("Is gout hereditary?", glaucoma) == "uncovered"
    assert strict.model_copy(update={"decline_by_topic": False}).coverage("Is gout hereditary?", glaucoma) == "covered"
    off = build_query_engine(gout_index, llm=MockLLM(), embed_model=embed_model, rerank=False)
    assert off.reranker is None and [n.score for n in off.retrieve("Is gout hereditary?")]


def test_batched_answers_are_the_engines_own(indexed, embed_model, tiny_model_dir) -> None:
    """Evaluation answers through the engine's plans: the same text as asking the engine one question at a time."""
    from rag_app.llm.load import load_llm

    llm = load_llm(indexed.model_copy(update={"llm": str(tiny_model_dir), "llm_backend": "transformers", "max_new_tokens": 16}))
    engine = build_query_engine(indexed, llm=llm, embed_model=embed_model, open_with_top_source="on", medical_notice=False)
    questions = ["How is gout treated?", "What is glaucoma?", "my mom has asthma, what helps?"]
    one_by_one = [str(engine.query(q)) for q in questions]
    assert engine.answer_batch([engine.plan(q) for q in questions], batch_size=1) == one_by_one


def test_the_top_source_has_its_own_budget() -> None:
    """The answer copies its top source: it gets ``top_source_tokens``, the others ``source_tokens`` each, and a small
    window shares what is left without cutting any source under 16 tokens."""
    from llama_index.core.schema import TextNode

    from rag_app.text.prompts import shown_passages

    def count(text: str) -> int:
        return len(text.split())

    def sizes(**budgets: int) -> list[int]:
        return [count(p.removesuffix(" …")) for p in shown_passages("q", nodes, count, max_new_tokens=256, **budgets)]

    nodes = [TextNode(text=" ".join(f"w{i}" for i in range(1000))) for _ in range(3)]
    assert sizes(context_window=2048, source_tokens=160) == [160, 160, 160]
    assert sizes(context_window=2048, source_tokens=96, top_source_tokens=256) == [256, 96, 96]
    # Window 800 - 256 answer - 1 question - 160 = 383: the top source gets 256, the others share 127.
    assert sizes(context_window=800, source_tokens=96, top_source_tokens=256) == [256, 63, 63]
    assert sizes(context_window=500, source_tokens=96, top_source_tokens=256) == [51, 16, 16]  # 83 left: 16 each for the others
