"""Chroma server mode: a real `chroma run` on 127.0.0.1, indexed and queried through the same code."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag_app.index.build import build_index

from rag_app.index.chroma import load_nodes
from rag_app.retrieval.modes import build_retriever

CHROMA = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def chroma_server(tmp_path: Path):
    port = _free_port()
    proc = subprocess.Popen(
        [CHROMA, "run", "--path", str(tmp_path / "server-db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("chroma run exited early")
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("chroma server did not start within 60 s")
    yield port
    proc.terminate()
    proc.wait(timeout=20)


@pytest.mark.e2e
def test_server_mode_matches_embedded(settings, embed_model, chroma_server: int, tmp_path: Path) -> None:
    server = settings.model_copy(update={"chroma_host": "127.0.0.1", "chroma_port": chroma_server, "storage_dir": tmp_path / "client"})
    assert server.server_mode
    embedded_stats = build_index(settings, embed_model=embed_model, show_progress=False)
    server_stats = build_index(server, embed_model=embed_model, show_progress=False)
    assert server_stats.total_chunks == embedded_stats.total_chunks
    assert not (server.storage_dir / "chroma").exists()  # nothing was written to an embedded database
    assert build_index(server, embed_model=embed_model, show_progress=False).embedded_documents == 0

    assert [n.id_ for n in load_nodes(server)] == [n.id_ for n in load_nodes(settings)]
    local = build_retriever(settings, embed_model=embed_model)
    remote = build_retriever(server, embed_model=embed_model)
    for question in ("How is gout treated?", "What is anemia?", "wheezing and chest tightness"):
        a, b = local.retrieve(question), remote.retrieve(question)
        assert [n.node.node_id for n in a] == [n.node.node_id for n in b]
        assert [round(n.score, 4) for n in a] == [round(n.score, 4) for n in b]
