"""Supervised LoRA/QLoRA fine-tuning on the leakage-free MedQuAD splits, then merge into a plain HF model.

Recipes are TRL-style YAML files; any key can be overridden with a flag of the same name (TRL's
``SFTConfig``/``ModelConfig`` names, plus :class:`TrainDataArguments`)::

    python -m finetune.train --config finetune/recipes/smollm2-135m-lora-cpu.yaml
    python -m finetune.train --config finetune/recipes/qwen2.5-0.5b-qlora.yaml --output_dir runs/qwen --max_steps 500
    python -m finetune.train --config finetune/recipes/smollm2-135m-lora-cpu.yaml --resume   # continue a run
    accelerate launch --num_processes 2 -m finetune.train --config finetune/recipes/qwen2.5-0.5b-qlora.yaml

The base model is anything ``MEDQA_LLM`` accepts (hub id, local HF directory, ``.gguf`` file, or
``bundled:smollm2-135m-instruct``). Training examples are the shared chat prompt
(:func:`rag_app.text.prompts.build_messages`) plus the reference answer as the assistant turn; the loss covers
only the assistant tokens (answer and end-of-turn). Batches are packed best-fit-decreasing and fed
padding-free (``position_ids`` restart per example, so examples never attend to each other), so no
compute goes to pad tokens. On CUDA the base is loaded in 4-bit NF4 (double quant, bf16 compute) when the
recipe says ``load_in_4bit``; on CPU the adapters train on fp32 weights.

Outputs in ``output_dir``: ``checkpoint-*`` folders, the final adapter, ``medqa_run.json`` (losses,
hyper-parameters, data manifest) and ``merged/`` (usable as ``MEDQA_LLM=<output_dir>/merged``).
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from finetune import UserError
from finetune.arguments import RaftArguments, TrainDataArguments, parse_args  # noqa: F401 (the CLI's options)
from finetune.data import sample_rows, select_rows  # noqa: F401
from finetune.runs import RUN_SUMMARY, resolve_base
from rag_app.files import write_json_atomic

logger = logging.getLogger("finetune")

_SENTINEL = "\u2063MEDQA_ANSWER\u2063"


# ---- tokenisation -------------------------------------------------------------------------------------------


class ChatEncoder:
    """Tokenises (question, answer) pairs with the shared prompt and the model's chat template.

    ``input_ids`` = chat-template prompt (system + user + assistant header) + answer + end-of-turn suffix;
    ``labels`` are ``-100`` on the prompt, so the loss covers only the assistant's tokens. Answers that don't
    fit ``max_length`` are cut at the token budget, keeping the end-of-turn suffix.

    Args:
        tokenizer: A tokenizer with a chat template.
        max_length: Token budget of a whole example.
        min_answer_tokens: Examples whose prompt leaves fewer answer tokens are dropped.

    Raises:
        UserError: If the tokenizer has no chat template, or ``max_length`` can't hold even the fixed prompt.
    """

    def __init__(self, tokenizer: Any, max_length: int, min_answer_tokens: int = 16) -> None:
        from rag_app.text.prompts import build_messages

        if not getattr(tokenizer, "chat_template", None):
            raise UserError("the base model's tokenizer has no chat template; use an instruct/chat model or set chat_template_path")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.min_answer_tokens = min_answer_tokens
        prompt = self.prompt_text("")
        full = tokenizer.apply_chat_template(
            build_messages("") + [{"role": "assistant", "content": _SENTINEL}], tokenize=False
        )
        if not full.startswith(prompt) or _SENTINEL not in full:
            raise UserError("the chat template renders the prompt differently with and without the answer; can't mask the prompt")
        before, _, after = full[len(prompt):].partition(_SENTINEL)
        self.answer_prefix = before
        self.suffix_ids = self._encode(after)
        self.fixed_prompt_tokens = len(self._encode(prompt + before))
        needed = self.fixed_prompt_tokens + len(self.suffix_ids) + min_answer_tokens
        if needed > max_length:
            raise UserError(
                f"max_length={max_length} is smaller than the prompt: the system prompt and chat template alone take "
                f"{self.fixed_prompt_tokens} tokens (+{len(self.suffix_ids)} end-of-turn, +{min_answer_tokens} answer); "
                f"use --max_length {needed + 64} or more"
            )

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_text(self, question: str | list[dict[str, str]]) -> str:
        """The rendered inference prompt for a question or ready chat messages (with the assistant header)."""
        from rag_app.text.prompts import build_messages

        messages = build_messages(question) if isinstance(question, str) else question
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode_many(
        self, questions: Sequence[str | list[dict[str, str]]], answers: Sequence[str]
    ) -> tuple[list[dict[str, list[int]]], dict[str, int]]:
        """Tokenise pairs in one batch.

        Args:
            questions: Questions (the no-RAG prompt) or ready chat messages (retrieval-aware prompts).
            answers: Assistant targets.

        Returns:
            ``(examples, stats)``: ``{"input_ids", "labels"}`` dicts and counts of ``truncated`` and
            ``dropped_long_prompt`` examples.
        """
        prompts = [self.prompt_text(q) + self.answer_prefix for q in questions]
        prompt_ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        answer_ids = self.tokenizer([a.strip() for a in answers], add_special_tokens=False)["input_ids"]
        examples: list[dict[str, list[int]]] = []
        stats = {"truncated": 0, "dropped_long_prompt": 0}
        suffix = self.suffix_ids
        for p_ids, a_ids in zip(prompt_ids, answer_ids):
            budget = self.max_length - len(p_ids) - len(suffix)
            if budget < self.min_answer_tokens:
                stats["dropped_long_prompt"] += 1
                continue
            if len(a_ids) > budget:
                a_ids = a_ids[:budget]
                stats["truncated"] += 1
            completion = list(a_ids) + suffix
            examples.append({"input_ids": list(p_ids) + completion, "labels": [-100] * len(p_ids) + completion})
        return examples, stats



def build_datasets(
    tokenizer: Any,
    split_dir: Path,
    max_length: int,
    data_args: TrainDataArguments,
    seed: int,
    verbose: bool = True,
    raft_examples: dict[str, list[Any]] | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenised train/validation ``datasets.Dataset``s (``input_ids``, ``labels``) and data statistics.

    Args:
        raft_examples: Retrieval-aware examples per split (:func:`finetune.raft.load_or_build`); when given,
            they replace the bare question -> answer pairs.

    Raises:
        DataError: If a split file is missing, empty or malformed.
        UserError: If ``max_length`` can't hold the prompts.
    """
    from datasets import Dataset

    from finetune.data import read_split

    encoder = ChatEncoder(tokenizer, max_length, data_args.min_answer_tokens)
    stats: dict[str, Any] = {"fixed_prompt_tokens": encoder.fixed_prompt_tokens}
    out = []
    for name, limit in (("train", data_args.max_train_samples), ("val", data_args.max_eval_samples)):
        if raft_examples is not None:
            rows = raft_examples[name]
            examples, counts = encoder.encode_many([e.messages for e in rows], [e.answer for e in rows])
        else:
            rows = sample_rows(read_split(split_dir / f"{name}.jsonl"), limit, seed)
            examples, counts = encoder.encode_many([r["question"] for r in rows], [r["answer"] for r in rows])
        if not examples:
            raise UserError(
                f"max_length={max_length} is smaller than every prompt in {name}.jsonl "
                f"(all {len(rows)} examples would leave < {data_args.min_answer_tokens} answer tokens)"
            )
        real = sum(len(e["input_ids"]) for e in examples)
        trained = sum(sum(1 for t in e["labels"] if t != -100) for e in examples)
        stats[name] = {"examples": len(examples), "tokens": real, "answer_tokens": trained, **counts}
        if verbose and (counts["truncated"] or counts["dropped_long_prompt"]):
            logger.warning(
                "%s: %d of %d answers truncated at max_length=%d; %d examples dropped because the prompt alone leaves "
                "< %d answer tokens", name, counts["truncated"], len(rows), max_length, counts["dropped_long_prompt"],
                data_args.min_answer_tokens,
            )
        out.append(Dataset.from_dict({"input_ids": [e["input_ids"] for e in examples], "labels": [e["labels"] for e in examples]}))
    return out[0], out[1], stats


