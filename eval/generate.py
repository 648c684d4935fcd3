"""Answering the engine's plans in batches, greedily, with answers cached per model weights, prompt and decoding.

The engine decides everything about an answer (:meth:`rag_app.engine.MedQAQueryEngine.plan`); this module only runs
the model on each plan's parts, several at a time with the transformers backend, and the engine finishes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

logger = logging.getLogger("eval")


class AnswerCache:
    """Answers already generated, keyed by model weights, prompt and decoding (an append-only JSONL file).

    Greedy decoding makes an answer a pure function of these, so a re-run (or an interrupted run) only generates what
    is missing. A model is identified by its folder and the size and modification time of its weight files, so
    retraining into the same folder invalidates its answers.
    """

    def __init__(self, path: Path, llm: Any) -> None:
        from rag_app.models import llm_info

        self.path = path
        self.model_key = self._fingerprint(llm)
        # The repetition stop changes answers ("2": it also checks an answer's last sentence).
        self.stop = "stop_on_repeat2" if llm_info(llm).get("stop_on_repeat") else ""
        self.answers: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.answers[row["key"]] = row["answer"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by an interrupted run: ignore it

    @staticmethod
    def _fingerprint(llm: Any) -> str:
        from rag_app.models import llm_info

        root = Path(str(llm_info(llm).get("weights") or llm_info(llm).get("path") or getattr(llm, "model_name", "")))
        weights = sorted(root.glob("*.safetensors")) + sorted(root.glob("*.bin")) if root.is_dir() else []
        if root.is_file():  # a GGUF file (the llama.cpp backend)
            weights = [root]
        return json.dumps([str(root.resolve()) if root.exists() else str(root)] + [[w.name, w.stat().st_size, w.stat().st_mtime_ns] for w in weights])

    def key(self, conversation: list[dict[str, str]], decoding: dict[str, Any]) -> str:
        """The cache key of one prompt for this model, decoded as ``decoding`` says."""
        blob = json.dumps([self.model_key, conversation, decoding, self.stop], sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, conversation: list[dict[str, str]], decoding: dict[str, Any]) -> Optional[str]:
        """The cached answer, or None."""
        return self.answers.get(self.key(conversation, decoding))

    def put_many(self, keys: Sequence[str], outs: Sequence[str]) -> None:
        """Store answers under their keys (appended and flushed at once, so an interruption keeps them)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            for key, out in zip(keys, outs):
                self.answers[key] = out
                handle.write(json.dumps({"key": key, "answer": out}) + "\n")


def decoding_of(part: Any) -> dict[str, Any]:
    """What decodes an :class:`rag_app.engine.AnswerPart`, as cache-key data."""
    opening = part.opening
    return {
        "max_new_tokens": part.max_new_tokens,
        "opening": list(opening.tokens) if opening else None,
        "alternatives": list(opening.alternatives) if opening else None,
        "suppress": [] if opening else list(part.suppress),
    }


def answer_plans(engine: Any, plans: Sequence[Any], batch_size: int, cache: AnswerCache | None, desc: str) -> list[str]:
    """The engine's answers to its plans, finished as the engine finishes them (no notice: the engine's setting).

    Every part of every plan that doesn't decline is generated (cached ones reused), batched by decoding.
    """
    from tqdm.auto import tqdm

    from rag_app.prompts import ABSTAIN_ANSWER

    jobs = [(p, j, part) for p, plan in enumerate(plans) if not plan.declines for j, part in enumerate(plan.parts)]
    keys = [cache.key(plans[p].messages, decoding_of(part)) if cache else "" for p, _, part in jobs]
    texts: list[Optional[str]] = [cache.answers.get(k) if cache else None for k in keys]
    todo = [i for i, t in enumerate(texts) if t is None]
    if cache and len(todo) < len(jobs):
        logger.info("%s: %d of %d answers reused from %s", desc, len(jobs) - len(todo), len(jobs), cache.path)
    # Rows of one batch share their budget and first-token suppression; longest prompts first keep padding small.
    todo.sort(key=lambda i: (json.dumps(decoding_of(jobs[i][2])["suppress"]), jobs[i][2].max_new_tokens,
                             -sum(len(m["content"]) for m in plans[jobs[i][0]].messages)))
    batches: list[list[int]] = []
    for i in todo:
        if batches and len(batches[-1]) < batch_size and _batchable(jobs[batches[-1][0]][2], jobs[i][2]):
            batches[-1].append(i)
        else:
            batches.append([i])
    for batch in tqdm(batches, desc=desc, unit="batch"):
        part = jobs[batch[0]][2]
        out = generate_batch(
            engine.llm, [plans[jobs[i][0]].messages for i in batch], part.max_new_tokens,
            begin_suppress_tokens=list(decoding_of(part)["suppress"]), openings=[jobs[i][2].opening for i in batch],
        )
        if cache:
            cache.put_many([keys[i] for i in batch], out)
        for i, text in zip(batch, out):
            texts[i] = text
    parts: list[list[str]] = [[] for _ in plans]
    for (p, _, _), text in zip(jobs, texts):
        parts[p].append(text or "")
    return [engine.finish(plan, ABSTAIN_ANSWER if plan.declines else engine.join_parts(parts[p])) for p, plan in enumerate(plans)]


