"""Faults a user can recover from: a Chroma store cut short (its SQLite file or an HNSW segment) and a full disk.

Each fault is made for real on a small built index: the files are truncated as a disk error, an interrupted copy or
a full-disk write leaves them, and the disk fills up by an injected ``ENOSPC`` at the point the build writes.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest

from rag_app.config import Settings
from rag_app.errors import DiskFullError, IndexDamagedError
from tests.conftest import _medquad_xml
from tests.test_cli import run_cli

#: Chroma keeps a collection's first 1,000 vectors in its SQLite log and writes the HNSW segment files only past
#: that, so damaging a segment file needs an index of more QA pairs than that.
HNSW_PAIRS = 1100


def damage(storage: Path, kind: str) -> None:
    """Cut the index's SQLite file, or its largest HNSW segment file, short."""
    chroma = storage / "chroma"
    if kind == "sqlite":
        target = chroma / "chroma.sqlite3"
        keep = target.stat().st_size // 3
    else:
        target = max(chroma.glob("*/data_level0.bin"), key=lambda p: p.stat().st_size)
        keep = target.stat().st_size // 20
    with target.open("r+b") as f:
        f.truncate(keep)


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def build(settings: Settings, embed_model, pairs: int = 0) -> Settings:
    """The small index (plus ``pairs`` more short QA pairs), built; a feedback file beside it no recovery may touch."""
    from rag_app.index.build import build_index

    folder = Path(settings.corpus[0]) / "3_TestC_QA"
    folder.mkdir(exist_ok=True)
    for i in range(pairs // 2):
        focus = f"Condition {i}"
        (folder / f"{i:07d}.xml").write_text(
            _medquad_xml(f"9{i:06d}", focus, f"{focus} is a rare condition number {i}.", f"{focus} is treated with rest.",
                         f"https://www.nih.gov/test/c{i}"),
            encoding="utf-8",
        )
    build_index(settings, embed_model=embed_model, show_progress=False)
    (settings.storage_dir / "feedback.jsonl").write_text('{"rating": "up"}\n', encoding="utf-8")
    return settings


@pytest.fixture()
def built(settings, embed_model) -> Settings:
    return build(settings, embed_model)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("hnsw", marks=pytest.mark.slow)])