# ---- model ---------------------------------------------------------------------------------------------------


def _bnb_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def load_base_model(path: Path, model_args: Any, training_args: Any, device: str) -> tuple[Any, str]:
    """Load the base model: 4-bit NF4 (QLoRA) when asked and possible, else full precision.

    Returns:
        ``(model, precision)`` where precision is ``"nf4"``, ``"bf16"`` or ``"fp32"``.
    """
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"attn_implementation": model_args.attn_implementation or "sdpa"}
    precision = "fp32"
    want_4bit = bool(model_args.load_in_4bit or model_args.load_in_8bit)
    if want_4bit and not _bnb_available():
        if device == "cuda":
            raise UserError("load_in_4bit needs bitsandbytes: pip install 'medqa[gpu]' (or pass --load_in_4bit false)")
        logger.warning("bitsandbytes is not installed: training LoRA on full-precision CPU weights instead of 4-bit")
        want_4bit = False
    if want_4bit:
        from trl import get_quantization_config

        compute = torch.bfloat16 if device == "cuda" else torch.float32
        if model_args.dtype in (None, "auto"):
            model_args.dtype = compute
        if model_args.bnb_4bit_quant_storage is None:
            model_args.bnb_4bit_quant_storage = compute
        kwargs["quantization_config"] = get_quantization_config(model_args)  # TRL's own NF4/int8 config
        kwargs["dtype"] = compute
        if device == "cuda":
            from accelerate import PartialState

            kwargs["device_map"] = {"": PartialState().local_process_index}
        precision = "nf4" if model_args.load_in_4bit else "int8"
    elif device == "cuda" and training_args.bf16:
        kwargs["dtype"] = torch.bfloat16
        precision = "bf16"
    else:
        kwargs["dtype"] = torch.float32
    return AutoModelForCausalLM.from_pretrained(path, **kwargs), precision


