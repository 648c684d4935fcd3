"""Batched, greedy generation over the query engine's own prompts."""

from __future__ import annotations

from typing import Any, Sequence


def generate_batch(llm: Any, conversations: Sequence[list[dict[str, str]]], max_new_tokens: int, **generate_kwargs: Any) -> list[str]:
    """Generate one answer per conversation in a single left-padded batch, greedily.

    Args:
        llm: From :func:`rag_app.models.load_llm`: a ``HuggingFaceLLM`` (its model and tokenizer are used), or
            the llama.cpp backend, which answers one conversation at a time (:func:`generate_each`).
        conversations: Chat messages per example, as built by the engine (``engine.messages``).
        max_new_tokens: Generation budget per answer.
        generate_kwargs: More ``model.generate`` arguments (e.g. ``begin_suppress_tokens``), and ``openings``: one
            :class:`rag_app.decoding.Opening` (or None) per conversation.

    Returns:
        The decoded answers, special tokens removed.
    """
    from rag_app.gguf import is_llamacpp

    if is_llamacpp(llm):
        return generate_each(llm, conversations, max_new_tokens, **generate_kwargs)
    import torch

    from rag_app.decoding import repetition_stop, trim_repetition

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
    if openings is not None and any(o is not None for o in openings):
        from transformers import LogitsProcessorList

        from rag_app.decoding import OpeningProcessor

        extra["logits_processor"] = LogitsProcessorList([OpeningProcessor(openings)])
    stop_on_repeat = getattr(llm, "_medqa_info", {}).get("stop_on_repeat", False)
    if stop_on_repeat:
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
    # The stop ends a row once it repeats itself; the repeat is cut off, as the engine does.
    texts = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return [trim_repetition(t) for t in texts] if stop_on_repeat else texts


def generate_each(llm: Any, conversations: Sequence[list[dict[str, str]]], max_new_tokens: int, **generate_kwargs: Any) -> list[str]:
    """Greedy answers one conversation at a time, through the LLM's own ``chat`` (the llama.cpp backend).

    ``begin_suppress_tokens`` in ``generate_kwargs`` becomes the backend's first-token suppression and
    ``openings`` (one per conversation) its answer openings; nothing else is accepted.
    """
    from llama_index.core.llms import ChatMessage

    from rag_app.decoding import trim_repetition
    from rag_app.models import llm_info, with_decoding

    unknown = set(generate_kwargs) - {"begin_suppress_tokens", "openings"}
    if unknown:
        raise ValueError(f"generate_each does not take {sorted(unknown)}")
    suppress = generate_kwargs.get("begin_suppress_tokens") or ()
    openings = generate_kwargs.get("openings") or [None] * len(conversations)
    stop_on_repeat = llm_info(llm).get("stop_on_repeat", False)
    texts = []
    for conversation, opening in zip(conversations, openings):
        mine = with_decoding(llm, suppress=suppress, opening=opening, temperature=0.0, max_new_tokens=max_new_tokens)
        reply = mine.chat([ChatMessage(role=m["role"], content=m["content"]) for m in conversation]).message.content or ""
        texts.append(trim_repetition(reply.strip()) if stop_on_repeat else reply.strip())
    return texts
