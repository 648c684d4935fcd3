"""Answers already generated, kept per model weights, prompt and decoding, so a rerun only generates what changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from rag_app.llm.info import model_info


class AnswerCache:
    """Answers already generated, keyed by model weights, prompt and decoding (an append-only JSONL file).

    Greedy decoding makes an answer a pure function of these, so a re-run (or an interrupted run) only generates what
    is missing. A model is identified by its folder (or GGUF file) and the size and modification time of its weight
    files, so retraining into the same folder invalidates its answers. The engine reads and fills it
    (:meth:`rag_app.answer.engine.MedQAQueryEngine.answer_batch`).
    """

    def __init__(self, path: Path, llm: Any) -> None:
        info = model_info(llm)
        self.path = path
        self.model_key = self._fingerprint(Path(info.weights or info.path or info.name))
        # The repetition stop changes answers ("2": it also checks an answer's last sentence).
        self.stop = "stop_on_repeat2" if info.stop_on_repeat else ""
        self.answers: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.answers[row["key"]] = row["answer"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by an interrupted run: ignore it

    @staticmethod
    def _fingerprint(root: Path) -> str:
        weights = sorted(root.glob("*.safetensors")) + sorted(root.glob("*.bin")) if root.is_dir() else []
        if root.is_file():  # a GGUF file (the llama.cpp backend)
            weights = [root]
        return json.dumps([str(root.resolve()) if root.exists() else str(root)] + [[w.name, w.stat().st_size, w.stat().st_mtime_ns] for w in weights])

    def key(self, messages: list[dict[str, str]], decoding: dict[str, Any]) -> str:
        """The cache key of one prompt for this model, decoded as ``decoding`` says."""
        blob = json.dumps([self.model_key, messages, decoding, self.stop], sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, messages: list[dict[str, str]], decoding: dict[str, Any]) -> Optional[str]:
        """The cached answer, or None."""
        return self.answers.get(self.key(messages, decoding))

    def put_many(self, items: Sequence[tuple[list[dict[str, str]], dict[str, Any], str]]) -> None:
        """Store ``(messages, decoding, answer)`` items (appended and flushed at once, so an interruption keeps them)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            for messages, decoding, answer in items:
                key = self.key(messages, decoding)
                self.answers[key] = answer
                handle.write(json.dumps({"key": key, "answer": answer}) + "\n")
