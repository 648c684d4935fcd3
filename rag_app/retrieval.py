"""Hybrid retrieval: dense (Chroma) + BM25, fused by reciprocal rank, one chunk per QA pair."""

from __future__ import annotations

import logging
from typing import Any, List, Sequence

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from rag_app.config import Settings

logger = logging.getLogger("rag_app")


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
        from llama_index.core.llms import MockLLM
        from llama_index.core.retrievers import QueryFusionRetriever

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
        super().__init__()

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        nodes = self._inner.retrieve(query_bundle)
        if self.exclude:
            nodes = [n for n in nodes if (n.node.ref_doc_id or n.node.node_id) not in self.exclude]
        return one_per_source(nodes, self.top_k)


def dense_retriever(settings: Settings, embed_model: Any, similarity_top_k: int) -> BaseRetriever:
    """Vector retriever over the Chroma collection."""
    from llama_index.core import VectorStoreIndex

    from rag_app.index import vector_store

    index = VectorStoreIndex.from_vector_store(vector_store(settings), embed_model=embed_model)
    return index.as_retriever(similarity_top_k=similarity_top_k)


def bm25_retriever(nodes: Sequence[Any], similarity_top_k: int) -> BaseRetriever:
    """BM25 (bm25s, English stemming) over the given chunks."""
    import Stemmer
    from llama_index.retrievers.bm25 import BM25Retriever

    return BM25Retriever.from_defaults(
        nodes=list(nodes),
        similarity_top_k=min(similarity_top_k, len(nodes)),
        stemmer=Stemmer.Stemmer("english"),
        language="english",
    )


def build_retriever(
    settings: Settings,
    embed_model: Any = None,
    nodes: Sequence[Any] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> MedQARetriever:
    """The retriever the query engine uses, per ``settings.retrieval_mode``.

    Args:
        settings: Top-k, candidate-k, mode and index location.
        embed_model: Embedding model (loaded from settings when omitted and needed).
        nodes: The index's chunks for BM25 (read from Chroma when omitted and needed).
        exclude: Source document ids to leave out of every result.

    Raises:
        IndexMissingError: If the index does not exist.
    """
    from rag_app.index import get_collection, load_nodes
    from rag_app.models import load_embed_model

    get_collection(settings)  # fail early, with the fix, when there is no index
    dense = sparse = None
    if settings.retrieval_mode in {"hybrid", "dense"}:
        dense = dense_retriever(settings, embed_model or load_embed_model(settings), settings.candidate_k)
    if settings.retrieval_mode in {"hybrid", "bm25"}:
        nodes = list(nodes) if nodes is not None else load_nodes(settings)
        if nodes:
            sparse = bm25_retriever(nodes, settings.candidate_k)
        elif dense is None:
            raise ValueError("the index is empty; build it with `python -m rag_app.index`")
    return MedQARetriever(dense, sparse, top_k=settings.top_k, candidate_k=settings.candidate_k, exclude=exclude)
