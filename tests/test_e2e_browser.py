"""End to end: `streamlit run streamlit_app.py` on 127.0.0.1, driven by Debian's headless Chromium.

Needs `pip install playwright` (the Python package only; no browser download) and
`apt-get install chromium`. Run with `pytest -m e2e`. The screenshot lands in the test's tmp dir
(its path is printed; `pytest -m e2e -s` shows it).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks._server import streamlit_server
from rag_app.text import prompts
from rag_app.config import Settings
from tests.conftest import write_medquad

pytestmark = pytest.mark.e2e

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


def _start_app(tmp_path: Path, embed_model, **settings: str):
    """Start `streamlit run` over a small fresh index with extra MEDQA_* settings; yields its URL, stops it afterwards."""
    from rag_app.index.build import build_index

    corpus = write_medquad(tmp_path / "medquad")
    storage = tmp_path / "storage"
    build_index(Settings(storage_dir=storage, corpus=[str(corpus)]), embed_model=embed_model, show_progress=False)
    env = {
        **os.environ,
        "MEDQA_STORAGE_DIR": str(storage),
        "MEDQA_CORPUS": str(corpus),
        "HF_HUB_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
        **{f"MEDQA_{k.upper()}": v for k, v in settings.items()},
    }
    yield from _serve(env, tmp_path)


def _serve(env: dict[str, str], tmp_path: Path):
    """`streamlit run streamlit_app.py` on a free loopback port; yields its URL once healthy, stops it afterwards."""
    log = tmp_path / "streamlit.log"
    try:
        with streamlit_server(env, log, timeout=90) as (url, _):
            yield url
    finally:
        print(f"streamlit log: {log}")


@pytest.fixture()
def app_url(tmp_path, embed_model, bundled_llm_dir):
    """The app with the bundled base model and short answers."""
    yield from _start_app(tmp_path, embed_model, llm=str(bundled_llm_dir), max_new_tokens="32")


@pytest.fixture()
def default_app_url(tmp_path, embed_model):
    """The app as `make run` starts it: no model setting, so the shipped retrieval-aware model answers."""
    yield from _start_app(tmp_path, embed_model)


@contextlib.contextmanager
def _page(url: str, height: int = 1400, timeout: float = 180_000, **options: Any):
    """A headless Chromium page on ``url`` once its chat box is there (the first session loads the models)."""
    _need(Path(CHROMIUM).is_file(), f"{CHROMIUM} missing: apt-get install chromium")
    try:
        from playwright import sync_api
    except ImportError:
        _need(False, "playwright missing: pip install playwright (no browser download needed)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": height}, **options)
            page.goto(url)
            page.get_by_test_id("stChatInputTextArea").wait_for(timeout=timeout)
            yield page
        finally:
            browser.close()


def _wait_answer(answer, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = answer.inner_text()
        if prompts.MEDICAL_NOTICE in text and "total" in text:
            return text
        time.sleep(0.1)
    pytest.fail(f"no complete answer in time; last text: {answer.inner_text()!r}")


def test_default_model_answers_what_is_gout_with_a_cited_source(default_app_url: str, tmp_path: Path) -> None:
    """Out of the box: the shipped fine-tune answers, cites [n], shows that source's link, never repeats itself."""
    from eval.metrics import cited_numbers
    from rag_app.text.repetition import repeats

    with _page(default_app_url, timeout=240_000) as page:  # the first session merges the shipped adapter
        box = page.get_by_test_id("stChatInputTextArea")
        sidebar = page.get_by_test_id("stSidebar")
        sidebar.get_by_text("Answering with").wait_for(timeout=60_000)
        assert "smollm2-135m-raft (retrieval-aware fine-tune)" in sidebar.inner_text()
        box.fill("What is gout?")
        box.press("Enter")
        answer = page.get_by_test_id("stChatMessage").nth(1)
        answer.wait_for(timeout=120_000)
        text = _wait_answer(answer).split(prompts.MEDICAL_NOTICE)[0]
        assert not repeats(text), text
        cited = cited_numbers(text)
        assert cited, f"no [n] citation in {text!r}"
        page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=30_000)
        expander = answer.get_by_test_id("stExpander")
        expander.locator("summary").click()
        expander.locator("details[open]").wait_for(timeout=15_000)
        sources = expander.inner_text()
        assert f"[{cited[0]}] Gout" in sources and "✅ cited" in sources
        expander.locator('a[href="https://www.nih.gov/test/gout"]').first.wait_for(state="visible", timeout=15_000)
        page.wait_for_timeout(500)
        shot = tmp_path / "default-model.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")