# ---- checkpoints ---------------------------------------------------------------------------------------------

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def is_complete_checkpoint(path: Path) -> bool:
    """True when a checkpoint folder was fully written (the trainer state is written last)."""
    return (path / "trainer_state.json").is_file() and any(
        (path / name).is_file() for name in ("adapter_model.safetensors", "model.safetensors", "adapter_model.bin")
    )


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The highest-step complete ``checkpoint-N`` folder; half-written ones (a crash mid-save) are skipped."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = sorted(
        ((int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))),
        reverse=True,
    )
    for step, path in found:
        if is_complete_checkpoint(path):
            return path
        logger.warning("ignoring incomplete checkpoint %s (interrupted while saving)", path)
    return None


# ---- summary ---------------------------------------------------------------------------------------------------


def _last(history: list[dict[str, Any]], key: str) -> float | None:
    values = [h[key] for h in history if key in h]
    return values[-1] if values else None


def hyperparameters(training_args: Any, model_args: Any, data_args: TrainDataArguments) -> dict[str, Any]:
    """The settings that define a run, for ``medqa_run.json`` and the model card."""
    return {
        "lora_r": model_args.lora_r,
        "lora_alpha": model_args.lora_alpha,
        "lora_dropout": model_args.lora_dropout,
        "lora_target_modules": model_args.lora_target_modules,
        "learning_rate": training_args.learning_rate,
        "lr_scheduler_type": str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)),
        "warmup_steps": training_args.warmup_steps,
        "num_train_epochs": training_args.num_train_epochs,
        "max_steps": training_args.max_steps,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "max_length": training_args.max_length,
        "packing": training_args.packing,
        "packing_strategy": training_args.packing_strategy,
        "padding_free": training_args.padding_free,
        "weight_decay": training_args.weight_decay,
        "seed": training_args.seed,
        "max_train_samples": data_args.max_train_samples,
        "max_eval_samples": data_args.max_eval_samples,
        **({f: getattr(data_args, f) for f in RaftArguments.__dataclass_fields__} if data_args.raft else {"raft": False}),
    }


# ---- main ------------------------------------------------------------------------------------------------------


