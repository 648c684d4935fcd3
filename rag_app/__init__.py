"""medqa's retrieval-augmented question answering over NIH sources, as a library.

    from rag_app import build_query_engine
    engine = build_query_engine()                 # settings from MEDQA_* / MEDQA_CONFIG
    response = engine.query("What are the symptoms of glaucoma?")
    print(response)                               # answer with [n] citations
    for n in response.source_nodes:               # [1] is source_nodes[0]
        print(n.score, n.node.metadata["focus"], n.node.metadata["url"])

    from rag_app import build_chat_engine
    chat = build_chat_engine()                    # a conversation: follow-ups are searched as standalone questions
    chat.chat("What is gout?"); print(chat.chat("How is it treated?").metadata["searched_for"])

    from rag_app import Settings, open_index
    from rag_app.retrieval import fielded_retriever
    index = open_index(Settings())                # the index, read once; retrievers over it are cheap
    top5 = fielded_retriever(index, Settings()).with_top_k(5)
"""

from __future__ import annotations

import os

# Nothing leaves the machine: no Chroma telemetry, no tokenizer-parallelism fork warnings.
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rag_app.config import Settings, get_settings  # noqa: E402

__all__ = [
    "Settings",
    "get_settings",
    "build_query_engine",
    "build_chat_engine",
    "standalone_question",
    "build_retriever",
    "open_index",
    "build_index",
    "load_llm",
    "load_embed_model",
    "IndexMissingError",
    "ModelUnavailableError",
    "MedQAQueryEngine",
    "MedQAChatEngine",
]


def __getattr__(name: str):
    # Heavy imports (torch, llama-index, chromadb) happen on first use, not at `import rag_app`.
    if name in {"build_query_engine", "MedQAQueryEngine"}:
        from rag_app import engine

        return getattr(engine, name)
    if name in {"build_chat_engine", "standalone_question", "MedQAChatEngine"}:
        from rag_app import conversation

        return getattr(conversation, name)
    if name == "build_retriever":
        from rag_app.retrieval import build_retriever

        return build_retriever
    if name == "open_index":
        from rag_app.store import open_index

        return open_index
    if name in {"build_index", "IndexMissingError"}:
        from rag_app import index

        return getattr(index, name)
    if name in {"load_llm", "load_embed_model", "ModelUnavailableError"}:
        from rag_app import models

        return getattr(models, name)
    raise AttributeError(f"module 'rag_app' has no attribute {name!r}")
