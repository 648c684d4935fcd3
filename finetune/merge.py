"""Merge a LoRA adapter into full-precision base weights and save a standard Hugging Face model folder.

The base is always loaded in full precision (never into 4-bit weights, even after QLoRA), the adapter
is merged and unloaded, and the result is saved with safetensors, the tokenizer (with its chat template),
the generation config and a ``README.md`` model card (base model, data manifest hash, hyper-parameters,
final train/validation loss, taken from ``medqa_run.json`` when present). The folder is written under a
temporary name and renamed into place, so an interrupted merge never leaves a half model behind.

Example::

    python -m finetune.merge --adapter runs/smollm2-lora                 # -> runs/smollm2-lora/merged
    python -m finetune.merge --adapter runs/smollm2-lora/checkpoint-400 --output storage/models/medqa-smollm2
    MEDQA_LLM=runs/smollm2-lora/merged python -m rag_app ask "What is glaucoma?"
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from finetune import UserError

logger = logging.getLogger("finetune")


@dataclass
class MergeArguments:
    """Options of ``python -m finetune.merge``.

    Attributes:
        adapter: Folder with ``adapter_config.json`` (a run's output dir or one of its checkpoints).
        output: Merged model folder; defaults to ``<adapter>/merged``.
        base: Base model (anything ``MEDQA_LLM`` accepts); defaults to the one recorded with the adapter.
        storage_dir: Storage folder for GGUF conversions; defaults to ``MEDQA_STORAGE_DIR``.
        dtype: Dtype of the saved weights: ``float32`` (default), ``bfloat16`` or ``float16``.
    """

    adapter: str = field(default="", metadata={"help": "Adapter folder (run output dir or checkpoint)."})
    output: str | None = field(default=None, metadata={"help": "Merged model folder; default <adapter>/merged."})
    base: str | None = field(default=None, metadata={"help": "Base model; default: recorded with the adapter."})
    storage_dir: str | None = field(default=None, metadata={"help": "Storage folder; default MEDQA_STORAGE_DIR."})
    dtype: str = field(default="float32", metadata={"help": "Saved dtype: float32, bfloat16 or float16."})


def find_run_summary(adapter_dir: Path) -> dict[str, Any]:
    """``medqa_run.json`` from the adapter folder or its parent (for checkpoints); empty when absent."""
    from finetune.train import RUN_SUMMARY

    for folder in (adapter_dir, adapter_dir.parent):
        path = folder / RUN_SUMMARY
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                logger.warning("ignoring unreadable %s", path)
    return {}


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


def model_card(summary: dict[str, Any], base_name: str, adapter_dir: Path) -> str:
    """A README.md for the merged model."""
    data = summary.get("data", {})
    hp = summary.get("hyperparameters", {})
    rows = "\n".join(f"| {k} | {v} |" for k, v in hp.items())
    counts = data.get("manifest_counts") or {}
    train = data.get("train", {})
    return f"""---
base_model: {base_name}
library_name: transformers
pipeline_tag: text-generation
tags: [medqa, medical, lora, sft, trl]
datasets: [MedQuAD]
---

# medqa fine-tune of {base_name}

A LoRA adapter trained with TRL's `SFTTrainer` on MedQuAD question/answer pairs and merged into the
full-precision base weights. Prompts use medqa's shared chat format (`rag_app.prompts.build_messages`).

Use it as the medqa LLM: `MEDQA_LLM={{this folder}} python -m rag_app ask "What is glaucoma?"`

**Not medical advice.** Answers are general information and may be wrong.

## Base model
- Name: `{summary.get("base_model", base_name)}` ({summary.get("base_model_name", base_name)})
- Base weights during training: {summary.get("precision", "n/a")} on {summary.get("device", "n/a")}; merged in float32

## Data
- Source: {", ".join(map(str, data.get("source") or [])) or "n/a"} (NIH MedQuAD, CC BY 4.0)
- Splits manifest hash: `{data.get("manifest_hash", "n/a")}` (train/val/test = {counts.get("train", "?")}/{counts.get("val", "?")}/{counts.get("test", "?")}; grouped by focus, duplicate questions removed)
- Training examples used: {train.get("examples", "n/a")} ({train.get("answer_tokens", "n/a")} answer tokens; {train.get("truncated", "n/a")} answers truncated at max_length)

## Hyper-parameters
| name | value |
|---|---|
{rows}

## Results
- Steps: {summary.get("global_step", "n/a")}
- Final train loss: {_fmt(summary.get("train_loss"))}
- Validation loss: {_fmt(summary.get("eval_loss_before"))} before → {_fmt(summary.get("eval_loss_after"))} after
- Wall time: {summary.get("wall_time_s", "n/a")} s

Adapter: `{adapter_dir}`
"""


def merge_adapter(
    adapter_dir: str | Path,
    output_dir: str | Path | None = None,
    base: str | None = None,
    storage_dir: str | Path | None = None,
    dtype: str = "float32",
) -> Path:
    """Merge ``adapter_dir`` into its base model and save the result.

    Args:
        adapter_dir: Folder with ``adapter_config.json`` and adapter weights.
        output_dir: Destination; defaults to ``<adapter_dir>/merged``. Replaced atomically if it exists.
        base: Base model override; by default the model recorded in ``medqa_run.json`` or the adapter config.
        storage_dir: Storage folder used to resolve hub ids / GGUF files.
        dtype: Dtype of the saved weights (merging itself is done in float32).

    Returns:
        The merged model folder.

    Raises:
        UserError: If the adapter or base model can't be found.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from finetune.train import resolve_base
    from rag_app.config import Settings

    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise UserError(f"{str(adapter_dir)!r} holds no adapter_config.json; point --adapter at a training output or checkpoint")
    if dtype not in {"float32", "bfloat16", "float16"}:
        raise UserError(f"dtype={dtype!r}: use float32, bfloat16 or float16")
    summary = find_run_summary(adapter_dir)
    storage = Path(storage_dir) if storage_dir else Settings().storage_dir
    recorded_path = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    candidates = [base] if base else [summary.get("base_model_path"), summary.get("base_model"), recorded_path]
    candidates = [c for c in candidates if c]
    if not candidates:
        raise UserError("the adapter does not record its base model; pass --base")
    resolved, error = None, None
    for name in candidates:
        try:
            resolved = resolve_base(name, storage)
            break
        except UserError as err:
            error = err
    if resolved is None:
        raise error  # type: ignore[misc]
    base_name = summary.get("base_model") or resolved.name

    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model = model.to(getattr(torch, dtype))
    tok_dir = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else resolved.path
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    try:
        generation_config = GenerationConfig.from_pretrained(resolved.path)
    except OSError:
        generation_config = GenerationConfig.from_model_config(model.config)
    if tokenizer.eos_token_id is not None and generation_config.eos_token_id is None:
        generation_config.eos_token_id = tokenizer.eos_token_id
    if generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.generation_config = generation_config
    model.config.name_or_path = f"medqa-{resolved.name}"

    output_dir = Path(output_dir) if output_dir else adapter_dir / "merged"
    tmp = output_dir.with_name(output_dir.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if not (tmp / "chat_template.jinja").is_file() and tokenizer.chat_template and "chat_template" not in json.loads(
        (tmp / "tokenizer_config.json").read_text(encoding="utf-8")
    ):
        (tmp / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
    (tmp / "README.md").write_text(model_card(summary, base_name, adapter_dir), encoding="utf-8")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    tmp.rename(output_dir)
    logger.info("merged %s into %s -> %s", adapter_dir, resolved.name, output_dir)
    return output_dir


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for user mistakes)."""
    from finetune.cli import parse_or_exit, run_cli

    def _run() -> int:
        (args,) = parse_or_exit([MergeArguments], argv, prog="python -m finetune.merge")
        if not args.adapter:
            raise UserError("pass --adapter <training output dir or checkpoint>")
        out = merge_adapter(args.adapter, args.output, args.base, args.storage_dir, args.dtype)
        print(f"merged model saved to {out}; use it with MEDQA_LLM={out}")
        return 0

    return run_cli(_run)


if __name__ == "__main__":
    sys.exit(main())
