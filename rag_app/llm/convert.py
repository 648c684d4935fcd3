"""Converting weights once: a GGUF file to a Hugging Face checkpoint, and a LoRA adapter merged onto its base.

Both are written under ``<storage>/models/`` atomically (an interruption never leaves half a model) and reused while
the source files are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

from rag_app.config import Settings
from rag_app.errors import ModelUnavailableError
from rag_app.files import atomic_path

logger = logging.getLogger("rag_app")


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


def merged_adapter_dir(adapter_dir: Path, settings: Settings, base_checkpoint: Callable[[str, Settings], Path]) -> Path:
    """A LoRA adapter folder merged onto its base, once, under ``<storage>/models/`` (keyed by the weights' hash).

    Args:
        adapter_dir: The adapter folder.
        settings: Where converted models are kept.
        base_checkpoint: Returns the local checkpoint folder of the adapter's base model (by name).
    """
    weights = sorted(adapter_dir.glob("adapter_model.*"))
    if not weights:
        raise FileNotFoundError(f"{adapter_dir} has adapter_config.json but no adapter_model weights")
    digest = hashlib.sha1()
    for path in weights + [adapter_dir / "adapter_config.json"]:
        digest.update(path.read_bytes())
    out = settings.models_dir / f"{adapter_dir.name}-{digest.hexdigest()[:10]}"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    base = base_checkpoint(adapter_base(adapter_dir), settings)
    logger.info("merging the adapter %s onto %s in %s (once)", adapter_dir, base, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return merge_lora(base, adapter_dir, out)
