"""Chat app latency: cold start to first answer, and first-token latency, on the configured model.

    python benchmarks/bench_app.py                       # in-process: the calls the app makes, in its order
    python benchmarks/bench_app.py --browser             # the real thing: `streamlit run` + headless Chromium
    MEDQA_STORAGE_DIR=/path/to/storage MEDQA_LLM=bundled:smollm2-135m-instruct python benchmarks/bench_app.py --browser

Settings come from MEDQA_* as for the app. When the configured storage has no index, a small one
(``--limit-docs`` documents of the corpus) is built in a temp dir first, untimed. Model
conversion (GGUF → checkpoint) is done before timing too: "cold" means a fresh process with
models cached on disk, as for a second `make run`.

In-process figures: cold start = imports + embedding model + retriever (Chroma + BM25 over the
index) + LLM + engine, then the first answer; first-token latency = question submitted to the
first streamed text (retrieval + prompt + prefill), median over ``--questions``.

Browser figures (``--browser``): launch → server healthy → chat box shown (the first session
loads the models) → first token on screen → first answer complete; then first-token latency as
the browser sees it, median over ``--questions``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from benchmarks._server import streamlit_server  # noqa: E402

QUESTIONS = [
    "What are the treatments for glaucoma?",
    "What are the symptoms of gout?",
    "How is asthma diagnosed?",
    "What causes anemia?",
    "Is high blood pressure inherited?",
    "What is the outlook for psoriasis?",
]


def prepare(args: argparse.Namespace) -> dict[str, str]:
    """MEDQA_* variables for a run: the configured index, or a small temp one; the LLM converted."""
    from rag_app.config import Settings
    from rag_app.index.build import build_index
    from rag_app.index.chroma import index_status
    from rag_app.llm.resolve import resolve_llm

    settings = Settings()
    env = {}
    if not index_status(settings).get("exists"):
        from corpus import load_corpus

        storage = Path(tempfile.mkdtemp(prefix="medqa-bench-app-"))
        settings = Settings(storage_dir=storage)
        docs, _ = load_corpus(settings.corpus)
        docs = docs[: args.limit_docs]
        print(f"no index in the configured storage: building one of {len(docs)} documents in {storage} (untimed)", flush=True)
        build_index(settings, documents=docs, show_progress=False)
        env["MEDQA_STORAGE_DIR"] = str(storage)
    status = index_status(settings)
    resolved = resolve_llm(settings)  # converts the bundled GGUF once, outside the timings
    print(
        f"index: {status['chunks']:,} chunks in {settings.storage_dir}; LLM: {resolved.name} ({resolved.path})"
        f"; max_new_tokens={settings.max_new_tokens}",
        flush=True,
    )
    return env


def in_process(args: argparse.Namespace) -> dict[str, float]:
    """Run in a fresh interpreter so imports and loads are cold."""
    code = r"""
import json, statistics, sys, time
t0 = time.perf_counter()
from app import session as chat
from rag_app.config import Settings
from rag_app.answer.engine import build_query_engine
from rag_app.llm.load import load_embed_model, load_llm
from rag_app.retrieval.modes import build_retriever
settings = Settings()
t_import = time.perf_counter()
embed = load_embed_model(settings)
t_embed = time.perf_counter()
retriever = build_retriever(settings, embed_model=embed)
t_retr = time.perf_counter()
llm = load_llm(settings)
base = build_query_engine(settings, use_rag=False, streaming=True, llm=llm)
t_llm = time.perf_counter()
options = chat.ChatOptions.from_settings(settings)
questions = json.loads(sys.argv[1])

def ask(q):
    engine = chat.request_engine(base, options, llm, retriever)
    start = time.perf_counter(); first = None
    response = engine.query(q)
    for delta in response.response_gen:
        if first is None:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start

first, total = ask(questions[0])
t_answer = time.perf_counter()
warm = [ask(q) for q in questions[1:]]
print(json.dumps({
    "imports_s": t_import - t0, "embed_model_s": t_embed - t_import, "retriever_s": t_retr - t_embed,
    "llm_s": t_llm - t_retr, "first_answer_first_token_s": first, "first_answer_total_s": total,
    "cold_to_first_answer_s": t_answer - t0,
    "first_token_median_s": statistics.median([f for f, _ in warm]) if warm else first,
    "answer_median_s": statistics.median([t for _, t in warm]) if warm else total,
}))
"""
    import json

    env = {**os.environ, **args.env}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(QUESTIONS[: args.questions + 1])],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        sys.exit(f"benchmark process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def browser(args: argparse.Namespace) -> dict[str, float]:
    """`streamlit run` + Playwright/Chromium, timed from the launch."""
    from playwright.sync_api import sync_playwright

    env = {**os.environ, **args.env}
    log = Path(tempfile.mkdtemp(prefix="bench-app-")) / "streamlit.log"
    figures: dict[str, float] = {}
    t0 = time.perf_counter()
    with streamlit_server(env, log, timeout=600, poll=0.1) as (url, _):
        figures["server_healthy_s"] = time.perf_counter() - t0
        with sync_playwright() as p:
            chromium = p.chromium.launch(
                executable_path=args.chromium, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                      "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"],
            )
            page = chromium.new_page()
            page.goto(url)
            box = page.get_by_test_id("stChatInputTextArea")
            box.wait_for(timeout=600_000)
            figures["chat_ready_s"] = time.perf_counter() - t0

            def ask(question: str, n: int) -> tuple[float, float]:
                box.fill(question)
                start = time.perf_counter()
                box.press("Enter")
                answer = page.get_by_test_id("stChatMessage").nth(2 * n + 1)
                answer.wait_for(timeout=600_000)
                first = None
                while True:  # the streamed text ends in "▌" until the answer is complete
                    text = answer.inner_text()
                    if first is None and ("▌" in text or "total " in text):
                        first = time.perf_counter() - start
                    if "total " in text:
                        return first, time.perf_counter() - start
                    time.sleep(0.01)

            first, total = ask(QUESTIONS[0], 0)
            figures["first_answer_first_token_s"] = first
            figures["cold_to_first_answer_s"] = time.perf_counter() - t0
            page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=60_000)
            warm = []
            for i, q in enumerate(QUESTIONS[1 : args.questions + 1], start=1):
                warm.append(ask(q, i))
                page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=60_000)
            if warm:
                figures["first_token_median_s"] = statistics.median(f for f, _ in warm)
                figures["answer_median_s"] = statistics.median(t for _, t in warm)
            chromium.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--browser", action="store_true", help="drive the real app with headless Chromium")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--questions", type=int, default=5, help="warm questions for the first-token median")
    parser.add_argument("--limit-docs", type=int, default=500, help="size of the temp index when none exists")
    parser.add_argument("--json", help="also write the rows (figure, value, baseline, ratio, target) to this file")
    args = parser.parse_args()
    args.env = prepare(args)
    figures = browser(args) if args.browser else in_process(args)
    mode = "browser (streamlit run + Chromium)" if args.browser else "in-process (the app's calls)"
    print(f"\n{mode}:")
    for name, value in figures.items():
        print(f"  {name:34s} {value:8.2f}")
    if args.json:
        rows = [{"figure": f"chat {name}", "value": value, "baseline": "-", "ratio": "-", "target": "-"} for name, value in figures.items()]
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
