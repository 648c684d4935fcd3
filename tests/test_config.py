"""Settings: environment variables, YAML/TOML files, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_app.config import Settings


def test_env_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDQA_STORAGE_DIR", str(tmp_path))
    monkeypatch.setenv("MEDQA_CORPUS", "a/medquad, b/notes ,")
    monkeypatch.setenv("MEDQA_LLM", "my/model")
    monkeypatch.setenv("MEDQA_CHROMA_HOST", "127.0.0.1")
    monkeypatch.setenv("MEDQA_CHROMA_PORT", "8123")
    s = Settings()
    assert s.storage_dir == tmp_path
    assert s.corpus == ["a/medquad", "b/notes"]
    assert s.llm == "my/model"
    assert s.server_mode and s.chroma_port == 8123
    assert s.chroma_dir == tmp_path / "chroma"
    assert s.source_prior["2_GARD_QA"] < 0 < s.source_prior["4_MPlus_Health_Topics_QA"]  # the MedQuAD table
    monkeypatch.setenv("MEDQA_SOURCE_PRIOR", '{"my_notes": 0.5}')
    assert Settings().source_prior == {"my_notes": 0.5}


def test_yaml_and_toml_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yaml_file = tmp_path / "s.yaml"
    yaml_file.write_text("top_k: 7\ncorpus: [x, y]\n")
    assert Settings.from_file(yaml_file).top_k == 7
    assert Settings.from_file(yaml_file).corpus == ["x", "y"]
    monkeypatch.setenv("MEDQA_TOP_K", "4")  # the environment wins over the file
    assert Settings.from_file(yaml_file).top_k == 4
    toml_file = tmp_path / "s.toml"
    toml_file.write_text('llm = "some/dir"\n')
    monkeypatch.setenv("MEDQA_CONFIG", str(toml_file))
    assert Settings().llm == "some/dir"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"chunk_size": 64, "chunk_overlap": 64}, "chunk_overlap"),
        ({"retrieval_mode": "magic"}, "retrieval_mode"),
        ({"top_k": 0}, "top_k"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_bad_values_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)


def test_missing_settings_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Settings.from_file(tmp_path / "nope.yaml")
