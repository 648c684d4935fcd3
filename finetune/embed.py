"""Fine-tune the retrieval embedder (all-MiniLM-L6-v2 by default) on the MedQuAD training split.

    python -m finetune.embed --config finetune/recipes/minilm-medquad-cpu.yaml
    python -m finetune.embed --config finetune/recipes/minilm-medquad-cpu.yaml --output_dir runs/emb --max_steps 50
    MEDQA_EMBED_MODEL=runs/minilm-medquad python -m rag_app.index --rebuild --storage-dir storage-ft

Recipes are YAML files whose keys are fields of sentence-transformers' ``SentenceTransformerTrainingArguments``
(``learning_rate``, ``per_device_train_batch_size``, ``max_steps``, ``batch_sampler``, ...) or of
:class:`EmbedDataArguments`; any key can be overridden with a flag of the same name.

Training pairs come only from ``<storage>/splits/train.jsonl`` (written by ``python -m finetune.data``; built
here from the corpus when missing): anchor = the MedQuAD question, positive = its QA pair exactly as the index
stores it (``"Question: q\\nAnswer: a"``), hard negative = another QA pair of the same focus (topic). The loss is
``MultipleNegativesRankingLoss`` (InfoNCE over the positive, the hard negatives and every other text in the batch)
with the ``NO_DUPLICATES`` batch sampler, so no text appears twice in a batch (a twin would be a false negative).
Validation: MRR@10 of each validation question against the validation QA pairs, before and after training.
LiveQA (the retrieval benchmark's questions) is never used here.

Output ``output_dir``: a sentence-transformers model (``save_pretrained``) with a model card (``README.md``)
and ``medqa_embed_run.json``; use it with ``MEDQA_EMBED_MODEL=<output_dir>`` (the index must be rebuilt with it).
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from finetune import UserError
from finetune.data import SplitArguments, normalize_focus, sample_rows
from rag_app.files import write_json_atomic

logger = logging.getLogger("finetune")

RUN_SUMMARY = "medqa_embed_run.json"
NO_DUPLICATE_SAMPLERS = {"no_duplicates", "no_duplicates_hashed"}


@dataclass
class EmbedDataArguments(SplitArguments):
    """Model and data options that ``SentenceTransformerTrainingArguments`` doesn't cover.

    Attributes:
        model_name_or_path: Base embedder: anything ``MEDQA_EMBED_MODEL`` accepts (the default name maps to the
            bundled offline copy of all-MiniLM-L6-v2).
        max_seq_length: Token budget of each text while training (questions are short; QA pairs are cut).
        save_max_seq_length: ``max_seq_length`` written with the model; default: the base model's, so indexing
            embeds as much of each chunk as the base model did.
        hard_negatives: Add one same-focus QA pair per example as a hard negative.
        max_train_samples: Use at most this many training examples (a seeded sample); all when unset.
        max_eval_samples: Use at most this many validation examples for the MRR evaluation; all when unset.
        eval_mrr: Measure validation MRR@10 before and after training.
        loss_scale: Inverse temperature of ``MultipleNegativesRankingLoss``.
    """

    model_name_or_path: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "Base embedding model (name or local path)."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Token budget per text while training."})
    save_max_seq_length: int | None = field(default=None, metadata={"help": "max_seq_length saved with the model; default: the base model's."})
    hard_negatives: bool = field(default=True, metadata={"help": "Add a same-focus QA pair as a hard negative."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on validation examples for MRR."})
    eval_mrr: bool = field(default=True, metadata={"help": "Validation MRR@10 before and after training."})
    loss_scale: float = field(default=20.0, metadata={"help": "Scale (inverse temperature) of the ranking loss."})


def parse_args(argv: Sequence[str] | None = None) -> tuple[Any, EmbedDataArguments]:
    """Parse a recipe and flags into ``(SentenceTransformerTrainingArguments, EmbedDataArguments)``.

    Raises:
        UserError: On unknown keys, bad values, or a missing recipe file.
    """
    from sentence_transformers import SentenceTransformerTrainingArguments

    from finetune.cli import parse_or_exit

    training_args, data_args = parse_or_exit(
        [SentenceTransformerTrainingArguments, EmbedDataArguments], argv, prog="python -m finetune.embed"
    )
    if data_args.max_seq_length < 8:
        raise UserError(f"max_seq_length={data_args.max_seq_length} is too small; use e.g. --max_seq_length 128")
    if training_args.per_device_train_batch_size < 2:
        raise UserError("per_device_train_batch_size must be at least 2: the loss uses the other examples of a batch as negatives")
    return training_args, data_args


# ---- data ---------------------------------------------------------------------------------------------------


def pair_text(row: dict[str, Any]) -> str:
    """A QA pair as the index stores it (see :mod:`corpus.medquad`)."""
    return f"Question: {row['question']}\nAnswer: {row['answer']}"


def build_examples(rows: Sequence[dict[str, Any]], hard_negatives: bool = True, seed: int = 42) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Training columns ``anchor``/``positive`` (and ``negative``) from split rows.

    The hard negative of a row is another QA pair with the same normalised focus and a different answer, drawn
    with a seeded generator; a row whose focus has no such pair gets a QA pair of another focus instead (counted
    as ``random_negatives``).

    Returns:
        ``(columns, stats)`` with stats ``examples``, ``focus_negatives`` and ``random_negatives``.

    Raises:
        UserError: If there are fewer than two rows (the loss needs in-batch negatives).
    """
    if len(rows) < 2:
        raise UserError(f"the training split has {len(rows)} example(s); at least 2 are needed")
    rng = random.Random(seed)
    columns: dict[str, list[str]] = {"anchor": [r["question"] for r in rows], "positive": [pair_text(r) for r in rows]}
    stats = {"examples": len(rows), "focus_negatives": 0, "random_negatives": 0}
    if not hard_negatives:
        return columns, stats
    by_focus: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        key = normalize_focus(str(row.get("focus") or ""))
        if key:
            by_focus.setdefault(key, []).append(i)
    focus_of = [normalize_focus(str(r.get("focus") or "")) for r in rows]
    negatives: list[str] = []
    for i, row in enumerate(rows):
        answer = row["answer"].strip()
        candidates = [j for j in by_focus.get(focus_of[i], []) if j != i and rows[j]["answer"].strip() != answer]
        if candidates:
            choice = rng.choice(candidates)
            stats["focus_negatives"] += 1
        else:  # no other pair on this topic: a random pair of another topic (rejection sampling, bounded)
            choice = next(
                (j for j in (rng.randrange(len(rows)) for _ in range(100))
                 if j != i and (focus_of[j] != focus_of[i] or not focus_of[i]) and rows[j]["answer"].strip() != answer),
                (i + 1) % len(rows),
            )
            stats["random_negatives"] += 1
        negatives.append(pair_text(rows[choice]))
    columns["negative"] = negatives
    return columns, stats



