"""The cross-encoder re-ranker: reads the message and each candidate QA pair together, then re-orders them.

The fielded retriever scores a message against each pair's vectors, topic name and question type separately; a
long message that names a condition inside a story and asks one thing ("can our kids get it?") often ranks the
topic's overview above the page that answers what was asked. A cross-encoder reads the message and a candidate's
question and answer opening in one pass (question entailment, as the best consumer health QA systems did), so it
can tell which of a topic's pages answers the question. :class:`CrossEncoderRerank` is a LlamaIndex node
postprocessor, as ``SentenceTransformerRerank`` is: it scores the retriever's top candidates and fuses that score
with the retriever's own (:func:`fused_score`).

The shipped model is trained by ``python -m finetune.rerank`` on MedQuAD's training split only.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, List, Optional, Sequence

import torch
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle
from sentence_transformers import CrossEncoder

from rag_app.config import Settings
from rag_app.errors import ModelUnavailableError
from rag_app.llm.load import cpu_has_bf16, pick_device
from rag_app.text.prompts import answer_text
from rag_app.text.words import sentences

logger = logging.getLogger("rag_app")

#: Words of a candidate's answer the re-ranker reads after its question (the opening says what the page is about).
ANSWER_WORDS = 24
#: Metadata key where the re-ranker's probability that a source answers the message is kept.
RELEVANCE_KEY = "relevance"


def candidate_text(node: BaseNode) -> str:
    """What the re-ranker reads of a candidate: its QA pair's question, then the first words of its answer text.

    Training (``finetune.rerank``) and the engine both call this, so the model reads at inference exactly what it was
    trained on.
    """
    meta = node.metadata or {}
    question = str(meta.get("question") or meta.get("focus") or "").strip()
    words = answer_text(node.get_content()).split()[:ANSWER_WORDS]
    return f"{question}\n{' '.join(words)}".strip()


#: Words of a message the re-ranker reads: a longer one keeps its first sentence (the subject line names the topic)
#: and as many of its last sentences as fit (the question is usually asked at the end).
MESSAGE_WORDS = 64


def message_text(message: str, max_words: int = MESSAGE_WORDS) -> str:
    """What the re-ranker reads of a message: all of it when short, else its first and last sentences.

    Example:
        >>> message_text("Gout. " + "We went hiking a lot this summer and had fun. " * 20 + "What can he take for it?", 16)
        'Gout. … What can he take for it?'
    """
    words = message.split()
    if len(words) <= max_words:
        return message
    parts = sentences(message)
    first, rest = parts[0], parts[1:]
    budget = max_words - len(first.split())
    tail: list[str] = []
    for sentence in reversed(rest):
        size = len(sentence.split())
        if size > budget:
            break
        tail.insert(0, sentence)
        budget -= size
    if budget < 0 or (not tail and rest):  # a first sentence too long, or a last one that doesn't fit: cut words
        return " ".join(words[: max_words // 2] + ["…"] + words[-(max_words // 2) :])
    return " ".join([first, "…", *tail]) if len(tail) < len(rest) else " ".join([first, *tail])


def text_from(node: BaseNode, start_sentence: str) -> str:
    """:func:`candidate_text` of ``node`` as if its answer began at ``start_sentence`` (and went on from there)."""
    meta = node.metadata or {}
    question = str(meta.get("question") or meta.get("focus") or "").strip()
    return f"{question}\n{' '.join(start_sentence.split()[:ANSWER_WORDS])}".strip()


def fused_score(retrieval: float, logit: float, weight: float) -> float:
    """A candidate's final score: the retriever's score plus ``weight`` times the re-ranker's probability."""
    return retrieval + weight * _sigmoid(logit)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 40.0), -40.0)))


