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
    from rag_app.retrieval.fielded import fielded_retriever
    index = open_index(Settings())                # the index, read once; retrievers over it are cheap
    top5 = fielded_retriever(index, Settings()).with_top_k(5)
"""

from __future__ import annotations

import importlib
import os

# Nothing leaves the machine: no Chroma telemetry, no tokenizer-parallelism fork warnings.
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rag_app.config import Settings, get_settings  # noqa: E402

#: The public names and the module each lives in; they are imported on first use (see :func:`__getattr__`).
PUBLIC = {
    "build_query_engine": "rag_app.answer.engine",
    "MedQAQueryEngine": "rag_app.answer.engine",
    "build_chat_engine": "rag_app.answer.conversation",
    "standalone_question": "rag_app.answer.conversation",
    "MedQAChatEngine": "rag_app.answer.conversation",
    "build_retriever": "rag_app.retrieval.modes",
    "open_index": "rag_app.index.store",
    "build_index": "rag_app.index.build",
    "index_status": "rag_app.index.chroma",
    "load_llm": "rag_app.llm.load",
    "load_embed_model": "rag_app.llm.load",
    "model_info": "rag_app.llm.info",
    "MedQAError": "rag_app.errors",
    "IndexMissingError": "rag_app.errors",
    "ModelUnavailableError": "rag_app.errors",
}
__all__ = ["Settings", "get_settings", *PUBLIC]


def __getattr__(name: str):
    # `import rag_app` stays light (settings only): torch, llama-index and chromadb load when a name is first used.
    if name in PUBLIC:
        return getattr(importlib.import_module(PUBLIC[name]), name)
    raise AttributeError(f"module 'rag_app' has no attribute {name!r}")