def test_browser_asks_and_gets_streamed_answer_with_sources(app_url: str, tmp_path: Path) -> None:
    with _page(app_url) as page:
        box = page.get_by_test_id("stChatInputTextArea")
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


@pytest.fixture()
def long_app_url(tmp_path, embed_model, bundled_llm_dir):
    """The app with the bundled base model; no repetition stop, so a long answer runs until Stop is pressed.

    It answers through transformers (about 20 tokens/s): llama.cpp can finish an answer before the click lands.
    """
    yield from _start_app(tmp_path, embed_model, llm=str(bundled_llm_dir), max_new_tokens="48", stop_on_repeat="false",
                          llm_backend="transformers")


def _ask(page, question: str, nth: int, timeout: float = 240) -> tuple[Any, str]:
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(question)
    box.press("Enter")
    answer = page.get_by_test_id("stChatMessage").nth(nth)
    answer.wait_for(timeout=120_000)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = answer.inner_text()
        if "total" in text:
            page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=30_000)
            return answer, answer.inner_text()
        time.sleep(0.1)
    pytest.fail(f"no complete answer in time; last text: {answer.inner_text()!r}")


def test_conversation_follow_up_clarify_stop_feedback_and_download(long_app_url: str, tmp_path: Path) -> None:
    """A follow-up finds its topic; an unclear first message gets a question back; Stop, feedback and download work."""
    import json

    storage = tmp_path / "storage"
    with _page(long_app_url, height=1600, accept_downloads=True) as page:
        _ask(page, "What is gout?", 1)
        second, text = _ask(page, "How is it treated?", 3)
        assert "Searched for: How is gout treated?" in text
        expander = second.get_by_test_id("stExpander")
        expander.locator("summary").click()
        expander.locator("details[open]").wait_for(timeout=15_000)
        sources = expander.inner_text()
        assert "📚 Sources" in sources and "[1] Gout" in sources
        assert "colchicine" in sources  # the gout treatment page is among the sources shown

        # Feedback: thumbs down with a comment, appended to <storage>/feedback.jsonl.
        second.get_by_test_id("stFeedback").locator("button").nth(1).click()
        comment = second.get_by_label("Comment (optional)")
        comment.wait_for(timeout=30_000)
        comment.fill("Too short")
        comment.press("Enter")
        feedback = storage / "feedback.jsonl"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (feedback.is_file() and "Too short" in feedback.read_text()):
            time.sleep(0.2)
        lines = [json.loads(line) for line in feedback.read_text().splitlines()]
        assert lines[0]["rating"] == "down" and lines[-1]["comment"] == "Too short"
        assert lines[-1]["question"] == "How is it treated?" and lines[-1]["searched_for"] == "How is gout treated?"
        assert lines[-1]["answer"] and lines[-1]["sources"][0]["url"] == "https://www.nih.gov/test/gout"
        assert lines[-1]["settings"]["use_rag"] is True

        # Download the conversation as Markdown.
        page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=30_000)
        with page.expect_download(timeout=30_000) as download:
            page.get_by_test_id("stSidebar").get_by_text("Download conversation").click()
        saved = tmp_path / "conversation.md"
        download.value.save_as(saved)
        markdown = saved.read_text()
        assert "**You:** How is it treated?" in markdown and "_Searched for: How is gout treated?_" in markdown
        assert "https://www.nih.gov/test/gout" in markdown

        # A new conversation: an unclear first message gets a clarifying question, no sources.
        page.get_by_test_id("stSidebar").get_by_text("Clear conversation").click()
        page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=30_000)
        deadline = time.monotonic() + 30
        while page.get_by_test_id("stChatMessage").count() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert page.get_by_test_id("stChatMessage").count() == 0
        clarify, text = _ask(page, "How is it treated?", 1)
        assert "Which condition do you mean?" in text and clarify.get_by_test_id("stExpander").count() == 0

        # Stop a long answer midway (answer length slider at its maximum): it stays as far as it got, and the
        # chat goes on.
        page.get_by_test_id("stSidebar").get_by_role("slider").nth(2).focus()
        page.keyboard.press("End")
        page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=30_000)
        box = page.get_by_test_id("stChatInputTextArea")
        box.fill("Tell me everything about asthma")
        box.press("Enter")
        answer = page.get_by_test_id("stChatMessage").nth(3)
        stop = answer.get_by_role("button", name="⏹ Stop")
        stop.wait_for(timeout=120_000)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(answer.inner_text().split()) < 12:
            time.sleep(0.05)
        stop.click()
        deadline = time.monotonic() + 60
        stopped = ""
        while time.monotonic() < deadline and "(stopped before the end)" not in stopped:
            stopped = page.get_by_test_id("stChatMessage").nth(3).inner_text()
            time.sleep(0.1)
        assert "(stopped before the end)" in stopped and prompts.MEDICAL_NOTICE not in stopped, stopped
        # The run that Stop started redraws the message; until it has, the old run's elements may still show (the
        # status widget can be hidden between the two runs, so wait for the button itself).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "⏹ Stop" in stopped:
            time.sleep(0.2)
            stopped = page.get_by_test_id("stChatMessage").nth(3).inner_text()
        assert "⏹ Stop" not in stopped and len(stopped.split()) < 300  # far from the 1,024-token budget
        page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=60_000)
        _ask(page, "What is anemia?", 5)
        shot = tmp_path / "conversation.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")