def _batchable(a: Any, b: Any) -> bool:
    return a.max_new_tokens == b.max_new_tokens and decoding_of(a)["suppress"] == decoding_of(b)["suppress"]


def generate_batch(llm: Any, conversations: Sequence[list[dict[str, str]]], max_new_tokens: int, **generate_kwargs: Any) -> list[str]:
    """Generate one answer per conversation in a single left-padded batch, greedily.

    Args:
        llm: From :func:`rag_app.models.load_llm`: a ``HuggingFaceLLM`` (its model and tokenizer are used), or
            the llama.cpp backend, which answers one conversation at a time (:func:`generate_each`).
        conversations: Chat messages per example, as built by the engine (``plan.messages``).
        max_new_tokens: Generation budget per answer.
        generate_kwargs: More ``model.generate`` arguments (e.g. ``begin_suppress_tokens``), and ``openings``: one
            :class:`rag_app.decoding.Opening` (or None) per conversation.

    Returns:
        The decoded answers, special tokens removed (a repeat the generation stopped at is still there).
    """
    from rag_app.gguf import is_llamacpp

    if is_llamacpp(llm):
        return generate_each(llm, conversations, max_new_tokens, **generate_kwargs)
    import torch

    from rag_app.decoding import repetition_stop
    from rag_app.models import llm_info

    tokenizer, model = llm._tokenizer, llm._model
    prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only batching: pad on the left so answers start together
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    finally:
        tokenizer.padding_side = side
    extra: dict[str, Any] = {}
    openings = generate_kwargs.pop("openings", None)
    if not generate_kwargs.get("begin_suppress_tokens"):
        generate_kwargs.pop("begin_suppress_tokens", None)
    if openings is not None and any(o is not None for o in openings):
        from transformers import LogitsProcessorList

        from rag_app.decoding import OpeningProcessor

        extra["logits_processor"] = LogitsProcessorList([OpeningProcessor(openings)])
    if llm_info(llm).get("stop_on_repeat"):
        from transformers import StoppingCriteriaList

        extra["stopping_criteria"] = StoppingCriteriaList([repetition_stop(tokenizer)])
    with torch.inference_mode():
        out = model.generate(
            **batch,
            **extra,
            **generate_kwargs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
        )
    new = out[:, batch["input_ids"].shape[1] :]
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def generate_each(llm: Any, conversations: Sequence[list[dict[str, str]]], max_new_tokens: int, **generate_kwargs: Any) -> list[str]:
    """Greedy answers one conversation at a time, through the LLM's own ``chat`` (the llama.cpp backend).

    ``begin_suppress_tokens`` in ``generate_kwargs`` becomes the backend's first-token suppression and
    ``openings`` (one per conversation) its answer openings; nothing else is accepted.
    """
    from llama_index.core.llms import ChatMessage

    from rag_app.models import with_decoding

    unknown = set(generate_kwargs) - {"begin_suppress_tokens", "openings"}
    if unknown:
        raise ValueError(f"generate_each does not take {sorted(unknown)}")
    suppress = generate_kwargs.get("begin_suppress_tokens") or ()
    openings = generate_kwargs.get("openings") or [None] * len(conversations)
    texts = []
    for conversation, opening in zip(conversations, openings):
        mine = with_decoding(llm, suppress=suppress, opening=opening, temperature=0.0, max_new_tokens=max_new_tokens)
        reply = mine.chat([ChatMessage(role=m["role"], content=m["content"]) for m in conversation]).message.content or ""
        texts.append(reply.strip())
    return texts
