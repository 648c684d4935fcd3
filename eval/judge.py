"""Judge-based ragas metrics (Faithfulness, ResponseRelevancy), only when a judge is configured.

The judge is a LlamaIndex LLM: a local model (``--judge_llm``: hub id, directory or ``.gguf``, loaded
like ``MEDQA_LLM``) or an OpenAI-compatible endpoint (``--judge_api_base`` + ``--judge_model``, e.g. a
local vLLM server). ragas never builds an implicit OpenAI client and telemetry stays off.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence


def _judge_llm(args: Any) -> Any:
    from rag_app.config import Settings
    from rag_app.llm.load import load_llm

    if args.judge_api_base:
        try:
            from llama_index.llms.openai_like import OpenAILike
        except ImportError as err:
            raise RuntimeError("pip install llama-index-llms-openai-like to use --judge_api_base") from err
        return OpenAILike(
            model=args.judge_model or "judge",
            api_base=args.judge_api_base,
            api_key=os.environ.get("OPENAI_API_KEY", "not-needed"),
            is_chat_model=True,
        )
    return load_llm(Settings(llm=args.judge_llm, offline_fallback=False), max_new_tokens=512)


def judge_scores(args: Any, systems: Sequence[Any], questions: Sequence[str], answers: dict[str, list[str]], sources: dict[str, list[list[Any]]]) -> dict[str, dict[str, list[float]]]:
    """Per-question ragas Faithfulness (RAG systems) and ResponseRelevancy (all systems)."""
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    from ragas import SingleTurnSample
    from ragas.embeddings import LlamaIndexEmbeddingsWrapper
    from ragas.llms import LlamaIndexLLMWrapper
    from ragas.metrics import Faithfulness, ResponseRelevancy

    from rag_app.config import Settings
    from rag_app.llm.load import load_embed_model

    llm = LlamaIndexLLMWrapper(_judge_llm(args))
    embeddings = LlamaIndexEmbeddingsWrapper(load_embed_model(Settings()))
    faithfulness = Faithfulness(llm=llm)
    relevancy = ResponseRelevancy(llm=llm, embeddings=embeddings)
    out: dict[str, dict[str, list[float]]] = {}
    for spec in systems:
        scores: dict[str, list[float]] = {"ragas_response_relevancy": []}
        if spec.rag:
            scores["ragas_faithfulness"] = []
        for i, q in enumerate(questions):
            contexts = [n.node.get_content() for n in sources[spec.name][i]]
            sample = SingleTurnSample(user_input=q, response=answers[spec.name][i], retrieved_contexts=contexts or None)
            for name, metric in (("ragas_response_relevancy", relevancy), ("ragas_faithfulness", faithfulness)):
                if name not in scores:
                    continue
                try:
                    scores[name].append(float(metric.single_turn_score(sample)))
                except Exception:  # a judge that can't produce the expected output scores NaN
                    scores[name].append(math.nan)
        out[spec.name] = scores
    return out
