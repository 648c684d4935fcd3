"""Merge a LoRA adapter into full-precision base weights and save a standard Hugging Face model folder.

The base is always loaded in full precision (never into 4-bit weights, even after QLoRA), the adapter
is merged and unloaded, and the result is saved with safetensors, the tokenizer (with its chat template),
the generation config and a ``README.md`` model card (base model, data manifest hash, hyper-parameters,
final train/validation loss, taken from ``medqa_run.json`` when present). The folder is written under a
temporary name and renamed into place, so an interrupted merge never leaves a half model behind.

``--ship DIR`` instead exports the adapter itself for committing: its weights in 16 bits (about 10 MB for
SmolLM2-135M at r=16), ``adapter_config.json``, the run record ``medqa_run.json`` (recipe, split manifest
hash, the retrieval settings that built its prompts, losses, and the evaluation figures of ``--reports``)
and a model card. medqa merges such a folder onto its base on first use (``rag_app.llm``).

Example::

    python -m finetune.merge --adapter runs/smollm2-lora                 # -> runs/smollm2-lora/merged
    python -m finetune.merge --adapter runs/smollm2-135m-raft --ship finetune/adapters/smollm2-135m-raft \
        --recipe finetune/recipes/smollm2-135m-raft-cpu.yaml --reports liveqa=storage/reports/liveqa
    python -m finetune.merge --adapter runs/smollm2-lora/checkpoint-400 --output storage/models/medqa-smollm2
    MEDQA_LLM=runs/smollm2-lora/merged python -m rag_app ask "What is glaucoma?"
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from finetune import UserError
from finetune.runs import RUN_SUMMARY
from rag_app.files import atomic_path

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
    ship: str | None = field(default=None, metadata={"help": "Export the adapter (16-bit) with its run record to this folder instead of merging."})
    recipe: str | None = field(default=None, metadata={"help": "With --ship: the recipe file that trained it (recorded; its values are checked)."})
    reports: list[str] = field(default_factory=list, metadata={"help": "With --ship: NAME=REPORT_DIR evaluation reports to record."})


def find_run_summary(adapter_dir: Path) -> dict[str, Any]:
    """``medqa_run.json`` from the adapter folder or its parent (for checkpoints); empty when absent."""
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


#: Figures of an evaluation report shown on a model card, per system (see ``eval/report.py``).
CARD_METRICS = ("rougeL", "citation_accuracy", "abstention", "repetition", "grounding")


def _evaluation_section(evaluation: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, metrics in evaluation.items():
        systems = sorted({k.split("/")[0] for k in metrics if k.count("/") == 1 and not k.startswith(("p/", "retrieval/"))})
        lines += [f"### {name}", "", "| system | " + " | ".join(CARD_METRICS) + " |", "|---|" + "---|" * len(CARD_METRICS)]
        for system in systems:
            cells = [_fmt(metrics.get(f"{system}/{m}")) if metrics.get(f"{system}/{m}") is not None else "–" for m in CARD_METRICS]
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def model_card(summary: dict[str, Any], base_name: str, adapter_dir: Path) -> str:
    """A README.md for a merged model or a shipped adapter (its run record, recipe, data and evaluation figures)."""
    data = summary.get("data", {})
    hp = summary.get("hyperparameters", {})
    rows = "\n".join(f"| {k} | {v} |" for k, v in hp.items())
    counts = data.get("manifest_counts") or {}
    train = data.get("train", {})
    raft = data.get("raft") or {}
    extra = ""
    if summary.get("recipe"):
        extra += f"\n## Recipe\n`{summary['recipe']['path']}`; reproduce with `{' '.join(summary.get('command') or ['python', '-m', 'finetune.train', '--config', summary['recipe']['path']])}`.\n"
    if raft.get("retrieval"):
        settings = ", ".join(f"{k}={v}" for k, v in raft["retrieval"].items() if k != "source_prior")
        extra += f"\n## Retrieval-aware prompts\nBuilt with the project's retriever: {settings}; train examples {raft.get('train', {})}.\n"
    if summary.get("evaluation"):
        extra += "\n## Evaluation (`python -m eval.compare`)\n\n" + _evaluation_section(summary["evaluation"])
    return f"""---
base_model: {base_name}
library_name: transformers
pipeline_tag: text-generation
tags: [medqa, medical, lora, sft, trl]
datasets: [MedQuAD]
---

