"""The llama.cpp backend: the same model, prompts, citations and streaming, with 8-bit weights in C++.

On a CPU, a 135M-parameter model in PyTorch spends most of each token in Python overhead; llama.cpp
(through LlamaIndex's ``LlamaCPP`` integration) decodes the same GGUF weights several times faster
(``benchmarks/bench_chat.py`` measures it). The bundled model and fine-tunes of it are written to a Q8_0
GGUF once (:func:`rag_app.gguf.export_gguf`) and cached beside the converted checkpoints; the
checkpoint's tokenizer still renders the chat template and counts prompt tokens, so prompts are the same
token for token in both backends.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.llms.llama_cpp import LlamaCPP

from rag_app.config import Settings
from rag_app.decoding import Opening


class MedQALlamaCPP(LlamaCPP):
    """LlamaIndex's ``LlamaCPP`` with the checkpoint's tokenizer, one generation at a time, and per-answer stops.

    ``tokenizer`` renders the chat template (``messages_to_prompt``) and counts tokens for the prompt budget.
    The C++ model is shared by every copy (``model_copy``) and is not thread-safe, so a lock serialises
    generations (the chat serves several browser tabs from one model).
    """

    _tokenizer: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default=None)

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        with self._lock:
            return super().complete(prompt, formatted=formatted, **kwargs)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        def locked() -> Iterator[Any]:
            with self._lock:  # released when the stream ends or is dropped (a stopped answer)
                yield from LlamaCPP.stream_complete(self, prompt, formatted=formatted, **kwargs)

        return locked()


def chat_prompt(tokenizer: Any) -> Any:
    """``messages_to_prompt`` for ``LlamaCPP``: the model's own chat template, ready for the answer."""

    def render(messages: Sequence[Any]) -> str:
        chat = [{"role": getattr(m.role, "value", m.role), "content": m.content or ""} for m in messages]
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)

    return render


def suppress_first(token_ids: Sequence[int]) -> Any:
    """A llama.cpp logits processor that keeps ``token_ids`` from being an answer's first token.

    The llama.cpp twin of transformers' ``begin_suppress_tokens``; one processor per answer.
    """
    import numpy as np

    ids = list(token_ids)
    state = {"first": True}

    def process(input_ids: Any, scores: Any) -> Any:
        if state["first"]:
            state["first"] = False
            scores = np.array(scores, copy=True)
            scores[ids] = -np.inf
        return scores

    return process


def opening_processor(opening: Opening) -> Any:
    """A llama.cpp logits processor that makes an answer open as :class:`rag_app.decoding.Opening` says.

    The llama.cpp twin of :class:`rag_app.decoding.OpeningProcessor`; one processor per answer.
    """
    import numpy as np

    state: dict[str, int] = {}

    def process(input_ids: Any, scores: Any) -> Any:
        start = state.setdefault("start", len(input_ids))
        allowed = opening.allowed(list(input_ids[start:]))
        if allowed is None:
            return scores
        kept = np.full_like(scores, -np.inf)
        kept[allowed] = np.asarray(scores)[allowed]
        return kept

    return process


def repetition_stop(tokenizer: Any) -> Any:
    """A llama.cpp stopping criterion: the answer repeats a sentence (:func:`rag_app.decoding.answer_repeats`)."""
    from rag_app.decoding import answer_repeats, answer_start_ids

    header = answer_start_ids(tokenizer)
    return lambda input_ids, logits: answer_repeats(list(input_ids), header, tokenizer)


def event_stop(event: threading.Event) -> Any:
    """A llama.cpp stopping criterion: ``event`` is set (the chat's Stop button)."""
    return lambda input_ids, logits: event.is_set()


def decoding_kwargs(temperature: float, max_new_tokens: int) -> dict[str, Any]:
    """``Llama.__call__`` arguments: greedy at temperature 0 (no repeat penalty, as in transformers), else top-p 0.9."""
    if temperature > 0:
        return {"temperature": temperature, "top_p": 0.9, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0, "max_tokens": max_new_tokens}
    return {"temperature": 0.0, "top_k": 1, "repeat_penalty": 1.0, "max_tokens": max_new_tokens}


def with_decoding(
    llm: MedQALlamaCPP,
    *,
    suppress: Sequence[int] = (),
    opening: Opening | None = None,
    stop: threading.Event | None = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
) -> MedQALlamaCPP:
    """A copy of ``llm`` (same C++ model) with its own stops, first tokens and decoding settings."""
    from llama_cpp import LogitsProcessorList, StoppingCriteriaList

    kwargs = dict(llm.generate_kwargs)
    if temperature is not None or max_new_tokens is not None:
        temp = temperature if temperature is not None else float(kwargs.get("temperature") or 0.0)
        kwargs.update(decoding_kwargs(temp, max_new_tokens or llm.max_new_tokens))
    if stop is not None:
        kwargs["stopping_criteria"] = StoppingCriteriaList([*(kwargs.get("stopping_criteria") or []), event_stop(stop)])
    if suppress:
        kwargs["logits_processor"] = LogitsProcessorList([*(kwargs.get("logits_processor") or []), suppress_first(suppress)])
    if opening is not None:
        kwargs["logits_processor"] = LogitsProcessorList([*(kwargs.get("logits_processor") or []), opening_processor(opening)])
    update: dict[str, Any] = {"generate_kwargs": kwargs}
    if max_new_tokens is not None:
        update["max_new_tokens"] = max_new_tokens
    if temperature is not None:
        update["temperature"] = min(temperature, 1.0)
    return llm.model_copy(update=update)


def load(settings: Settings, gguf: Path, checkpoint: Path, name: str) -> MedQALlamaCPP:
    """``MedQALlamaCPP`` over a GGUF file, with the tokenizer of its Hugging Face checkpoint.

    Args:
        settings: Context window, answer budget, temperature, repetition stop.
        gguf: The GGUF weights.
        checkpoint: Folder with the same model's tokenizer (and chat template).
        name: The model's readable name (reports, the chat's sidebar).
    """
    from llama_cpp import StoppingCriteriaList
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    kwargs = decoding_kwargs(settings.temperature, settings.max_new_tokens)
    if settings.stop_on_repeat:
        kwargs["stopping_criteria"] = StoppingCriteriaList([repetition_stop(tokenizer)])
    threads = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    llm = MedQALlamaCPP(
        model_path=str(gguf),
        temperature=min(settings.temperature, 1.0),
        max_new_tokens=settings.max_new_tokens,
        context_window=settings.context_window,
        generate_kwargs=kwargs,
        # Every core for prompt and answer (llama.cpp's default uses half of them for the answer).
        model_kwargs={"n_threads": threads, "n_threads_batch": threads, "n_batch": 1024, "n_ubatch": 1024},
        messages_to_prompt=chat_prompt(tokenizer),
        completion_to_prompt=lambda text: chat_prompt(tokenizer)([_user(text)]),
        verbose=False,
    )
    llm._tokenizer = tokenizer
    llm._lock = threading.Lock()
    return llm


def _user(text: str) -> Any:
    from llama_index.core.llms import ChatMessage

    return ChatMessage(role="user", content=text)
