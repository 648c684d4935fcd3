"""The CLI: answers with sources; user mistakes give one error line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rag_app.index.build import build_index

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rag_app", *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600
    )


def test_empty_question_is_one_error_line(tmp_path: Path, bundled_llm_dir: Path) -> None:
    result = run_cli("--storage-dir", str(tmp_path), "ask", "  ", env={"MEDQA_LLM": str(bundled_llm_dir)})
    assert result.returncode == 2
    assert "error: " in result.stderr and "Traceback" not in result.stderr


def test_missing_corpus_names_download_command(tmp_path: Path) -> None:
    result = run_cli("--storage-dir", str(tmp_path), "--corpus", str(tmp_path / "none"), "index")
    assert result.returncode == 2
    assert "python -m corpus.download medquad" in result.stderr and "Traceback" not in result.stderr


def test_missing_index_names_index_command(tmp_path: Path, bundled_llm_dir: Path) -> None:
    result = run_cli("--storage-dir", str(tmp_path), "ask", "What is gout?", env={"MEDQA_LLM": str(bundled_llm_dir)})
    assert result.returncode == 2 and "python -m rag_app.index" in result.stderr
    assert "Traceback" not in result.stderr


def test_ask_prints_answer_and_sources(settings, embed_model, bundled_llm_dir: Path) -> None:
    build_index(settings, embed_model=embed_model, show_progress=False)
    env = {
        "MEDQA_LLM": str(bundled_llm_dir),
        "MEDQA_MAX_NEW_TOKENS": "32",
        "MEDQA_CHUNK_SIZE": str(settings.chunk_size),
        "MEDQA_CHUNK_OVERLAP": str(settings.chunk_overlap),
    }
    result = run_cli("--storage-dir", str(settings.storage_dir), "--corpus", settings.corpus[0], "ask", "How is asthma treated?", env=env)
    assert result.returncode == 0, result.stderr
    assert "Sources:" in result.stdout
    assert "[1] Asthma (2_TestB_QA) — https://www.nih.gov/test/asthma" in result.stdout
    assert "not medical advice" in result.stdout


def test_odd_bytes_in_a_question_are_cleaned_not_a_traceback(settings, embed_model, bundled_llm_dir: Path) -> None:
    """A pasted terminal line with an undecodable byte is answered (the byte dropped), naming the model that answers."""
    build_index(settings, embed_model=embed_model, show_progress=False)
    env = {"MEDQA_LLM": str(bundled_llm_dir), "MEDQA_MAX_NEW_TOKENS": "8", "MEDQA_CHUNK_SIZE": str(settings.chunk_size),
           "MEDQA_CHUNK_OVERLAP": str(settings.chunk_overlap)}
    result = subprocess.run(
        [sys.executable, "-m", "rag_app", "--storage-dir", str(settings.storage_dir), "--corpus", settings.corpus[0], "ask",
         b"Was ist Diabetes? \xe2\x80\x94 \xff"],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, capture_output=True, timeout=600,
    )
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0 and "Traceback" not in stderr, stderr
    assert f"model: {bundled_llm_dir.name} (base, llama.cpp)" in stderr
    assert "Sources:" in result.stdout.decode()
