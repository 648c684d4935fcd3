"""Query engine: answers with sources from the real bundled LLM, no-RAG mode, streaming, bad input."""

from __future__ import annotations

import logging

import pytest

from rag_app import build_query_engine, prompts
from rag_app.index import build_index


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