@pytest.fixture()
def fresh_app_url(tmp_path):
    """The app as on a fresh clone: empty storage (no index, no converted model), the full MedQuAD corpus."""
    from tests.conftest import SHARED_MEDQUAD

    _need(SHARED_MEDQUAD.is_dir(), f"needs {SHARED_MEDQUAD}")
    env = {**os.environ, "MEDQA_STORAGE_DIR": str(tmp_path / "storage"), "MEDQA_CORPUS": str(SHARED_MEDQUAD),
           "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}
    started = time.monotonic()
    for url in _serve(env, tmp_path):
        yield url, started


def test_fresh_start_answers_while_the_index_is_still_building(fresh_app_url, tmp_path: Path) -> None:
    """Fresh storage: the chat box shows at once, and a question is answered from the part indexed so far."""
    from eval.metrics import cited_numbers

    url, started = fresh_app_url
    with _page(url, timeout=240_000) as page:
        chat_box_s = time.monotonic() - started
        sidebar = page.get_by_test_id("stSidebar")
        sidebar.get_by_text("Building in the background").wait_for(timeout=60_000)
        answer, text = _ask(page, "What is gout?", 1, timeout=400)
        answered_s = time.monotonic() - started
        assert "still being built" in text, text
        assert cited_numbers(text.split(prompts.MEDICAL_NOTICE)[0]), text
        assert "Building in the background" in sidebar.inner_text(), "the build finished before the answer: nothing shown"
        shot = tmp_path / "fresh-start.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"fresh start: chat box after {chat_box_s:.0f} s, first answer after {answered_s:.0f} s; screenshot: {shot}")
