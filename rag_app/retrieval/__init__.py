"""The retrieval layer: which QA pairs answer a message, best first.

``modes`` (the retriever ``MEDQA_RETRIEVAL_MODE`` names, and what it can do), ``fielded`` (the default),
``classic`` (dense, BM25, hybrid) and ``rerank`` (the cross-encoder that re-orders their candidates).
"""
