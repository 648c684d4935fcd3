"""The options of ``python -m eval.compare``: a dataclass, read from a YAML recipe and flags like every entry point."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from finetune.cli import parse_or_exit
from rag_app.errors import MedQAError

#: Where ``python -m finetune.train --config finetune/recipes/smollm2-135m-lora-cpu.yaml`` writes its merged model.
DEFAULT_FT_MODEL = "runs/smollm2-135m-lora/merged"
DEFAULT_SYSTEMS = "base,ft,base+rag,ft+rag,raft,raft+rag"


class EvalError(MedQAError, ValueError):
    """A user mistake in the evaluation set-up (missing split, bad system spec, ...)."""


@dataclass
class CompareArguments:
    """Options of ``python -m eval.compare`` (also settable in a YAML file passed with ``--config``)."""

    systems: str = field(
        default=DEFAULT_SYSTEMS,
        metadata={
            "help": "Comma-separated systems: base, ft, base+rag, ft+rag, raft, raft+rag (the retrieval-aware fine-tune), "
            "reference (returns the reference answer: a sanity upper bound), extractive (the top source's answer "
            "text cut to the answer budget, citing [1]), oracle (of the top-k sources' answer texts cut the same way, the one "
            "that scores best against the reference: the ceiling of answering by copying one source)."
        },
    )
    extra_systems: list[str] = field(
        default_factory=list,
        metadata={"help": "More systems as NAME=MODEL[:rag][:k=N], e.g. raft+rag=runs/raft/merged:rag:k=3."},
    )
    base_model: Optional[str] = field(default=None, metadata={"help": "Base model (default: the bundled SmolLM2-135M-Instruct)."})
    ft_model: str = field(default=DEFAULT_FT_MODEL, metadata={"help": "Merged question->answer fine-tune (finetune/recipes/smollm2-135m-lora-cpu.yaml)."})
    raft_model: Optional[str] = field(
        default=None, metadata={"help": "Merged retrieval-aware (RAFT) fine-tune (default: MEDQA_FINETUNED_LLM, what the chat offers)."}
    )
    questions: str = field(
        default="medquad",
        metadata={"help": "Question set: medquad (the held-out test split) or liveqa (real consumer questions, TREC 2017 LiveQA train)."},
    )
    liveqa: Optional[str] = field(
        default=None, metadata={"help": "LiveQA training XML folder (default: ../shared/data/liveqa-train, else data/liveqa-train)."}
    )
    half: str = field(default="report", metadata={"help": "liveqa: the half to score: report (held out), tune or all."})
    corpus: Optional[str] = field(default=None, metadata={"help": "Corpus (MedQuAD folder) the index was built from (default: MEDQA_CORPUS)."})
    split_dir: Optional[str] = field(default=None, metadata={"help": "Folder with test.jsonl + manifest.json (default: <storage>/splits)."})
    limit: int = field(default=200, metadata={"help": "Number of test questions (a seeded random sample)."})
    seed: int = field(default=0, metadata={"help": "Seed for the question sample and bootstrap."})
    top_k: Optional[int] = field(default=None, metadata={"help": "Sources per RAG answer (default: MEDQA_TOP_K)."})
    exclude_test_from_index: bool = field(
        default=False,
        metadata={"help": "Knowledge-absent setting: retrieval never returns the test questions' own QA pairs nor any pair with the same focus."},
    )
    batch_size: int = field(default=8, metadata={"help": "Questions per generation batch (batches group prompts of similar length)."})
    cache: bool = field(
        default=True,
        metadata={"help": "Reuse answers already generated for the same model weights, prompt and budget (<storage>/cache/eval-answers.jsonl); an interrupted run resumes."},
    )
    max_new_tokens: int = field(default=200, metadata={"help": "Answer length budget (greedy decoding)."})
    output_dir: Optional[str] = field(default=None, metadata={"help": "Report folder (default: <storage>/reports/<timestamp>)."})
    storage_dir: Optional[str] = field(default=None, metadata={"help": "Storage folder (default: MEDQA_STORAGE_DIR)."})
    judge_llm: Optional[str] = field(
        default=None, metadata={"help": "Judge for ragas Faithfulness/ResponseRelevancy: hub id, local dir or .gguf. Off by default."}
    )
    judge_api_base: Optional[str] = field(default=None, metadata={"help": "OpenAI-compatible judge endpoint (e.g. a local vLLM server)."})
    judge_model: Optional[str] = field(default=None, metadata={"help": "Model name at --judge_api_base."})
    no_plots: bool = field(default=False, metadata={"help": "Skip the PNG plots."})


def parse_args(argv: Sequence[str] | None = None) -> CompareArguments:
    """Parse flags, with defaults from ``--config FILE.yaml`` when given (:func:`finetune.cli.parse_or_exit`).

    Raises:
        UserError: On an unknown option or key, a bad value, or a missing config file.
    """
    (args,) = parse_or_exit([CompareArguments], argv, prog="python -m eval.compare")
    return args