def run(argv: Sequence[str] | None = None, callbacks: Sequence[Any] | None = None) -> dict[str, Any]:
    """Train (and merge) as configured by ``argv``; the body of :func:`main`.

    Args:
        argv: Command-line arguments (``--config recipe.yaml --key value ...``); ``sys.argv[1:]`` when None.
        callbacks: Extra ``transformers.TrainerCallback``s (tests use them to interrupt a run).

    Returns:
        The run summary written to ``<output_dir>/medqa_run.json``.

    Raises:
        UserError: For recipe, model or data mistakes.
    """
    training_args, model_args, data_args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

    import torch
    from accelerate import PartialState
    from transformers import AutoTokenizer, set_seed
    from trl import SFTTrainer, get_peft_config

    from finetune.data import prepare_splits, resolve_dirs

    started = time.time()
    state = PartialState()
    device = "cuda" if torch.cuda.is_available() and not training_args.use_cpu else "cpu"
    if device == "cpu" and (training_args.bf16 or training_args.fp16):
        # TRL defaults to bf16; on CPU the adapters train on fp32 weights.
        training_args.bf16 = False
        training_args.fp16 = False
    _, storage_dir, _ = resolve_dirs(data_args)
    output_dir = Path(training_args.output_dir)

    with state.main_process_first():  # rank 0 builds/validates splits and converts a GGUF once
        split_dir, manifest = prepare_splits(data_args, show_progress=state.is_main_process)
        resolved = resolve_base(model_args.model_name_or_path, storage_dir)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    raft_examples, raft_stats = None, None
    if data_args.raft:
        from finetune.raft import load_or_build

        with state.main_process_first():  # rank 0 retrieves and caches the prompts; the others read the cache
            split_rows, train_ids, _, _, full_rows = select_rows(data_args, training_args.seed)
            raft_examples, raft_stats = load_or_build(
                split_rows, train_ids, manifest, tokenizer, resolved.name, data_args, training_args.seed, storage_dir,
                show_progress=state.is_main_process, topic_rows=full_rows,
            )
    train_ds, eval_ds, data_stats = build_datasets(
        tokenizer, split_dir, training_args.max_length, data_args, training_args.seed, verbose=state.is_main_process,
        raft_examples=raft_examples,
    )
    if raft_stats is not None:
        data_stats["raft"] = raft_stats
    if state.is_main_process:
        logger.info(
            "data: %d train / %d val examples (%d / %d answer tokens), %d train answers truncated",
            data_stats["train"]["examples"], data_stats["val"]["examples"], data_stats["train"]["answer_tokens"],
            data_stats["val"]["answer_tokens"], data_stats["train"]["truncated"],
        )

    set_seed(training_args.seed)
    model, precision = load_base_model(resolved.path, model_args, training_args, device)
    model_args.use_peft = True
    peft_config = get_peft_config(model_args)
    if training_args.padding_free and not training_args.packing:
        training_args.max_length = None  # examples are already cut to the budget; TRL requires None here
    if training_args.eval_strategy != "no" and eval_ds is None:
        training_args.eval_strategy = "no"

    checkpoint = training_args.resume_from_checkpoint
    if data_args.resume and not checkpoint:
        found = last_complete_checkpoint(output_dir)
        if found is None:
            logger.warning("--resume: no complete checkpoint in %s; starting from scratch", output_dir)
        else:
            checkpoint = str(found)
            logger.info("resuming from %s", found)
    elif not checkpoint and last_complete_checkpoint(output_dir) is not None and state.is_main_process:
        logger.warning("%s already holds checkpoints; starting from scratch (pass --resume to continue)", output_dir)

    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks or []),
    )
    if state.is_main_process:
        trainable, total = trainer.model.get_nb_trainable_parameters()
        logger.info("LoRA: %d trainable of %d parameters (%.3f%%), base weights %s on %s", trainable, total, 100 * trainable / total, precision, device)

    eval_before = None
    if data_args.eval_before_train and eval_ds is not None and checkpoint is None:
        eval_before = trainer.evaluate()["eval_loss"]
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(output_dir))
    eval_after = trainer.evaluate()["eval_loss"] if eval_ds is not None else None

    history = trainer.state.log_history
    if eval_before is None:  # a resumed run: the "before" figure is in the restored history
        eval_before = next((h["eval_loss"] for h in history if "eval_loss" in h and h.get("step") == 0), None)
    summary = {
        "command": ["python", "-m", "finetune.train", *(sys.argv[1:] if argv is None else argv)],
        "base_model": model_args.model_name_or_path,
        "base_model_name": resolved.name,
        "base_model_path": str(resolved.path),
        "precision": precision,
        "device": device,
        "world_size": state.num_processes,
        "data": {
            "splits_dir": str(split_dir),
            "manifest_hash": manifest.get("content_hash"),
            "manifest_counts": manifest.get("counts"),
            "source": manifest.get("source"),
            **data_stats,
        },
        "hyperparameters": {**hyperparameters(training_args, model_args, data_args), "padding_free": trainer.padding_free},
        "global_step": trainer.state.global_step,
        "resumed_from": checkpoint,
        "train_loss": _last(history, "loss"),
        "train_loss_mean": result.training_loss,
        "eval_loss_before": eval_before,
        "eval_loss_after": eval_after,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "wall_time_s": None,
        "log_history": history,
    }
    if trainer.is_world_process_zero():
        # Rank 0 writes the summary and merges; the others wait, so every process leaves together.
        summary["wall_time_s"] = round(time.time() - started, 1)
        write_json_atomic(output_dir / RUN_SUMMARY, summary, sort_keys=True)
        if data_args.merge:
            from finetune.merge import merge_adapter

            merged = merge_adapter(output_dir, data_args.merged_dir or output_dir / "merged", storage_dir=storage_dir)
            summary["merged_dir"] = str(merged)
        summary["wall_time_s"] = round(time.time() - started, 1)
        write_json_atomic(output_dir / RUN_SUMMARY, summary, sort_keys=True)
        logger.info(
            "done in %.0fs: step %d, train loss %s, val loss %s -> %s%s", summary["wall_time_s"], summary["global_step"],
            _fmt(summary["train_loss"]), _fmt(eval_before), _fmt(eval_after),
            f"; merged model in {summary['merged_dir']}" if "merged_dir" in summary else "",
        )
    state.wait_for_everyone()
    if hasattr(trainer, "end"):
        trainer.end()
    return summary


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for user mistakes)."""
    from finetune.cli import run_cli

    return run_cli(lambda: (run(argv), 0)[1])


if __name__ == "__main__":
    sys.exit(main())
