"""The serving path: the query engine against an OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rag_app import build_query_engine
from rag_app.config import Settings
from rag_app.index.build import build_index
from rag_app.llm.load import load_llm
from rag_app.llm.info import model_info

pytest.importorskip("llama_index.llms.openai_like")


class _Handler(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, **body})
        answer = {
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Gout is treated with colchicine [1]."}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    _Handler.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_engine_uses_openai_compatible_server(settings, embed_model, server: str) -> None:
    build_index(settings, embed_model=embed_model, show_progress=False)
    served = settings.model_copy(update={"llm_api_base": server, "llm": "Qwen/Qwen2.5-7B-Instruct"})
    llm = load_llm(served)
    assert model_info(llm).device == "server"
    engine = build_query_engine(served, llm=llm, embed_model=embed_model)
    response = engine.query("How is gout treated?")
    assert str(response).startswith("Gout is treated with colchicine [1].")
    assert response.source_nodes[0].node.metadata["focus"] == "Gout"
    sent = _Handler.requests[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert sent["messages"][0]["role"] == "system" and "[1] (Gout)" in sent["messages"][1]["content"]


def test_settings_select_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDQA_LLM_API_BASE", "http://127.0.0.1:9/v1")
    assert Settings().llm_api_base == "http://127.0.0.1:9/v1"
