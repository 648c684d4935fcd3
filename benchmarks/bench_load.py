"""The chat under load: several people at once against `streamlit run`, in real (headless Chromium) browsers.

    python benchmarks/bench_load.py                       # 4 sessions, 10 minutes, one Rebuild at 5 minutes
    python benchmarks/bench_load.py --sessions 2 --minutes 2 --rebuild-at 1     # a short run

Starts ``streamlit run streamlit_app.py`` on 127.0.0.1 (loopback only) over a small index of two MedQuAD collections
(NIHSeniorHealth and CDC, built once under ``<storage>/bench-load``), with the app's defaults (the shipped model,
the re-ranker). First one session asks alone (the baseline, same run); then ``--sessions`` sessions each hold a
conversation after another (a patient-style question, then a follow-up) until ``--minutes`` pass, and session 1
presses the sidebar's "Rebuild index" at ``--rebuild-at`` minutes. Needs Debian's ``chromium`` and the
``playwright`` package (no browser download).

Reported: answers served, errors (an exception or an error box in the page, or no answer within 3 minutes), time to
first token as the app measures it (p50/p95, against the lone session's), the answer time a person waits in the
browser, and the server's memory (resident set of the process and its children) every 30 s: after warm-up (``--warm-up``
minutes, once every session has held a conversation), its peak and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._rows import emit_rows  # noqa: E402
from benchmarks._server import streamlit_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
COLLECTIONS = ("7_SeniorHealth_QA", "9_CDC_QA")
# (question, follow-up), written the way people ask.
CONVERSATIONS = [
    ("my mom is 70 and keeps losing her balance, she fell twice this month. what causes balance problems?", "how is it treated?"),
    ("I was told my eye pressure is high and it could be glaucoma, what is glaucoma exactly?", "can it be prevented?"),
    ("my dad's big toe got red and swollen overnight, the doctor said gout. how do you treat gout?", "will it come back?"),
    ("whats the difference between osteoarthritis and rheumatoid arthritis, my knees hurt all the time", "what are the symptoms?"),
    ("I had chickenpox as a kid, can I still get shingles? my neighbour has it", "how is it treated?"),
    ("my kid came home from school with head lice again, how do we get rid of them", "how do you prevent it?"),
    ("can you get rabies from a bat in the house if you didnt feel a bite", "what are the symptoms?"),
    ("my husband has heart failure and his ankles are swelling, what can he do", "what causes it?"),
]
ANSWER_TIMEOUT_S = 180
FIRST_TOKEN = re.compile(r"first token ([0-9.]+) s · total ([0-9.]+) s")


def build_small_index(storage: Path, corpus_root: Path) -> list[str]:
    """The two collections' index under ``storage`` (built once, then reused); returns the corpus paths."""
    from rag_app.config import Settings
    from rag_app.index.build import build_index

    corpus = [str(corpus_root / c) for c in COLLECTIONS]
    stats = build_index(Settings(storage_dir=storage, corpus=corpus), show_progress=True)
    print(f"index: {stats.summary()}", flush=True)
    return corpus


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    import psutil

    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 1e6


class Session:
    """One person: a browser page holding a conversation after another."""

    def __init__(self, number: int, browser, url: str) -> None:
        self.number, self.browser, self.url = number, browser, url
        self.ttft: list[float] = []
        self.waits: list[float] = []
        self.errors: list[str] = []
        self.rebuilt = False

    async def open(self) -> None:
        self.context = await self.browser.new_context(viewport={"width": 1280, "height": 1600})
        self.page = await self.context.new_page()
        await self.page.goto(self.url)
        await self.page.get_by_test_id("stChatInputTextArea").wait_for(timeout=300_000)

    async def ask(self, message: str) -> None:
        page = self.page
        captions_before = await page.get_by_text(FIRST_TOKEN).count()
        errors_before = await self._error_count()
        box = page.get_by_test_id("stChatInputTextArea")
        await box.fill(message)
        started = time.monotonic()
        await box.press("Enter")
        deadline = started + ANSWER_TIMEOUT_S
        while time.monotonic() < deadline:
            if await page.get_by_text(FIRST_TOKEN).count() > captions_before:
                waited = time.monotonic() - started
                caption = await page.get_by_text(FIRST_TOKEN).last.inner_text()
                found = FIRST_TOKEN.search(caption)
                if found:
                    self.ttft.append(float(found.group(1)))
                self.waits.append(waited)
                break
            if await self._error_count() > errors_before:
                break
            await asyncio.sleep(0.25)
        else:
            self.errors.append(f"session {self.number}: no answer to {message!r} in {ANSWER_TIMEOUT_S} s")
            return
        if await self._error_count() > errors_before:
            text = await page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').last.inner_text()
            self.errors.append(f"session {self.number}: {text.strip()[:200]}")

    async def _error_count(self) -> int:
        return await self.page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').count()

    async def rebuild(self) -> None:
        sidebar = self.page.get_by_test_id("stSidebar")
        await sidebar.get_by_role("button", name="Rebuild index").click()
        self.rebuilt = True
        await self.settle()

    async def converse(self, until: float, first: int, rebuild_at: float | None) -> None:
        i = first
        while time.monotonic() < until:
            question, follow_up = CONVERSATIONS[i % len(CONVERSATIONS)]
            for message in (question, follow_up):
                if time.monotonic() >= until:
                    return
                if rebuild_at is not None and not self.rebuilt and time.monotonic() >= rebuild_at:
                    await self.rebuild()
                await self.ask(message)
            i += 1
            await self.page.get_by_role("button", name="Clear conversation").click()  # a new person, a new topic
            await self.settle(empty=True)

    async def settle(self, empty: bool = False) -> None:
        """Wait until the page has rerun after a click (and, ``empty``, shows no messages), so counts start afresh."""
        page, deadline = self.page, time.monotonic() + 60
        await asyncio.sleep(0.5)
        while time.monotonic() < deadline:
            running = await page.get_by_test_id("stStatusWidget").count()
            if not running and (not empty or not await page.get_by_test_id("stChatMessage").count()):
                return
            await asyncio.sleep(0.25)


