"""The systems ``python -m eval.compare`` scores: models with or without sources, and the copying baselines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from eval.arguments import DEFAULT_FT_MODEL, CompareArguments, EvalError
from rag_app.config import BUNDLED_LLM

#: Pairs compared with a paired bootstrap test, when both systems ran.
PAIRS = [
    ("ft", "base"),
    ("base+rag", "base"),
    ("ft+rag", "ft"),
    ("ft+rag", "base+rag"),
    ("ft+rag", "base"),
    ("raft+rag", "ft+rag"),
    ("raft+rag", "ft"),
    ("raft+rag", "base"),
    ("raft+rag", "raft"),
    ("raft+rag", "base+rag"),
    ("raft+rag", "extractive"),
    ("raft+rag", "oracle"),
    ("oracle", "extractive"),
]
#: Systems whose model is a fine-tune this project trains: a missing model is reported and skipped.
FINETUNED_SYSTEMS = {"ft", "ft+rag", "raft", "raft+rag"}


@dataclass
class SystemSpec:
    """One system under evaluation."""

    name: str
    model: Optional[str]  # None for the reference, extractive and oracle systems
    rag: bool
    top_k: int
    kind: str = "llm"  # "llm", "reference", "extractive" or "oracle"


def system_specs(args: CompareArguments, settings: Any) -> list[SystemSpec]:
    """The systems to run, from ``--systems`` and ``--extra_systems``.

    Raises:
        EvalError: For an unknown system name or a malformed spec.
    """
    top_k = args.top_k or settings.top_k
    base = args.base_model or BUNDLED_LLM
    ft = args.ft_model or DEFAULT_FT_MODEL
    raft = args.raft_model or settings.finetuned_llm
    builtin = {
        "base": SystemSpec("base", base, False, top_k),
        "ft": SystemSpec("ft", ft, False, top_k),
        "base+rag": SystemSpec("base+rag", base, True, top_k),
        "ft+rag": SystemSpec("ft+rag", ft, True, top_k),
        "raft": SystemSpec("raft", raft, False, top_k),
        "raft+rag": SystemSpec("raft+rag", raft, True, top_k),
        "reference": SystemSpec("reference", None, False, top_k, kind="reference"),
        "extractive": SystemSpec("extractive", None, True, top_k, kind="extractive"),
        "oracle": SystemSpec("oracle", None, True, top_k, kind="oracle"),
    }
    specs = []
    for name in [s.strip() for s in args.systems.split(",") if s.strip()]:
        if name not in builtin:
            raise EvalError(f"unknown system {name!r}; use {sorted(builtin)} or --extra_systems NAME=MODEL[:rag][:k=N]")
        specs.append(builtin[name])
    for spec in args.extra_systems:
        name, sep, rest = spec.partition("=")
        if not sep or not name or not rest:
            raise EvalError(f"bad system spec {spec!r}; expected NAME=MODEL[:rag][:k=N]")
        parts = rest.split(":")
        model, flags = parts[0], parts[1:]
        rag, k = False, top_k
        for flag in flags:
            if flag == "rag":
                rag = True
            elif flag.startswith("k=") and flag[2:].isdigit():
                k = int(flag[2:])
            else:
                raise EvalError(f"bad flag {flag!r} in system spec {spec!r}; use :rag and :k=N")
        specs.append(SystemSpec(name, model, rag, k))
    if not specs:
        raise EvalError("no systems to evaluate; pass --systems")
    return specs