# medqa fine-tune of {base_name}

A LoRA adapter trained with TRL's `SFTTrainer` on MedQuAD question/answer pairs (with `raft: true`, on the
query engine's own prompts: a question and numbered retrieved sources), merged into the full-precision base
weights by `python -m finetune.merge` or, for an adapter folder, by medqa on first use. Prompts use medqa's
shared chat format (`rag_app.text.prompts`).

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
{extra}"""


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
    from finetune.runs import resolve_base
    from rag_app.config import Settings
    from rag_app.llm.convert import merge_lora

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

    output_dir = Path(output_dir) if output_dir else adapter_dir / "merged"
    merge_lora(resolved.path, adapter_dir, output_dir, dtype, card=model_card(summary, base_name, adapter_dir))
    logger.info("merged %s into %s -> %s", adapter_dir, resolved.name, output_dir)
    return output_dir


def ship_adapter(adapter_dir: str | Path, dest: str | Path, recipe: str | None = None, reports: Sequence[str] = ()) -> Path:
    """Export an adapter for committing: 16-bit weights, config, run record and model card.

    Args:
        adapter_dir: Training output folder (``adapter_config.json``, ``adapter_model.safetensors``, ``medqa_run.json``).
        dest: Destination folder (replaced).
        recipe: The recipe file that trained it, recorded with its values.
        reports: ``NAME=REPORT_DIR`` evaluation reports whose ``metrics.json`` is recorded under ``evaluation``.

    Returns:
        ``dest``.

    Raises:
        UserError: If the adapter, recipe or a report is missing.
    """
    import yaml

    adapter_dir, dest = Path(adapter_dir), Path(dest)
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file() or not (adapter_dir / "adapter_config.json").is_file():
        raise UserError(f"{str(adapter_dir)!r} holds no adapter_model.safetensors/adapter_config.json; point --adapter at a training output")
    summary = find_run_summary(adapter_dir)
    summary.pop("log_history", None)
    summary.pop("merged_dir", None)
    raft = summary.get("data", {}).get("raft")
    if raft is not None and "retrieval" not in raft:  # runs recorded before the retrieval settings were
        from finetune.raft import prompt_settings
        from rag_app.config import Settings

        raft["retrieval"] = prompt_settings(Settings())
    if recipe:
        if not Path(recipe).is_file():
            raise UserError(f"recipe file {recipe!r} does not exist")
        summary["recipe"] = {"path": str(recipe), "values": yaml.safe_load(Path(recipe).read_text(encoding="utf-8"))}
    evaluation = {}
    for spec in reports:
        name, sep, folder = spec.partition("=")
        path = Path(folder) / "metrics.json"
        if not sep or not path.is_file():
            raise UserError(f"--reports {spec!r}: expected NAME=REPORT_DIR with a metrics.json")
        evaluation[name] = json.loads(path.read_text(encoding="utf-8"))
    if evaluation:
        summary["evaluation"] = evaluation
    with atomic_path(dest, directory=True) as tmp:
        _write_shipped(tmp, weights, adapter_dir, summary, dest)
    return dest


def _write_shipped(tmp: Path, weights: Path, adapter_dir: Path, summary: dict[str, Any], dest: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    save_file({k: v.to(torch.float16) for k, v in load_file(weights).items()}, tmp / "adapter_model.safetensors", metadata={"format": "pt"})
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = summary.get("base_model") or config.get("base_model_name_or_path")
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (tmp / "medqa_run.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    (tmp / "README.md").write_text(model_card(summary, summary.get("base_model_name", "base"), dest), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for user mistakes)."""
    from finetune.cli import parse_or_exit, run_cli

    def _run() -> int:
        (args,) = parse_or_exit([MergeArguments], argv, prog="python -m finetune.merge")
        if not args.adapter:
            raise UserError("pass --adapter <training output dir or checkpoint>")
        if args.ship:
            out = ship_adapter(args.adapter, args.ship, args.recipe, args.reports)
            print(f"adapter exported to {out}; use it with MEDQA_LLM={out}")
            return 0
        out = merge_adapter(args.adapter, args.output, args.base, args.storage_dir, args.dtype)
        print(f"merged model saved to {out}; use it with MEDQA_LLM={out}")
        return 0

    return run_cli(_run)


if __name__ == "__main__":
    sys.exit(main())
