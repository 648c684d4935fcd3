"""What medqa knows about a loaded model, as a typed record (:class:`ModelInfo`), and how it names it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The kinds of model medqa tells apart (from the run record training writes beside a model).
BASE, FINE_TUNE, RETRIEVAL_AWARE = "base", "fine-tune", "retrieval-aware fine-tune"


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model: where it came from, what it is and how it runs.

    Attributes:
        name: A readable name (logs, the chat's sidebar, reports).
        path: The checkpoint folder (or the server's address).
        kind: :data:`BASE`, :data:`FINE_TUNE` or :data:`RETRIEVAL_AWARE` (trained to answer from numbered sources).
        backend: ``"llama.cpp"``, ``"transformers"`` or ``"server"``.
        device: Where it runs.
        fallback: True when the bundled model stands in for the configured one.
        reason: Why the configured model fell back (empty otherwise).
        weights: The file the backend reads when it is not in ``path`` (a GGUF).
        stop_on_repeat: Whether generation stops once an answer repeats itself.
    """

    name: str
    path: str = ""
    kind: str = BASE
    backend: str = ""
    device: str = ""
    fallback: bool = False
    reason: str = ""
    weights: str = ""
    stop_on_repeat: bool = False

    @property
    def retrieval_aware(self) -> bool:
        """True for a fine-tune trained on the engine's own prompts with sources (RAFT)."""
        return self.kind == RETRIEVAL_AWARE

    def describe(self) -> str:
        """One line naming the model, e.g. ``smollm2-135m-raft (retrieval-aware fine-tune, llama.cpp)``."""
        how = ", ".join(x for x in (self.kind, self.backend) if x)
        line = f"{Path(self.name).name or self.name} ({how})"
        if self.fallback:
            line += f"; {self.reason or 'the configured model could not be loaded'}, so the bundled model answers"
        return line


def model_info(llm: Any) -> ModelInfo:
    """The :class:`ModelInfo` of an LLM medqa loaded (its ``model_info`` field); a bare record for any other LLM."""
    info = getattr(llm, "model_info", None)
    if isinstance(info, ModelInfo):
        return info
    return ModelInfo(name=str(getattr(llm, "model_name", "") or type(llm).__name__))