async def drive(url: str, sessions: int, minutes: float, rebuild_at: float, server_pid: int) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        alone = Session(0, browser, url)
        await alone.open()
        for message in CONVERSATIONS[0]:  # the baseline: one person, nobody else
            await alone.ask(message)
        await alone.context.close()
        people = [Session(n + 1, browser, url) for n in range(sessions)]
        for person in people:
            await person.open()
        start = time.monotonic()
        until = start + minutes * 60
        memory: list[tuple[float, float]] = []  # (minutes into the run, MB)

        async def sample() -> None:
            while time.monotonic() < until:
                memory.append(((time.monotonic() - start) / 60, tree_rss_mb(server_pid)))
                await asyncio.sleep(30)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(
            person.converse(until, first=n, rebuild_at=start + rebuild_at * 60 if n == 0 else None)
            for n, person in enumerate(people)
        ))
        elapsed = time.monotonic() - start
        sampler.cancel()
        memory.append((elapsed / 60, tree_rss_mb(server_pid)))
        await browser.close()
    return {"alone": alone, "people": people, "memory": memory, "elapsed": elapsed}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warm-up", type=float, default=2.0, help="minutes after which the server's memory counts as warmed up")
    parser.add_argument("--rebuild-at", type=float, default=5.0, help="minutes into the run when session 1 presses Rebuild index")
    parser.add_argument("--corpus", default=os.environ.get("MEDQA_CORPUS") or str(REPO.parent / "shared" / "data" / "medquad"))
    parser.add_argument("--storage-dir", help="where the small index lives (default: <storage>/bench-load)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"{CHROMIUM} is missing: `make browser` (apt-get install chromium)")

    from rag_app.config import Settings

    storage = Path(args.storage_dir) if args.storage_dir else Settings().storage_dir / "bench-load"
    corpus = build_small_index(storage, Path(args.corpus))
    env = {**os.environ, "MEDQA_STORAGE_DIR": str(storage), "MEDQA_CORPUS": ",".join(corpus), "HF_HUB_OFFLINE": "1",
           "ANONYMIZED_TELEMETRY": "False"}
    log = storage / "streamlit.log"
    with streamlit_server(env, log) as (url, server):
        start_mb = tree_rss_mb(server.pid)
        run = asyncio.run(drive(url, args.sessions, args.minutes, args.rebuild_at, server.pid))
    people, alone = run["people"], run["alone"]
    ttft = [t for p in people for t in p.ttft]
    waits = [w for p in people for w in p.waits]
    errors = [e for p in people for e in p.errors] + alone.errors
    base_ttft = statistics.median(alone.ttft) if alone.ttft else float("nan")
    memory = run["memory"]
    # Warm-up: every session has held a whole conversation (each process's caches and arenas have grown once).
    warm_mb = next((mb for at, mb in memory if at >= args.warm_up), memory[-1][1])
    end_mb, peak_mb = memory[-1][1], max(mb for _, mb in memory)
    growth = (end_mb - warm_mb) / warm_mb if warm_mb else float("nan")
    print(f"\n{args.sessions} sessions for {run['elapsed'] / 60:.1f} min on 127.0.0.1 (2 shared cores), small index of "
          f"{', '.join(COLLECTIONS)}; Rebuild pressed by session 1 at {args.rebuild_at:g} min: "
          f"{'yes' if people and people[0].rebuilt else 'no'}; server log {log}")
    print("server memory, MB, every 30 s: " + ", ".join(f"{mb:.0f}" for _, mb in memory))
    for error in errors:
        print(f"error: {error}")
    rows = [
        ("answers served", float(len(waits)), "-", "-", "-"),
        ("errors", float(len(errors)), "-", "-", "0"),
        ("first token p50, s (app's own timing)", pct(ttft, 0.5), f"{base_ttft:.2f} (one session alone)", f"{pct(ttft, 0.5) / base_ttft:.2f}", "-"),
        ("first token p95, s", pct(ttft, 0.95), f"{base_ttft:.2f} (one session alone)", f"{pct(ttft, 0.95) / base_ttft:.2f}", "-"),
        ("answer wait in the browser p50, s", pct(waits, 0.5), f"{statistics.median(alone.waits):.2f} (alone)" if alone.waits else "-", "-", "-"),
        ("answer wait in the browser p95, s", pct(waits, 0.95), "-", "-", "-"),
        ("server memory at start, MB", start_mb, "-", "-", "-"),
        (f"server memory after warm-up ({args.warm_up:g} min), MB", warm_mb, "-", "-", "-"),
        ("server memory, peak, MB", peak_mb, "-", "-", "-"),
        ("server memory at the end, MB", end_mb, f"{warm_mb:.0f} (after warm-up)", f"{1 + growth:.2f}", "<= 1.10"),
    ]
    emit_rows(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
