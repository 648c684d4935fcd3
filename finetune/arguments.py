"""Every option of the fine-tuning commands, as TRL-style dataclasses, and the recipe parser.

The first module of ``finetune``: data, RAFT prompts, training and merging all read their options from here.

    python -m finetune.train --config finetune/recipes/smollm2-135m-raft-cpu.yaml --max_steps 10
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from finetune import UserError


@dataclass
class SplitArguments:
    """Where the corpus is and how to split it.

    Attributes:
        corpus: Corpus sources (MedQuAD folders, seed-format CSV/Parquet files); defaults to ``MEDQA_CORPUS``.
        storage_dir: Storage folder; defaults to ``MEDQA_STORAGE_DIR`` (``storage``).
        splits_dir: Folder of the split files; defaults to ``<storage_dir>/splits``.
        val_fraction: Share of examples in the validation split.
        test_fraction: Share of examples in the test split.
        split_seed: Seed of the group shuffle; the same corpus and seed always give the same splits.
        force: Rebuild the splits even when a manifest with the same parameters exists.
    """

    corpus: list[str] | None = field(default=None, metadata={"help": "Corpus sources; default: MEDQA_CORPUS."})
    storage_dir: str | None = field(default=None, metadata={"help": "Storage folder; default: MEDQA_STORAGE_DIR."})
    splits_dir: str | None = field(default=None, metadata={"help": "Split folder; default: <storage_dir>/splits."})
    val_fraction: float = field(default=0.05, metadata={"help": "Share of examples in the validation split."})
    test_fraction: float = field(default=0.05, metadata={"help": "Share of examples in the test split."})
    split_seed: int = field(default=42, metadata={"help": "Seed of the group shuffle."})
    force: bool = field(default=False, metadata={"help": "Rebuild the splits even if they are up to date."})


@dataclass
class RaftArguments:
    """Options of the retrieval-aware data (recipe keys; all start with ``raft``).

    Attributes:
        raft: Train on retrieval-augmented prompts instead of bare question -> answer pairs.
        raft_top_k: Passages per prompt; use the engine's ``MEDQA_TOP_K`` (3).
        raft_oracle_fraction: Share of examples whose prompt holds the question's own QA pair.
        raft_answer_tokens: Token budget of an oracle target (cut at a sentence end).
        raft_candidate_k: Candidates each retriever returns before fusion and the train-only filter.
        raft_consumer_fraction: Share of questions rewritten the way people write them
            (:func:`finetune.consumer.consumer_question`).
        raft_sibling_fraction: Share of questions replaced by another NIH collection's question on the same
            topic and type, where there is one.
        raft_retrieved_order: When the retriever puts the question's own pair in the top k, keep the sources
            exactly as it ranks them (chunks, order), as at inference; otherwise insert the pair at random.
        raft_weight_by_source: Sample the training pairs with weights ``exp(source prior)`` of their collection,
            so the collections that answer people's questions most often are seen most.
    """

    raft: bool = field(default=False, metadata={"help": "Retrieval-aware (RAFT) training prompts with sources."})
    raft_top_k: int = field(default=3, metadata={"help": "Passages per prompt (the engine's MEDQA_TOP_K)."})
    raft_oracle_fraction: float = field(default=0.8, metadata={"help": "Share of examples that contain the gold passage."})
    raft_answer_tokens: int = field(default=128, metadata={"help": "Token budget of an oracle answer target."})
    raft_candidate_k: int = field(default=40, metadata={"help": "Retrieval candidates before filtering to train pairs."})
    raft_consumer_fraction: float = field(default=0.0, metadata={"help": "Share of questions rewritten in consumer style."})
    raft_sibling_fraction: float = field(default=0.0, metadata={"help": "Share of questions replaced by a same-topic question of another collection."})
    raft_retrieved_order: bool = field(default=False, metadata={"help": "Keep the retriever's sources and order when it finds the gold pair."})
    raft_weight_by_source: bool = field(default=False, metadata={"help": "Sample train pairs weighted by their collection's source prior."})

    def validate(self) -> None:
        """Raise :class:`UserError` for out-of-range values."""
        if self.raft_top_k < 1:
            raise UserError(f"raft_top_k={self.raft_top_k} must be at least 1 (the engine shows 3 sources by default)")
        for name in ("raft_consumer_fraction", "raft_sibling_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"{name}={getattr(self, name)} must be between 0 and 1, e.g. 0.5")
        if self.raft_consumer_fraction + self.raft_sibling_fraction > 1.0:
            raise UserError("raft_consumer_fraction + raft_sibling_fraction must not exceed 1 (the rest keep MedQuAD's question)")
        if not 0.0 <= self.raft_oracle_fraction <= 1.0:
            raise UserError(f"raft_oracle_fraction={self.raft_oracle_fraction} must be between 0 and 1, e.g. 0.8")
        if self.raft_answer_tokens < 16:
            raise UserError(f"raft_answer_tokens={self.raft_answer_tokens} is too small for an answer; use e.g. 160")


@dataclass
class TrainDataArguments(RaftArguments, SplitArguments):
    """Data and run options that TRL's configs don't cover.

    Attributes:
        max_train_samples: Use at most this many training examples (a seeded sample); all when unset.
        max_eval_samples: Use at most this many validation examples (a seeded sample); all when unset.
        min_answer_tokens: Examples whose prompt leaves fewer answer tokens than this are dropped (and counted).
        eval_before_train: Measure validation loss before the first step (the "before" figure).
        resume: Continue from the last complete checkpoint in ``output_dir``.
        merge: Merge the adapter into the base model at the end.
        merged_dir: Where the merged model goes; defaults to ``<output_dir>/merged``.

    The ``raft*`` options (:class:`RaftArguments`) switch to retrieval-aware prompts.
    """

    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on validation examples."})
    min_answer_tokens: int = field(default=16, metadata={"help": "Minimum answer tokens an example must keep."})
    eval_before_train: bool = field(default=True, metadata={"help": "Measure validation loss before training."})
    resume: bool = field(default=False, metadata={"help": "Continue from the last complete checkpoint."})
    merge: bool = field(default=True, metadata={"help": "Merge the adapter into the base model at the end."})
    merged_dir: str | None = field(default=None, metadata={"help": "Merged model folder; default <output_dir>/merged."})


def parse_args(argv: Sequence[str] | None = None) -> tuple[Any, Any, TrainDataArguments]:
    """Parse a recipe and flags into ``(SFTConfig, ModelConfig, TrainDataArguments)``.

    Raises:
        UserError: On unknown keys, bad values, or a missing recipe file.
    """
    from trl import ModelConfig, SFTConfig

    from finetune.cli import parse_or_exit

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--bf16" not in argv and not _cuda_available():
        # TRL defaults (and GPU recipes ask) for bf16, which needs a GPU; on CPU adapters train in fp32.
        argv += ["--bf16", "false"]
    training_args, model_args, data_args = parse_or_exit(
        [SFTConfig, ModelConfig, TrainDataArguments], argv, prog="python -m finetune.train"
    )
    if not model_args.model_name_or_path:
        raise UserError("no base model: set model_name_or_path in the recipe or pass --model_name_or_path")
    if training_args.max_length is None or training_args.max_length < 8:
        raise UserError(f"max_length={training_args.max_length} is not a usable sequence budget; set e.g. --max_length 512")
    return training_args, model_args, data_args


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