def load_split_rows(data_args: EmbedDataArguments, show_progress: bool = True) -> tuple[Path, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """``(split_dir, manifest, train rows, validation rows)``; splits are built from the corpus only when missing.

    Raises:
        DataError: If a split file is malformed, or the splits are missing and the corpus can't be read.
    """
    from finetune.data import prepare_splits, read_manifest, read_split, resolve_dirs

    _, _, split_dir = resolve_dirs(data_args)
    if (split_dir / "train.jsonl").is_file():
        manifest = read_manifest(split_dir) or {}
    else:
        split_dir, manifest = prepare_splits(data_args, show_progress=show_progress)
    train = read_split(split_dir / "train.jsonl")
    val_path = split_dir / "val.jsonl"
    val = read_split(val_path) if val_path.is_file() and val_path.stat().st_size else []
    return split_dir, manifest, train, val


# ---- evaluation -----------------------------------------------------------------------------------------------


def validation_mrr(model: Any, rows: Sequence[dict[str, Any]], k: int = 10, batch_size: int = 64, show_progress: bool = True) -> dict[str, float]:
    """MRR@k and hit@1 of each validation question against all validation QA pairs (its own pair is relevant).

    Returns:
        ``{"mrr@10": ..., "hit@1": ..., "n": ...}``; empty when there are fewer than two rows.
    """
    import torch

    if len(rows) < 2:
        return {}
    questions = model.encode([r["question"] for r in rows], batch_size=batch_size, convert_to_tensor=True,
                             normalize_embeddings=True, show_progress_bar=show_progress)
    docs = model.encode([pair_text(r) for r in rows], batch_size=batch_size, convert_to_tensor=True,
                        normalize_embeddings=True, show_progress_bar=show_progress)
    scores = questions @ docs.T
    gold = scores.diagonal().unsqueeze(1)
    ranks = (scores > gold).sum(dim=1) + 1  # ties count in the gold pair's favour
    rr = torch.where(ranks <= k, 1.0 / ranks.float(), torch.zeros_like(ranks, dtype=torch.float))
    return {f"mrr@{k}": float(rr.mean()), "hit@1": float((ranks == 1).float().mean()), "n": len(rows)}


# ---- model card -------------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(summary: dict[str, Any]) -> str:
    """The ``README.md`` of a fine-tuned embedder: data, loss, steps, evaluation and usage."""
    hp = summary["hyperparameters"]
    data = summary["data"]
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags: [sentence-transformers, medqa, medquad, retrieval]",
        "license: apache-2.0",
        "---",
        "",
        f"# {Path(summary['output_dir']).name}: {summary['base_model_name']} fine-tuned for MedQuAD retrieval",
        "",
        f"Base model: `{summary['base_model']}` (weights from `{summary['base_model_path']}`). "
        "Fine-tuned by `python -m finetune.embed` (project medqa) for question → QA-pair retrieval.",
        "",
        "## Data",
        "",
        f"- MedQuAD training split only: `{data['splits_dir']}/train.jsonl` (manifest hash `{data.get('manifest_hash') or 'n/a'}`, "
        f"source {data.get('source') or 'n/a'}). Splits are grouped by focus (topic), so validation/test topics never appear here.",
        f"- {data['train_examples']} training examples: anchor = question, positive = `\"Question: q\\nAnswer: a\"` "
        "(the text the index stores).",
        f"- Hard negatives: {data['focus_negatives']} from another QA pair of the same focus, "
        f"{data['random_negatives']} from another focus (no other pair of that focus)."
        if hp["hard_negatives"] else "- No hard negatives (in-batch negatives only).",
        "- TREC LiveQA questions (the retrieval benchmark) were not used.",
        "",
        "## Training",
        "",
        f"- Loss: `MultipleNegativesRankingLoss` (scale {hp['loss_scale']}): in-batch negatives"
        + (" plus one same-focus hard negative per example" if hp["hard_negatives"] else "")
        + f"; batch sampler `{hp['batch_sampler']}`.",
        f"- Steps: {summary['global_step']} optimizer steps ({_fmt(summary.get('epochs'))} epochs), batch size "
        f"{hp['per_device_train_batch_size']} × {hp['gradient_accumulation_steps']} accumulation, learning rate {hp['learning_rate']} "
        f"({hp['lr_scheduler_type']}, warmup {hp['warmup_steps']}), max_seq_length {hp['max_seq_length']} while training "
        f"(saved with {summary['saved_max_seq_length']}), seed {hp['seed']}.",
        f"- Final training loss {_fmt(summary.get('train_loss'))} (mean {_fmt(summary.get('train_loss_mean'))}); "
        f"{_fmt(summary.get('train_runtime_s'))} s training on {summary['device']}, {_fmt(summary.get('wall_time_s'))} s in all.",
        "",
        "## Evaluation",
        "",
    ]
    if before or after:
        lines += [
            f"Validation split ({after.get('n') or before.get('n')} questions): each question ranks all validation QA pairs "
            f"(embedded with max_seq_length {summary['saved_max_seq_length']}, as the index embeds them); its own pair is relevant.",
            "",
            "| model | MRR@10 | hit@1 |",
            "|---|---|---|",
            f"| base | {_fmt(before.get('mrr@10'))} | {_fmt(before.get('hit@1'))} |",
            f"| fine-tuned | {_fmt(after.get('mrr@10'))} | {_fmt(after.get('hit@1'))} |",
        ]
    else:
        lines.append("Not evaluated (`eval_mrr: false` or no validation split).")
    lines += [
        "",
        "## Usage",
        "",
        "```bash",
        f"MEDQA_EMBED_MODEL={summary['output_dir']} python -m rag_app.index --rebuild   # the index must be re-embedded",
        f"MEDQA_EMBED_MODEL={summary['output_dir']} python -m rag_app ask \"What is glaucoma?\"",
        "```",
        "",
        "Or directly: `SentenceTransformer(\"<this folder>\")`.",
        "",
    ]
    return "\n".join(lines)


