"""The model layer: finding, converting, loading and decoding the language model (and the embedding model).

``resolve`` (which weights a setting names), ``convert`` (GGUF and LoRA adapters to checkpoints), ``gguf`` (checkpoints
back to GGUF), ``load`` (the LlamaIndex LLM of either backend, with its :class:`~rag_app.llm.info.ModelInfo`),
``llamacpp`` (the llama.cpp backend), ``decoding`` (every decoding hook) and ``batch`` (greedy answers in batches).
"""
