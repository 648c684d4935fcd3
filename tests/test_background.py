"""Building the index in the background, atomic writes, settings errors and the bfloat16 encoder."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import session as chat
from rag_app.config import Settings


def test_background_build_runs_once_and_reports_progress(settings: Settings, embed_model) -> None:
    from rag_app.index.background import BackgroundBuild
    from rag_app.index.chroma import index_status

    build = BackgroundBuild(settings, embed_model)
    assert build.progress().state == "idle"
    assert chat.index_needs_build(settings, index_status(settings))
    assert build.start() is True
    assert build.start() is False or build.progress().state == "done"  # one build at a time
    done = build.wait(timeout=120)
    assert done.state == "done" and done.fraction == 1.0 and "indexed 8 documents" in done.summary
    status = index_status(settings)
    assert status["exists"] and not status["building"] and status["indexed_documents"] == 8
    assert not chat.index_needs_build(settings, status)
    assert chat.partial_index_notice(status) == ""


def test_partial_index_notice_and_outdated_corpus(settings: Settings) -> None:
    building = {"exists": True, "building": True, "indexed_documents": 512, "documents": 16423, "chunks": 700}
    assert chat.partial_index_notice(building) == (
        "⏳ The source index is still being built: this answer draws on the 512 of 16,423 documents indexed so far."
    )
    assert "700 passages" in chat.partial_index_notice({"building": True, "chunks": 700})
    other = {"exists": True, "building": False, "corpus": ["somewhere/else"]}
    assert chat.index_needs_build(settings, other), "an index of another corpus is rebuilt"


def test_a_failed_build_reports_its_error(tmp_path: Path, embed_model) -> None:
    from rag_app.index.background import BackgroundBuild

    broken = Settings(storage_dir=tmp_path / "s", corpus=[str(tmp_path / "missing")])
    build = BackgroundBuild(broken, embed_model)
    build.start()
    progress = build.wait(timeout=60)
    assert progress.state == "failed" and "CorpusError" in progress.error and "corpus.download" in progress.error


def test_atomic_path_keeps_the_old_version_on_failure(tmp_path: Path) -> None:
    from rag_app.files import atomic_path, write_json_atomic

    target = tmp_path / "folder"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "a.txt").write_text("one")
    with pytest.raises(RuntimeError), atomic_path(target, directory=True) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("power cut")
    assert (target / "a.txt").read_text() == "one" and sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
    with atomic_path(target, directory=True) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    write_json_atomic(tmp_path / "x.json", {"b": 1, "a": 2}, sort_keys=True)
    assert (tmp_path / "x.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'


def test_settings_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from rag_app.config import load_settings
    from rag_app.errors import MedQAError, SettingsError

    monkeypatch.setenv("MEDQA_TOP_K", "0")
    with pytest.raises(SettingsError, match=r"MEDQA_TOP_K='0': Input should be greater than or equal to 1") as err:
        load_settings()
    assert isinstance(err.value, MedQAError) and "\n" not in str(err.value)
    monkeypatch.delenv("MEDQA_TOP_K")
    with pytest.raises(SettingsError, match="MEDQA_LLM_BACKEND='gpu': Input should be 'auto', 'llama.cpp' or 'transformers'"):
        load_settings(llm_backend="gpu")


def test_bfloat16_encoder_gives_the_float32_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU with bfloat16 units the encoder runs in bfloat16; its vectors match float32's to 3 decimals."""
    import numpy as np

    from rag_app.llm.load import cpu_has_bf16, embed_dtype, load_embed_model

    texts = ["What are the treatments for gout?", "Glaucoma is a group of diseases that can damage the eye's optic nerve."]
    fp32 = np.asarray(load_embed_model(Settings(embed_dtype="float32")).get_text_embedding_batch(texts))
    bf16_model = load_embed_model(Settings(embed_dtype="bfloat16"))
    assert str(next(bf16_model._model.parameters()).dtype) == "torch.bfloat16"
    bf16 = np.asarray(bf16_model.get_text_embedding_batch(texts))
    assert bf16.dtype == np.float64 or bf16.dtype == np.float32
    assert (fp32 * bf16).sum(axis=1).min() > 0.995
    assert embed_dtype(Settings(), "cpu") == ("bfloat16" if cpu_has_bf16() else "float32")
    assert embed_dtype(Settings(), "cuda") == "float32"
