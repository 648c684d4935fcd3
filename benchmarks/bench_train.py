"""Training throughput: medqa's trainer vs a plain ``transformers.Trainer`` with naive padding.

    MEDQA_CORPUS=../shared/data/medquad python benchmarks/bench_train.py
    python benchmarks/bench_train.py --model bundled:smollm2-135m-instruct --steps 12 --batch-size 8

Both sides train the same LoRA (r=16, all linear projections) on the same base model (fp32, CPU unless a
GPU is present), on the same tokenised MedQuAD training examples (shared chat prompt, answers cut at
``--max-length``), with the same number of examples per optimizer step (``--batch-size``):

* ``baseline``: ``transformers.Trainer``, ``DataCollatorForSeq2Seq`` padding each batch to its longest
  example, loss from the model's full logits (labels -100 on the prompt).
* ``medqa``: what ``python -m finetune.train`` runs: TRL ``SFTTrainer`` with the batch flattened
  padding-free (restarting ``position_ids``, no cross-attention between examples) and the loss computed
  only on assistant tokens (TRL's fused LM head skips prompt positions).
* ``medqa-packed``: the recipes' setting: best-fit-decreasing packing into ``--max-length`` rows, fed
  padding-free, one row per micro-batch, accumulated so a step holds about ``--batch-size`` examples.

Each variant runs in its own subprocess (so peak RSS is its own). Throughput counts real, non-pad tokens
and skips the first (warm-up) step. Prints one table with the ratio to the baseline and the target (>= 1.3x).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET = 1.3
VARIANTS = ("baseline", "medqa", "medqa-packed")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _examples(args: argparse.Namespace, tokenizer):
    from finetune.data import SplitArguments, prepare_splits, read_split
    from finetune.train import ChatEncoder

    split_args = SplitArguments(corpus=args.corpus, storage_dir=args.storage_dir)
    split_dir, _ = prepare_splits(split_args, show_progress=False)
    rows = read_split(split_dir / "train.jsonl")
    import random

    rows = random.Random(0).sample(rows, min(len(rows), args.batch_size * (args.steps + 1)))
    encoder = ChatEncoder(tokenizer, args.max_length)
    examples, _ = encoder.encode_many([r["question"] for r in rows], [r["answer"] for r in rows])
    return examples


class _Timer:
    """Trainer callback recording the time at the end of every step."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Timer(TrainerCallback):
            def __init__(self):
                self.ends: list[float] = []

            def on_step_end(self, args, state, control, **kwargs):
                self.ends.append(time.perf_counter())

        return Timer()


class _Counting:
    """Wraps a collator and records (real tokens, padded positions) per batch."""

    def __init__(self, collator, pad_id: int):
        self.collator, self.pad_id, self.batches = collator, pad_id, []

    def __call__(self, features):
        batch = self.collator(features)
        if "attention_mask" in batch:
            real = int(batch["attention_mask"].sum())
        else:  # padding-free: one row; trailing pad (pad_to_multiple_of) has position 0 and pad id
            real = sum(len(f["input_ids"]) for f in features)
        self.batches.append((real, int(batch["input_ids"].numel())))
        return batch


