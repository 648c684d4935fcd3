"""`streamlit run streamlit_app.py` on 127.0.0.1 for the browser benchmarks and tests: a free port, start, health, stop."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]


class ServerStartError(RuntimeError):
    """The chat server exited, or was not healthy in time; the message ends with its log's last lines."""


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(
    env: dict[str, str], log: Path, timeout: float = 120, poll: float = 0.3
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run the chat with ``env`` (loopback only, usage statistics off); yields its URL and process once it is healthy.

    Args:
        env: The server's environment (``MEDQA_*`` settings).
        log: File that receives the server's output.
        timeout: Seconds to wait for the health check.
        poll: Seconds between health checks (how finely a start-up time can be read).

    Raises:
        ServerStartError: If it exits or is not healthy within ``timeout`` seconds.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.address", "127.0.0.1", "--server.port", str(port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise ServerStartError(f"streamlit exited with {proc.returncode}; {log}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServerStartError(f"streamlit was not healthy in {timeout:.0f} s; {log}:\n{log.read_text()[-3000:]}")
            time.sleep(poll)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