class CrossEncoderRerank(BaseNodePostprocessor):
    """Re-ranks retrieved sources with a sentence-transformers ``CrossEncoder``, fused with the retrieval score.

    Each source's ``score`` becomes :func:`fused_score` and its metadata gains :data:`RELEVANCE_KEY`, the model's
    probability that the source answers the message; the best ``top_n`` are returned, best first.

    Args:
        model: The loaded ``CrossEncoder``.
        top_n: Sources returned.
        weight: Weight of the re-ranker's probability against the retriever's score (0 keeps the retriever's order).
        name: The model's name or path (for logs and the chat's sidebar).
    """

    top_n: int = Field(default=3, description="Sources returned.")
    weight: float = Field(default=1.0, description="Weight of the re-ranker's probability in the fused score.")
    name: str = Field(default="", description="The re-ranker's name or path.")
    _model: Any = PrivateAttr(default=None)

    def __init__(self, model: Any, top_n: int = 3, weight: float = 1.0, name: str = "") -> None:
        super().__init__(top_n=top_n, weight=weight, name=name)
        self._model = model

    @classmethod
    def class_name(cls) -> str:
        return "CrossEncoderRerank"

    def with_top_n(self, top_n: int) -> "CrossEncoderRerank":
        """The same model returning ``top_n`` sources (the chat's per-request choice; nothing is copied)."""
        return CrossEncoderRerank(self._model, top_n=top_n, weight=self.weight, name=self.name)

    def logits(self, query: str, nodes: Sequence[NodeWithScore]) -> list[float]:
        """The model's logit for each (query, source) pair."""
        if not nodes:
            return []
        message = message_text(query)
        pairs = [(message, candidate_text(n.node)) for n in nodes]
        scores = self._model.predict(pairs, batch_size=len(pairs), show_progress_bar=False, activation_fn=torch.nn.Identity())
        return [float(s) for s in scores]

    def start_sentence(self, query: str, node: NodeWithScore, sentences: Sequence[str], margin: float, limit: int = 12) -> int:
        """Where the answer from ``node`` should start: the sentence of its page that answers ``query``.

        Each of the first ``limit`` sentences is read as if the page began there (its question, then that sentence and
        what follows); a later sentence is chosen only when its logit beats the first sentence's by ``margin``.
        """
        texts = []
        for i in range(min(len(sentences), limit)):
            texts.append(text_from(node.node, " ".join(sentences[i : i + 3])))
        if len(texts) < 2:
            return 0
        message = message_text(query)
        logits = self._model.predict([(message, t) for t in texts], batch_size=len(texts), show_progress_bar=False, activation_fn=torch.nn.Identity())
        best = max(range(len(texts)), key=lambda i: float(logits[i]))
        return best if float(logits[best]) > float(logits[0]) + margin else 0

    def _postprocess_nodes(self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("CrossEncoderRerank needs the query")
        if not nodes:
            return []
        logits = self.logits(query_bundle.query_str, nodes)
        rescored = []
        for node, logit in zip(nodes, logits):
            node.node.metadata[RELEVANCE_KEY] = round(_sigmoid(logit), 4)
            rescored.append(NodeWithScore(node=node.node, score=fused_score(node.score or 0.0, logit, self.weight)))
        rescored.sort(key=lambda n: -(n.score or 0.0))
        return rescored[: self.top_n]


def load_reranker(settings: Settings, top_n: int | None = None) -> CrossEncoderRerank | None:
    """The re-ranker ``settings`` name (``MEDQA_RERANK_MODEL``), or None when ``MEDQA_RERANK`` is off.

    Raises:
        ModelUnavailableError: If the model folder can't be loaded.
    """
    if not settings.rerank:
        return None
    device = pick_device(settings.device)
    dtype = rerank_dtype(settings.rerank_dtype, device)
    try:
        model = CrossEncoder(
            settings.rerank_model,
            device=device,
            local_files_only=True,
            model_kwargs={"dtype": torch.bfloat16 if dtype == "bfloat16" else torch.float32},
        )
    except (OSError, ValueError) as err:
        raise ModelUnavailableError(
            f"re-ranker {settings.rerank_model!r} could not be loaded ({str(err).splitlines()[0]}); "
            "fix MEDQA_RERANK_MODEL or turn it off with MEDQA_RERANK=false"
        ) from None
    if dtype == "int8":
        quantize_linear_layers(model)
    return CrossEncoderRerank(model, top_n=top_n or settings.top_k, weight=settings.rerank_weight, name=settings.rerank_model)


def rerank_dtype(setting: str, device: str) -> str:
    """The re-ranker's weight type: ``setting``, with ``auto`` resolved for ``device``.

    On a CPU, ``auto`` is bfloat16 where the CPU has bfloat16 units and int8 (dynamically quantized linear layers)
    elsewhere; on a GPU, float32.
    """
    if setting != "auto":
        return setting
    if device != "cpu":
        return "float32"
    return "bfloat16" if cpu_has_bf16() else "int8"


def quantize_linear_layers(model: Any) -> None:
    """Replace the cross-encoder's linear layers by int8 ones with float activations (PyTorch dynamic quantization)."""
    module = model[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        quantized = torch.ao.quantization.quantize_dynamic(module.model, {torch.nn.Linear}, dtype=torch.qint8)
    module.model = quantized
