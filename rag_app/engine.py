"""The medqa query engine: retrieve NIH sources, then answer from them with citations."""

from __future__ import annotations

import logging
from typing import Any, Generator, Optional

from llama_index.core.base.response.schema import Response, StreamingResponse
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle

from rag_app import prompts
from rag_app.config import Settings

logger = logging.getLogger("rag_app")


class MedQAQueryEngine(CustomQueryEngine):
    """Answers a question from numbered retrieved sources (or from the model alone when ``use_rag`` is off).

    ``query(q)`` returns a ``Response`` (``StreamingResponse`` when ``streaming``) whose
    ``source_nodes`` are the sources shown to the model, in citation order: ``[1]`` is
    ``source_nodes[0]``. ``retrieve(q)`` returns those sources without generating.
    """

    llm: Any
    retriever: Optional[Any] = None
    use_rag: bool = True
    streaming: bool = False
    max_new_tokens: int = 256
    context_window: int = 2048
    max_question_tokens: int = 256
    source_tokens: int = 160
    medical_notice: bool = True

    # ---- helpers ------------------------------------------------------------
    def _count(self, text: str) -> int:
        tokenizer = getattr(self.llm, "_tokenizer", None)
        if tokenizer is None:
            return prompts._default_counter(text)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def clean_question(self, question: str) -> tuple[str, list[str]]:
        """Validate a question and truncate it to ``max_question_tokens``.

        Returns:
            ``(question, warnings)``.

        Raises:
            ValueError: If the question is empty or only whitespace.
        """
        if not isinstance(question, str) or not question.strip():
            raise ValueError("the question is empty; ask something, e.g. 'What are the symptoms of glaucoma?'")
        question = " ".join(question.split())
        warnings: list[str] = []
        if self._count(question) > self.max_question_tokens:
            question = prompts.truncate_to_tokens(question, self.max_question_tokens, self._count)
            warning = f"the question was longer than {self.max_question_tokens} tokens and was truncated"
            logger.warning(warning)
            warnings.append(warning)
        return question, warnings

    def retrieve(self, query: str | QueryBundle) -> list[NodeWithScore]:
        """The sources for a question (empty when RAG is off)."""
        query_str = query.query_str if isinstance(query, QueryBundle) else query
        question, _ = self.clean_question(query_str)
        if not self.use_rag or self.retriever is None:
            return []
        return self.retriever.retrieve(question)

    def messages(self, question: str, nodes: list[NodeWithScore] | None) -> list[dict[str, str]]:
        """The chat messages sent to the model for a (clean) question and its sources."""
        if not self.use_rag:
            return prompts.build_messages(question)
        return prompts.rag_messages(
            question,
            nodes,
            self._count,
            context_window=self.context_window,
            max_new_tokens=self.max_new_tokens,
            source_tokens=self.source_tokens,
        )

    # ---- CustomQueryEngine ----------------------------------------------------
    def custom_query(self, query_str: str) -> Response | StreamingResponse:
        question, warnings = self.clean_question(query_str)
        nodes = self.retriever.retrieve(question) if self.use_rag and self.retriever is not None else []
        chat = prompts.messages_to_llama(self.messages(question, nodes))
        metadata = {"question": question, "warnings": warnings, "use_rag": self.use_rag}
        if self.streaming:
            return StreamingResponse(response_gen=self._stream(chat), source_nodes=nodes, metadata=metadata)
        text = self.llm.chat(chat).message.content or ""
        return Response(response=self._finish(text), source_nodes=nodes, metadata=metadata)

    def _finish(self, text: str) -> str:
        text = text.strip()
        return f"{text}\n\n{prompts.MEDICAL_NOTICE}" if self.medical_notice else text

    def _stream(self, chat: list[Any]) -> Generator[str, None, None]:
        for chunk in self.llm.stream_chat(chat):
            if chunk.delta:
                yield chunk.delta
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
    )
