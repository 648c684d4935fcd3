"""End to end: `streamlit run streamlit_app.py` on 127.0.0.1, driven by Debian's headless Chromium.

Needs `pip install playwright` (the Python package only; no browser download) and
`apt-get install chromium`. Run with `pytest -m e2e`. The screenshot lands in the test's tmp dir
(its path is printed; `pytest -m e2e -s` shows it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rag_app import prompts
from rag_app.config import Settings
from tests.conftest import write_medquad

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
QUESTION = "What are the treatments for glaucoma?"


def _need(ok: bool, why: str) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"e2e prerequisites missing in CI: {why}")
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"streamlit did not become healthy in {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture()
def app_url(tmp_path, embed_model, bundled_llm_dir):
    """A running app over a small fresh index; yields its URL, stops it afterwards."""
    from rag_app.index import build_index

    corpus = write_medquad(tmp_path / "medquad")
    storage = tmp_path / "storage"
    build_index(Settings(storage_dir=storage, corpus=[str(corpus)]), embed_model=embed_model, show_progress=False)
    port = _free_port()
    env = {
        **os.environ,
        "MEDQA_STORAGE_DIR": str(storage),
        "MEDQA_CORPUS": str(corpus),
        "MEDQA_LLM": str(bundled_llm_dir),
        "MEDQA_MAX_NEW_TOKENS": "32",
        "HF_HUB_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
    }
    log = tmp_path / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(f"streamlit log: {log}")


def test_browser_asks_and_gets_streamed_answer_with_sources(app_url: str, tmp_path: Path) -> None:
    _need(Path(CHROMIUM).is_file(), f"{CHROMIUM} missing: apt-get install chromium")
    try:
        from playwright import sync_api
    except ImportError:
        _need(False, "playwright missing: pip install playwright (no browser download needed)")

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(app_url)
            box = page.get_by_test_id("stChatInputTextArea")
            box.wait_for(timeout=180_000)  # the first session loads the models
            assert page.get_by_text("Not medical advice").first.is_visible()
            box.fill(QUESTION)
            box.press("Enter")

            answer = page.get_by_test_id("stChatMessage").nth(1)
            answer.wait_for(timeout=60_000)
            states: list[str] = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                text = answer.inner_text()
                if not states or states[-1] != text:
                    states.append(text)
                if prompts.MEDICAL_NOTICE in text and "total" in text:
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"no complete answer in time; last text: {states[-1]!r}")
            partial = [s for s in states if s.strip() and prompts.MEDICAL_NOTICE not in s]
            assert partial, "the answer appeared in pieces (streamed), not all at once"

            # Let the script run finish (the "Running…" status goes away), then open the sources.
            page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=30_000)
            expander = answer.get_by_test_id("stExpander")
            expander.locator("summary").click()
            expander.locator("details[open]").wait_for(timeout=15_000)
            link = expander.locator('a[href="https://www.nih.gov/test/glaucoma"]').first
            link.wait_for(state="visible", timeout=15_000)
            assert "[1] Glaucoma" in expander.inner_text() and "Sources (3)" in expander.inner_text()
            page.wait_for_timeout(500)  # the expander's opening animation

            shot = tmp_path / "chat.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert expander.locator("details[open]").count() == 1, "sources still open in the screenshot"
            print(f"screenshot: {shot}")
        finally:
            browser.close()