# ---- main -------------------------------------------------------------------------------------------------------


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Fine-tune as configured by ``argv``; the body of :func:`main`.

    Returns:
        The run summary written to ``<output_dir>/medqa_embed_run.json``.

    Raises:
        UserError: For recipe, model or data mistakes.
    """
    training_args, data_args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from transformers import set_seed

    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers < 5.4
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    from rag_app.llm.resolve import resolve_embed_model

    started = time.time()
    device = "cuda" if torch.cuda.is_available() and not training_args.use_cpu else "cpu"
    if device == "cpu" and (training_args.bf16 or training_args.fp16):
        training_args.bf16 = training_args.fp16 = False
    sampler = str(getattr(training_args.batch_sampler, "value", training_args.batch_sampler))
    if sampler not in NO_DUPLICATE_SAMPLERS:
        logger.warning("batch_sampler=%s: duplicate texts in a batch become false negatives; use no_duplicates", sampler)
    if str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) != "no":
        logger.warning("eval_strategy is ignored: validation is MRR@10 before and after training (eval_mrr)")
        training_args.eval_strategy = "no"
    output_dir = Path(training_args.output_dir)
    show = not training_args.disable_tqdm

    split_dir, manifest, train_rows, val_rows = load_split_rows(data_args, show_progress=show)
    train_rows = sample_rows(train_rows, data_args.max_train_samples, training_args.seed)
    val_rows = sample_rows(val_rows, data_args.max_eval_samples, training_args.seed)
    columns, data_stats = build_examples(train_rows, data_args.hard_negatives, training_args.seed)
    train_ds = Dataset.from_dict(columns)
    logger.info(
        "data: %d training examples (%d same-focus / %d other-focus hard negatives), %d validation questions",
        data_stats["examples"], data_stats["focus_negatives"], data_stats["random_negatives"], len(val_rows),
    )

    base_path = resolve_embed_model(data_args.model_name_or_path)
    set_seed(training_args.seed)
    try:
        model = SentenceTransformer(base_path, device=device)
    except (OSError, ValueError) as err:
        raise UserError(f"embedding model {data_args.model_name_or_path!r} could not be loaded: {str(err).splitlines()[0]}") from None
    saved_max_len = data_args.save_max_seq_length or model.max_seq_length

    # Validation embeds with the saved budget: the model is measured as the index will use it.
    eval_before = validation_mrr(model, val_rows, show_progress=show) if data_args.eval_mrr else {}
    if eval_before:
        logger.info("validation before training: MRR@10 %.4f, hit@1 %.4f (%d questions)", eval_before["mrr@10"], eval_before["hit@1"], eval_before["n"])

    model.max_seq_length = data_args.max_seq_length
    loss = MultipleNegativesRankingLoss(model, scale=data_args.loss_scale)
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=train_ds, loss=loss)
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    model.max_seq_length = saved_max_len
    eval_after = validation_mrr(model, val_rows, show_progress=show) if data_args.eval_mrr else {}
    if eval_after:
        logger.info("validation after training: MRR@10 %.4f, hit@1 %.4f", eval_after["mrr@10"], eval_after["hit@1"])

    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    summary: dict[str, Any] = {
        "base_model": data_args.model_name_or_path,
        "base_model_name": Path(data_args.model_name_or_path).name,
        "base_model_path": str(base_path),
        "output_dir": str(output_dir),
        "device": device,
        "data": {
            "splits_dir": str(split_dir),
            "manifest_hash": manifest.get("content_hash"),
            "manifest_counts": manifest.get("counts"),
            "source": manifest.get("source"),
            "train_examples": data_stats["examples"],
            "focus_negatives": data_stats["focus_negatives"],
            "random_negatives": data_stats["random_negatives"],
            "val_examples": len(val_rows),
        },
        "hyperparameters": {
            "loss": "MultipleNegativesRankingLoss",
            "loss_scale": data_args.loss_scale,
            "hard_negatives": data_args.hard_negatives,
            "batch_sampler": sampler,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
            "learning_rate": training_args.learning_rate,
            "lr_scheduler_type": str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)),
            "warmup_steps": training_args.warmup_steps,  # a float below 1 is a share of the steps
            "weight_decay": training_args.weight_decay,
            "num_train_epochs": training_args.num_train_epochs,
            "max_steps": training_args.max_steps,
            "max_seq_length": data_args.max_seq_length,
            "max_train_samples": data_args.max_train_samples,
            "max_eval_samples": data_args.max_eval_samples,
            "seed": training_args.seed,
        },
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_loss": losses[-1] if losses else None,
        "train_loss_mean": result.training_loss,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "eval_before": eval_before,
        "eval_after": eval_after,
        "saved_max_seq_length": saved_max_len,
        "wall_time_s": None,
        "log_history": history,
    }
    if trainer.is_world_process_zero():
        model.save_pretrained(str(output_dir), create_model_card=False)
        summary["wall_time_s"] = round(time.time() - started, 1)
        (output_dir / "README.md").write_text(model_card(summary), encoding="utf-8")
        write_json_atomic(output_dir / RUN_SUMMARY, summary, sort_keys=True)
        logger.info(
            "done in %.0fs: %d steps, train loss %s, validation MRR@10 %s -> %s; model in %s (use MEDQA_EMBED_MODEL=%s)",
            summary["wall_time_s"], summary["global_step"], _fmt(summary["train_loss"]), _fmt(eval_before.get("mrr@10")),
            _fmt(eval_after.get("mrr@10")), output_dir, output_dir,
        )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for user mistakes)."""
    from finetune.cli import run_cli

    return run_cli(lambda: (run(argv), 0)[1])


if __name__ == "__main__":
    sys.exit(main())
