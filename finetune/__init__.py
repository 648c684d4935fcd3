"""Fine-tuning: leakage-free splits, LoRA/QLoRA supervised fine-tuning with TRL, and adapter merging.

    python -m finetune.data                      # write <storage>/splits/{train,val,test}.jsonl + manifest.json
    python -m finetune.train --config finetune/recipes/smollm2-135m-lora-cpu.yaml
    python -m finetune.merge --adapter runs/smollm2-lora
"""

from pathlib import Path

from rag_app.errors import MedQAError

RECIPES_DIR = Path(__file__).with_name("recipes")


class UserError(MedQAError, ValueError):
    """A mistake in the user's recipe, flags or data; CLIs print it as one line and exit with status 2."""


__all__ = ["RECIPES_DIR", "UserError"]
