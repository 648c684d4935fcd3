"""Greedy answers in batches: many prompts at once with the transformers backend, one at a time with llama.cpp.

Each prompt keeps its own decoding (:class:`rag_app.answer.plan.AnswerPart`'s opening, first-token suppression and
budget, through :mod:`rag_app.llm.decoding`); the engine groups prompts that share a budget and a suppression.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from llama_index.core.llms import ChatMessage
from transformers import LogitsProcessorList, StoppingCriteriaList

from rag_app.llm.decoding import OpeningProcessor, llm_model, llm_tokenizer, repetition_stop, with_decoding
from rag_app.llm.gguf import is_llamacpp
from rag_app.llm.info import model_info


def generate_batch(llm: Any, conversations: Sequence[list[dict[str, str]]], max_new_tokens: int, **generate_kwargs: Any) -> list[str]:
    """Generate one answer per conversation in a single left-padded batch, greedily.

    Args:
        llm: From :func:`rag_app.llm.load.load_llm`: a ``HuggingFaceLLM`` (its model and tokenizer are used), or
            the llama.cpp backend, which answers one conversation at a time (:func:`generate_each`).
        conversations: Chat messages per example, as the engine builds them (``plan.messages``).
        max_new_tokens: Generation budget per answer.
        generate_kwargs: More ``model.generate`` arguments (e.g. ``begin_suppress_tokens``), and ``openings``: one
            :class:`rag_app.text.openings.Opening` (or None) per conversation.

    Returns:
        The decoded answers, special tokens removed (a repeat the generation stopped at is still there).
    """
    if is_llamacpp(llm):
        return generate_each(llm, conversations, max_new_tokens, **generate_kwargs)
    tokenizer, model = llm_tokenizer(llm), llm_model(llm)
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
        extra["logits_processor"] = LogitsProcessorList([OpeningProcessor(openings)])
    if model_info(llm).stop_on_repeat:
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
