"""Classic retrieval over the Chroma index: dense, BM25 or both fused by reciprocal rank, one chunk per QA pair.

The ``dense``, ``bm25`` and ``hybrid`` retrieval modes (``MEDQA_RETRIEVAL_MODE``); ``fielded``, the default, is
:mod:`rag_app.retrieval.fielded`.
"""

from __future__ import annotations

from typing import Any, List, Sequence

import Stemmer
from llama_index.core import VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import MockLLM
from llama_index.core.retrievers import QueryFusionRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.retrievers.bm25 import BM25Retriever

from rag_app.config import Settings
from rag_app.index.chroma import vector_store


def one_per_source(nodes: Sequence[NodeWithScore], top_k: int) -> list[NodeWithScore]:
    """Keep the best-ranked chunk of each source document (QA pair), up to ``top_k``."""
    kept: list[NodeWithScore] = []
    seen: set[str] = set()
    for node in nodes:
        key = node.node.ref_doc_id or node.node.node_id
        if key in seen:
            continue
        seen.add(key)
        kept.append(node)
        if len(kept) == top_k:
            break
    return kept


class MedQARetriever(BaseRetriever):
    """Dense, BM25 or hybrid (RRF) retrieval with at most one chunk per source QA pair.

    Args:
        dense: A retriever over the vector store (or None in ``bm25`` mode).
        sparse: A BM25 retriever (or None in ``dense`` mode).
        top_k: Sources returned.
        candidate_k: Candidates fetched from each retriever before fusion and de-duplication.
        exclude: Source document ids never returned (evaluation's "knowledge absent" setting).
    """

    def __init__(
        self,
        dense: BaseRetriever | None,
        sparse: BaseRetriever | None,
        top_k: int,
        candidate_k: int,
        exclude: frozenset[str] = frozenset(),
    ) -> None:
        if dense is None and sparse is None:
            raise ValueError("MedQARetriever needs a dense or a BM25 retriever")
        self.top_k = top_k
        self.candidate_k = max(candidate_k, top_k)
        self.exclude = frozenset(exclude)
        parts = [r for r in (dense, sparse) if r is not None]
        if len(parts) == 2:
            # num_queries=1: fuse the two rankings of the user's own query; no LLM query rewriting.
            self._inner: BaseRetriever = QueryFusionRetriever(
                parts,
                mode="reciprocal_rerank",
                num_queries=1,
                similarity_top_k=2 * self.candidate_k,
                use_async=False,
                llm=MockLLM(),
            )
        else:
            self._inner = parts[0]
        self._parts = (dense, sparse)
        super().__init__()

    def with_top_k(self, top_k: int) -> "MedQARetriever":
        """A retriever over the same dense and BM25 retrievers returning ``top_k`` sources."""
        return MedQARetriever(*self._parts, top_k=top_k, candidate_k=max(self.candidate_k, top_k), exclude=self.exclude)

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        nodes = self._inner.retrieve(query_bundle)
        if self.exclude:
            nodes = [n for n in nodes if (n.node.ref_doc_id or n.node.node_id) not in self.exclude]
        return one_per_source(nodes, self.top_k)


def dense_retriever(settings: Settings, embed_model: Any, similarity_top_k: int) -> BaseRetriever:
    """Vector retriever over the Chroma collection."""
    index = VectorStoreIndex.from_vector_store(vector_store(settings), embed_model=embed_model)
    return index.as_retriever(similarity_top_k=similarity_top_k)


def bm25_retriever(nodes: Sequence[Any], similarity_top_k: int) -> BaseRetriever:
    """BM25 (bm25s, English stemming) over the given chunks."""
    return BM25Retriever.from_defaults(
        nodes=list(nodes),
        similarity_top_k=min(similarity_top_k, len(nodes)),
        stemmer=Stemmer.Stemmer("english"),
        language="english",
    )
