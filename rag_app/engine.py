"""The medqa query engine: retrieve NIH sources, then answer from them with citations."""

from __future__ import annotations

import logging
from typing import Any, Generator, Optional

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import Response, StreamingResponse
from llama_index.core.llms import LLM
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle

from rag_app import prompts
from rag_app.config import Settings
from rag_app.decoding import Opening

logger = logging.getLogger("rag_app")


def source_coverage(question: str, nodes: list[NodeWithScore], matcher: Any) -> str:
    """Whether the sources are about what the question asks about, by the index's topic names.

    Returns:
        ``"covered"`` when the question names a topic (or a synonym) in full and a source is a QA pair about it,
        or names none in full but a source's topic in part (at least :data:`rag_app.focus.PARTIAL_NAME_SCORE`
        of it, e.g. "alzheimer's" for "Alzheimer's Disease"); ``"uncovered"`` when it names topics in full and
        no source is about any of them; ``"unknown"`` otherwise, or when there is no topic matcher (retrieval
        modes other than ``fielded``).
    """
    from rag_app.focus import PARTIAL_NAME_SCORE

    if matcher is None:
        return "unknown"
    names = matcher.named(question)
    if names:
        about = {doc for name in names for doc in matcher.doc_ids(name)}
        return "covered" if any(n.node.ref_doc_id in about for n in nodes) else "uncovered"
    # A topic named only in part is evidence enough that a source on it is about the question, not that none is.
    partly = matcher.doc_scores(question, PARTIAL_NAME_SCORE, limit=10**6)
    return "covered" if any(n.node.ref_doc_id in partly for n in nodes) else "unknown"


def decline_start_ids(tokenizer: Any) -> list[int]:
    """The first token of the abstain answer: kept from starting an answer whose sources are about the question."""
    return tokenizer(prompts.ABSTAIN_ANSWER, add_special_tokens=False)["input_ids"][:1]


def llm_tokenizer(llm: Any) -> Any:
    """The Hugging Face tokenizer of a local model (transformers or llama.cpp backend); None for others."""
    return getattr(llm, "_tokenizer", None)