def run_variant(args: argparse.Namespace) -> dict:
    """Train ``args.variant`` for ``args.steps`` steps in this process and return its measurements."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed
    from trl import SFTConfig, SFTTrainer

    from finetune.train import resolve_base

    torch.set_num_threads(args.threads or torch.get_num_threads())
    resolved = resolve_base(args.model, Path(args.storage_dir) if args.storage_dir else Path(os.environ.get("MEDQA_STORAGE_DIR", "storage")))
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples = _examples(args, tokenizer)
    dataset = Dataset.from_dict({"input_ids": [e["input_ids"] for e in examples], "labels": [e["labels"] for e in examples]})
    set_seed(0)
    use_cpu = not torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32, attn_implementation="sdpa")
    lora = LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS)
    common = dict(
        output_dir=str(Path(args.workdir) / args.variant), max_steps=args.steps, learning_rate=1e-4, lr_scheduler_type="constant",
        logging_steps=1000, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, seed=0, data_seed=0,
        use_cpu=use_cpu, bf16=False, fp16=False, dataloader_num_workers=0,
    )  # fmt: skip
    timer = _Timer()
    if args.variant == "baseline":
        model = get_peft_model(model, lora)
        collator = _Counting(DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100), tokenizer.pad_token_id)
        trainer = Trainer(
            model=model,
            args=TrainingArguments(per_device_train_batch_size=args.batch_size, remove_unused_columns=False, **common),
            train_dataset=dataset,
            data_collator=collator,
            callbacks=[timer],
        )
    else:
        packed = args.variant == "medqa-packed"
        mean_len = sum(len(e["input_ids"]) for e in examples) / len(examples)
        rows = max(1, round(args.batch_size * mean_len / args.max_length)) if packed else args.batch_size
        # Packed rows already hold several examples; on CPU one row per micro-batch (accumulated to about
        # --batch-size examples per optimizer step) avoids attention across a long flattened batch.
        accumulation = rows if packed else 1
        config = SFTConfig(
            per_device_train_batch_size=1 if packed else rows, gradient_accumulation_steps=accumulation,
            max_length=args.max_length if packed else None, packing=packed,
            packing_strategy="bfd", padding_free=True, activation_checkpointing=False, **common,
        )  # fmt: skip
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora, callbacks=[timer])
        collator = _Counting(trainer.data_collator, tokenizer.pad_token_id)
        trainer.data_collator = collator
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    accumulation = trainer.args.gradient_accumulation_steps
    batches = collator.batches[: len(timer.ends) * accumulation]  # the dataloader may fetch one batch ahead
    timed = batches[accumulation:]  # skip the first (warm-up) optimizer step
    seconds = timer.ends[-1] - timer.ends[0]
    real = sum(b[0] for b in timed)
    positions = sum(b[1] for b in timed)
    return {
        "variant": args.variant,
        "steps": len(timer.ends),
        "micro_batches_per_step": accumulation,
        "tokens_per_s": real / seconds if seconds > 0 else float("nan"),
        "real_tokens": real,
        "pad_fraction": 1 - real / positions if positions else 0.0,
        "s_per_step": seconds / max(1, len(timer.ends) - 1),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wall_s": wall,
        "device": "cuda" if not use_cpu else f"cpu x{torch.get_num_threads()} threads",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--corpus", nargs="+", default=None, help="default: MEDQA_CORPUS")
    parser.add_argument("--storage-dir", dest="storage_dir", default=None, help="default: MEDQA_STORAGE_DIR")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    parser.add_argument("--max-length", dest="max_length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--workdir", default="/tmp/medqa-bench-train")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the rows (figure, value, baseline, ratio, target) to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.variant:  # child process
        import logging
        import warnings

        logging.disable(logging.WARNING)
        warnings.filterwarnings("ignore")
        print("RESULT " + json.dumps(run_variant(args)), flush=True)
        return 0

    results = {}
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--variant", variant]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{variant} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        results[variant] = json.loads(line[len("RESULT "):])
        print(f"  {variant}: {results[variant]['tokens_per_s']:.0f} tok/s", file=sys.stderr, flush=True)

    base = results.get("baseline")
    print(f"\nTraining throughput, {args.model}, LoRA r=16 on all linear layers, fp32, {args.steps} steps "
          f"(first excluded), batch {args.batch_size} examples, max_length {args.max_length}, {results[next(iter(results))]['device']}")  # fmt: skip
    header = f"{'variant':<14} {'tokens/s (real)':>16} {'s/step':>8} {'pad %':>7} {'peak RSS MiB':>13} {'vs baseline':>12} {'target':>8}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        ratio = r["tokens_per_s"] / base["tokens_per_s"] if base else float("nan")
        target = "" if name == "baseline" else (f">={TARGET}x " + ("ok" if ratio >= TARGET else "MISS"))
        print(f"{name:<14} {r['tokens_per_s']:>16.0f} {r['s_per_step']:>8.2f} {100 * r['pad_fraction']:>6.1f}% "
              f"{r['peak_rss_mib']:>13.0f} {ratio:>11.2f}x {target:>8}")  # fmt: skip
    if args.json and base:
        rows = []
        for name, r in results.items():
            if name == "baseline":
                continue
            rows.append({"figure": f"train tokens/s (real), {name}", "value": r["tokens_per_s"],
                         "baseline": f"{base['tokens_per_s']:.1f} (Trainer, padded)",
                         "ratio": f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}", "target": f">= {TARGET}"})
            rows.append({"figure": f"train peak RSS MiB, {name}", "value": r["peak_rss_mib"],
                         "baseline": f"{base['peak_rss_mib']:.0f} (Trainer, padded)",
                         "ratio": f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}", "target": "-"})
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
