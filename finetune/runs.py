"""What a training run leaves behind and reads back: the run record's name and the base model's checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune import UserError

#: The run record written beside a trained adapter (losses, hyper-parameters, data manifest, recipe).
RUN_SUMMARY = "medqa_run.json"


def resolve_base(model_name: str, storage_dir: Path) -> Any:
    """Local checkpoint of the base model, without the bundled-model fallback.

    Raises:
        UserError: If the model can't be found (missing path, unreachable hub, bad GGUF).
    """
    from rag_app.config import Settings
    from rag_app.errors import ModelUnavailableError
    from rag_app.llm.resolve import resolve_llm

    try:
        return resolve_llm(Settings(llm=model_name, storage_dir=storage_dir, offline_fallback=False))
    except ModelUnavailableError as err:
        raise UserError(f"base model not available: {str(err).splitlines()[0]}") from None
    except (OSError, ValueError) as err:
        raise UserError(f"base model {model_name!r} not available: {str(err).splitlines()[0]}") from None
