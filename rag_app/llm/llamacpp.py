"""The llama.cpp backend: the same model, prompts, citations and streaming, with 16-bit weights in C++.

On a CPU, a 135M-parameter model in PyTorch spends most of each token in Python overhead; llama.cpp
(through LlamaIndex's ``LlamaCPP`` integration) decodes the same GGUF weights several times faster
(``benchmarks/bench_chat.py`` measures it). The bundled model and fine-tunes of it are written to a 16-bit
GGUF once (:func:`rag_app.llm.gguf.export_gguf`) and cached beside the converted checkpoints; the
checkpoint's tokenizer still renders the chat template and counts prompt tokens, so prompts are the same
token for token in both backends.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Any, Iterator, Sequence

from llama_cpp import StoppingCriteriaList
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms import ChatMessage
from llama_index.llms.llama_cpp import LlamaCPP
from transformers import AutoTokenizer

from rag_app.config import Settings
from rag_app.llm.decoding import llamacpp_decoding_kwargs, llamacpp_repetition_stop
from rag_app.llm.info import ModelInfo


class MedQALlamaCPP(LlamaCPP):
    """LlamaIndex's ``LlamaCPP`` with the checkpoint's tokenizer, one generation at a time, and per-answer stops.

    ``tokenizer`` renders the chat template (``messages_to_prompt``) and counts tokens for the prompt budget.
    The C++ model is shared by every copy (``model_copy``) and is not thread-safe, so a lock serialises
    generations (the chat serves several browser tabs from one model).
    """

    model_info: ModelInfo = Field(default_factory=lambda: ModelInfo(name="llama.cpp model"), description="What medqa loaded.")
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

    def close(self) -> None:
        """Free the C++ model now (every copy of it, which shares it, stops working)."""
        self._model.close()


def chat_prompt(tokenizer: Any) -> Any:
    """``messages_to_prompt`` for ``LlamaCPP``: the model's own chat template, ready for the answer."""

    def render(messages: Sequence[Any]) -> str:
        chat = [{"role": getattr(m.role, "value", m.role), "content": m.content or ""} for m in messages]
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)

    return render


def load(settings: Settings, gguf: Path, checkpoint: Path, info: ModelInfo) -> MedQALlamaCPP:
    """``MedQALlamaCPP`` over a GGUF file, with the tokenizer of its Hugging Face checkpoint.

    The C++ model is freed when the last copy of it goes, and at interpreter exit before Python tears its modules
    down (llama-cpp-python's own finaliser fails then).

    Args:
        settings: Context window, answer budget, temperature, repetition stop.
        gguf: The GGUF weights.
        checkpoint: Folder with the same model's tokenizer (and chat template).
        info: What is loaded (name, kind, device, ...).
    """
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    kwargs = llamacpp_decoding_kwargs(settings.temperature, settings.max_new_tokens)
    if settings.stop_on_repeat:
        kwargs["stopping_criteria"] = StoppingCriteriaList([llamacpp_repetition_stop(tokenizer)])
    threads = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    llm = MedQALlamaCPP(
        model_path=str(gguf),
        temperature=min(settings.temperature, 1.0),
        max_new_tokens=settings.max_new_tokens,
        context_window=settings.context_window,
        generate_kwargs=kwargs,
        # Every core for prompt and answer (llama.cpp's default uses half of them for the answer).
        # Flash attention reads a prompt about a fifth faster on a CPU (bench_chat's time to first token).
        model_kwargs={"n_threads": threads, "n_threads_batch": threads, "n_batch": 1024, "n_ubatch": 1024, "flash_attn": True},
        messages_to_prompt=chat_prompt(tokenizer),
        completion_to_prompt=lambda text: chat_prompt(tokenizer)([ChatMessage(role="user", content=text)]),
        verbose=False,
    )
    llm.model_info = info  # LlamaCPP's own __init__ takes only its fields
    llm._tokenizer = tokenizer
    llm._lock = threading.Lock()
    model = llm._model
    weakref.finalize(model, model._stack.close)  # frees the weights; Llama.close() after it finds nothing left to free
    return llm