class MedQAQueryEngine(CustomQueryEngine):
    """Answers a question from numbered retrieved sources (or from the model alone when ``use_rag`` is off).

    ``query(q)`` returns a ``Response`` (``StreamingResponse`` when ``streaming``) whose
    ``source_nodes`` are the sources shown to the model, in citation order: ``[1]`` is
    ``source_nodes[0]``. ``retrieve(q)`` returns those sources without generating.

    A citation names the source its text was taken from (:func:`rag_app.decoding.attribute_citations`), and an
    answer that cites nothing but is taken from one source gets that source's number
    (:func:`rag_app.decoding.citation_to_add`). A retrieval-aware fine-tune's answer opens with the top source's
    first words (``open_with_top_source``, :meth:`opening`). With ``decline_by_topic`` the engine, not the model, decides
    whether to decline: when the question names
    a topic and no source is about it, it answers :data:`rag_app.prompts.ABSTAIN_ANSWER` without generating;
    when a source is about it, the model may not start with that answer (:func:`source_coverage`). A small
    model's own decline decision follows the question's wording more than the sources' topics.
    """

    llm: LLM
    retriever: Optional[BaseRetriever] = None
    use_rag: bool = True
    streaming: bool = False
    max_new_tokens: int = 256
    context_window: int = 2048
    max_question_tokens: int = 256
    source_tokens: int = 160
    medical_notice: bool = True
    stop_on_repeat: bool = True  # drop a repeated sentence (the LLM's stop ends generation there)
    decline_by_topic: bool = True
    attribute_citations: bool = True  # a citation names the source its text was copied from
    open_with_top_source: str = "auto"  # "on", "off", or "auto": on for retrieval-aware fine-tunes

    # ---- helpers ------------------------------------------------------------
    def _count(self, text: str) -> int:
        return prompts.token_counter(llm_tokenizer(self.llm))(text)

    def clean_question(self, question: str) -> tuple[str, list[str]]:
        """:func:`rag_app.prompts.clean_question` with the model's token count and ``max_question_tokens``."""
        return prompts.clean_question(question, self._count, self.max_question_tokens)

    def retrieve(self, query: str | QueryBundle) -> list[NodeWithScore]:
        """The sources for a question (empty when RAG is off)."""
        query_str = query.query_str if isinstance(query, QueryBundle) else query
        question, _ = self.clean_question(query_str)
        if not self.use_rag or self.retriever is None:
            return []
        return self.retriever.retrieve(question)

    def messages(self, question: str, nodes: list[NodeWithScore] | None) -> list[dict[str, str]]:
        """The chat messages sent to the model for a (clean) question and its sources."""
        return prompts.answer_messages(
            question, nodes, self._count, use_rag=self.use_rag, context_window=self.context_window,
            max_new_tokens=self.max_new_tokens, source_tokens=self.source_tokens,
        )

    def coverage(self, question: str, nodes: list[NodeWithScore]) -> str:
        """:func:`source_coverage` of a clean question's sources; ``"unknown"`` without RAG or ``decline_by_topic``."""
        if not (self.use_rag and self.decline_by_topic):
            return "unknown"
        from rag_app.retrieval import topic_matcher

        return source_coverage(question, nodes, topic_matcher(self.retriever))

    def opening(self, coverage: str, passages: list[str]) -> Opening | None:
        """How an answer from ``passages`` must open (:func:`rag_app.decoding.answer_opening`), or None.

        With ``open_with_top_source`` on (``auto``: for a retrieval-aware fine-tune), the answer quotes the top
        source's first words; where the sources don't cover the question, it may decline instead.
        """
        from rag_app.decoding import answer_opening
        from rag_app.models import llm_info

        tokenizer = llm_tokenizer(self.llm)
        on = self.open_with_top_source == "on" or (
            self.open_with_top_source == "auto" and llm_info(self.llm).get("kind") == "retrieval-aware fine-tune"
        )
        if not (on and self.use_rag and passages and tokenizer is not None):
            return None
        return answer_opening(tokenizer, passages, () if coverage == "covered" else decline_start_ids(tokenizer))

    def answering_llm(self, coverage: str, passages: list[str]) -> Any:
        """The LLM for one answer: opening with the top source (:meth:`opening`), else, when the sources cover
        the question, one that can't start by declining."""
        from rag_app.models import with_decoding

        opening = self.opening(coverage, passages)
        if opening is not None:
            return with_decoding(self.llm, opening=opening)
        tokenizer = llm_tokenizer(self.llm)
        if coverage != "covered" or tokenizer is None:
            return self.llm
        return with_decoding(self.llm, suppress=decline_start_ids(tokenizer))

    # ---- CustomQueryEngine ----------------------------------------------------
    def custom_query(self, query_str: str) -> Response | StreamingResponse:
        question, warnings = self.clean_question(query_str)
        nodes = self.retriever.retrieve(question) if self.use_rag and self.retriever is not None else []
        coverage = self.coverage(question, nodes)
        chat = prompts.messages_to_llama(self.messages(question, nodes))
        metadata = {"question": question, "warnings": warnings, "use_rag": self.use_rag, "coverage": coverage}
        passages = [n.node.get_content() for n in nodes]
        llm = self.answering_llm(coverage, passages)
        if self.streaming:
            tokens = iter([prompts.ABSTAIN_ANSWER]) if coverage == "uncovered" else self._stream(llm, chat, passages)
            return StreamingResponse(response_gen=self._with_notice(tokens), source_nodes=nodes, metadata=metadata)
        text = prompts.ABSTAIN_ANSWER if coverage == "uncovered" else (llm.chat(chat).message.content or "")
        return Response(response=self._finish(text, passages), source_nodes=nodes, metadata=metadata)

    def _finish(self, text: str, passages: list[str]) -> str:
        from rag_app.decoding import finish_citations, trim_repetition

        text = trim_repetition(text.strip()) if self.stop_on_repeat else text.strip()
        text = finish_citations(text, passages, attribute=self.attribute_citations)
        return f"{text}\n\n{prompts.MEDICAL_NOTICE}" if self.medical_notice else text

    def _stream(self, llm: Any, chat: list[Any], passages: list[str]) -> Generator[str, None, None]:
        from rag_app.decoding import StreamAttributor, StreamTrimmer, citation_to_add

        trimmer = StreamTrimmer()  # never shows a repeated sentence (the generation stop ends the answer there)
        attributor = StreamAttributor(passages if self.attribute_citations else [])
        text = ""
        for chunk in llm.stream_chat(chat):
            shown = attributor.feed(trimmer.feed(chunk.delta or "") if self.stop_on_repeat else chunk.delta or "")
            if shown:
                text += shown
                yield shown
        rest = attributor.feed(trimmer.finish() if self.stop_on_repeat else "") + attributor.finish()
        rest += citation_to_add(text + rest, passages)
        if rest:
            yield rest

    def _with_notice(self, tokens: Any) -> Generator[str, None, None]:
        yield from tokens
        if self.medical_notice:
            yield f"\n\n{prompts.MEDICAL_NOTICE}"


def build_query_engine(
    settings: Settings | None = None,
    *,
    use_rag: bool = True,
    streaming: bool = False,
    llm: Any = None,
    embed_model: Any = None,
    retriever: Any = None,
    **overrides: Any,
) -> MedQAQueryEngine:
    """Build the medqa query engine from settings.

    Args:
        settings: Settings (default: from the environment); ``overrides`` replace fields (e.g. ``top_k=5``).
        use_rag: Retrieve sources; ``False`` answers from the model alone through the same interface.
        streaming: Return ``StreamingResponse`` objects from ``query``.
        llm: A LlamaIndex LLM to use instead of loading ``settings.llm``.
        embed_model: An embedding model to use instead of loading ``settings.embed_model``.
        retriever: A retriever to use instead of building one over the index.

    Returns:
        A LlamaIndex query engine with ``query``, ``retrieve`` and streaming.

    Raises:
        IndexMissingError: If RAG is on and there is no index (the message gives the command that builds it).
        ModelUnavailableError: If no LLM can be loaded.
    """
    from rag_app.models import load_llm
    from rag_app.retrieval import build_retriever

    settings = settings or Settings()
    if overrides:
        settings = Settings(**{**settings.model_dump(), **overrides})
    if use_rag and retriever is None:
        retriever = build_retriever(settings, embed_model=embed_model)
    llm = llm or load_llm(settings)
    return MedQAQueryEngine(
        llm=llm,
        retriever=retriever if use_rag else None,
        use_rag=use_rag,
        streaming=streaming,
        max_new_tokens=settings.max_new_tokens,
        context_window=getattr(getattr(llm, "metadata", None), "context_window", settings.context_window)
        or settings.context_window,
        max_question_tokens=settings.max_question_tokens,
        source_tokens=settings.source_tokens,
        medical_notice=settings.medical_notice,
        stop_on_repeat=settings.stop_on_repeat,
        decline_by_topic=settings.decline_by_topic,
        attribute_citations=settings.attribute_citations,
        open_with_top_source=settings.open_with_top_source,
    )