def test_a_damaged_index_is_one_line_everywhere_and_rebuild_recovers(settings, embed_model, bundled_llm_dir: Path, kind: str) -> None:
    built = build(settings, embed_model, pairs=HNSW_PAIRS if kind == "hnsw" else 0)
    storage, corpus = built.storage_dir, built.corpus[0]
    feedback = (storage / "feedback.jsonl").read_bytes()
    corpus_files = sorted((p.name, p.read_bytes()) for p in Path(corpus).rglob("*.xml"))
    damage(storage, kind)
    common = ("--storage-dir", str(storage), "--corpus", corpus)
    env = {"MEDQA_LLM": str(bundled_llm_dir), "MEDQA_MAX_NEW_TOKENS": "8", "MEDQA_CHUNK_SIZE": "128", "MEDQA_CHUNK_OVERLAP": "16"}

    for command in (("ask", "How is gout treated?"), ("status",), ("index", "--quiet")):
        result = run_cli(*common, *command, env=env)
        line = one_error_line(result.stderr)
        assert result.returncode == 2, (command, result.stderr)
        assert f"the index in {storage / 'chroma'} is damaged" in line and "python -m rag_app.index --rebuild" in line, line

    result = run_cli(*common, "index", "--rebuild", "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    (aside,) = storage.glob("chroma.damaged-*")
    assert f"the damaged index was moved to {aside}" in result.stdout
    # What described the damaged store went with it; the new manifest describes the new store.
    assert (aside / "medqa-index_manifest.json").is_file() and (aside / "chroma.sqlite3").is_file()
    result = run_cli(*common, "status", env=env)
    assert result.returncode == 0 and f'"indexed_documents": {8 + (HNSW_PAIRS if kind == "hnsw" else 0)}' in result.stdout, result.stderr
    result = run_cli(*common, "ask", "How is gout treated?", env=env)
    assert result.returncode == 0 and "Gout" in result.stdout, result.stderr
    assert (storage / "feedback.jsonl").read_bytes() == feedback
    assert sorted((p.name, p.read_bytes()) for p in Path(corpus).rglob("*.xml")) == corpus_files


def test_the_library_raises_the_damaged_index_error_and_rebuild_can_discard_it(built: Settings, embed_model) -> None:
    from chromadb.api.shared_system_client import SharedSystemClient
    from llama_index.core.llms import MockLLM

    from rag_app.answer.engine import build_query_engine
    from rag_app.index.build import build_index
    from rag_app.index.chroma import index_status, manifest_path

    other = built.model_copy(update={"collection": "other"})
    build_index(other, embed_model=embed_model, show_progress=False)
    assert manifest_path(other).is_file() and other.docstore_path.is_file()
    SharedSystemClient.clear_system_cache()  # as a new process would open it
    damage(built.storage_dir, "sqlite")
    with pytest.raises(IndexDamagedError, match="python -m rag_app.index --rebuild"):
        build_query_engine(built, llm=MockLLM(max_tokens=2), embed_model=embed_model)
    assert index_status(built)["damaged"] is True
    stats = build_index(built, embed_model=embed_model, rebuild=True, discard_damaged=True, show_progress=False)
    assert stats.set_aside == "the damaged index was removed" and stats.embedded_documents == 8
    assert not list(built.storage_dir.glob("chroma.damaged-*"))
    # The other collection lived in the same store: what described it went too, so its next build starts afresh.
    assert not manifest_path(other).exists() and not other.docstore_path.exists()
    engine = build_query_engine(built, llm=MockLLM(max_tokens=2), embed_model=embed_model)
    assert engine.retrieve("How is gout treated?")[0].node.metadata["focus"] == "Gout"


def test_a_full_disk_is_one_line_keeps_the_index_and_the_next_run_resumes(settings: Settings, embed_model, monkeypatch) -> None:
    """The disk fills up while the second batch is committed: one line naming the path, the space needed and what is
    kept; the first batch stays searchable and the next run embeds only the rest."""
    from rag_app.index import build
    from rag_app.index.chroma import index_status

    monkeypatch.setattr(build, "batch_bounds", lambda total: [(0, 3), (3, total)])
    persist = build._persist_docstore
    calls = []

    def fills_up(docstore, path):
        calls.append(path)
        if len(calls) == 2:  # the write the full disk refuses
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        persist(docstore, path)

    monkeypatch.setattr(build, "_persist_docstore", fills_up)
    with pytest.raises(DiskFullError) as caught:
        build.build_index(settings, embed_model=embed_model, show_progress=False)
    message = str(caught.value)
    assert "\n" not in message and f"no space left on the device holding {settings.storage_dir}" in message
    assert "MB more needed" in message and "keeps the 3 documents committed so far" in message
    assert "the next `python -m rag_app.index` resumes" in message
    status = index_status(settings)
    assert status["exists"] and status["indexed_documents"] == 3 and status["building"]

    monkeypatch.setattr(build, "_persist_docstore", persist)
    stats = build.build_index(settings, embed_model=embed_model, show_progress=False)
    assert stats.unchanged_documents == 3 and stats.embedded_documents == 5
    assert index_status(settings)["indexed_documents"] == 8 and not index_status(settings)["building"]


def test_a_full_disk_while_writing_a_file_leaves_the_old_one(tmp_path: Path) -> None:
    from rag_app.files import atomic_path, require_space

    dest = tmp_path / "model.gguf"
    dest.write_text("old")
    with pytest.raises(DiskFullError, match=r"no space left on the device holding .*model\.gguf while writing model\.gguf"):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert dest.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.gguf"]
    with pytest.raises(DiskFullError, match="about .* MB more needed"):
        require_space(tmp_path, 10**18, "writing a model")


def test_the_chat_shows_a_damaged_index_and_its_rebuild_button_recovers(built: Settings, monkeypatch, bundled_llm_dir) -> None:
    from chromadb.api.shared_system_client import SharedSystemClient
    from streamlit.testing.v1 import AppTest

    from rag_app.index.chroma import index_status
    from tests.test_streamlit_app import APP, TIMEOUT

    for key, value in {
        "MEDQA_STORAGE_DIR": str(built.storage_dir), "MEDQA_CORPUS": built.corpus[0], "MEDQA_LLM": str(bundled_llm_dir),
        "MEDQA_MAX_NEW_TOKENS": "8", "MEDQA_CHUNK_SIZE": "128", "MEDQA_CHUNK_OVERLAP": "16",
    }.items():
        monkeypatch.setenv(key, value)
    SharedSystemClient.clear_system_cache()
    damage(built.storage_dir, "sqlite")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("damaged" in h.value for h in at.subheader)
    assert at.code[0].value.startswith("python -m rag_app.index --rebuild")
    assert any("damaged" in m.value for m in at.sidebar.markdown)
    assert len(at.chat_input) == 0
    at.button(key="rebuild_damaged").click().run()
    assert not at.exception, [e.value for e in at.exception]
    deadline = time.monotonic() + 180
    while not (status := index_status(Settings())).get("exists") or status.get("building"):
        assert time.monotonic() < deadline, f"the rebuild did not finish: {status}"
        time.sleep(0.5)
    assert status["indexed_documents"] == 8 and list(built.storage_dir.glob("chroma.damaged-*"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception and len(at.chat_input) == 1
