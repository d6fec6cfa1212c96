"""The dashboard a demo shows: `consumer serve` on the demo's counters, with the consumer's metrics."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving_dashboard(*, port: int, redis_url: str, prefix: str, metrics_port: int, log_path: Path, cwd: Path) -> Iterator[str | None]:
    """Start `consumer serve` on 127.0.0.1:port; yields its URL, or None (and says why) when it did not come up."""
    cmd = [sys.executable, "-m", "consumer", "serve", "--port", str(port), "--redis-url", redis_url, "--redis-prefix", prefix,
           "--metrics-url", f"http://127.0.0.1:{metrics_port}/metrics"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "openapi.json", timeout=1)
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        if proc.poll() is not None:
            reason = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            print(f"the dashboard did not start ({reason[0]}); the demo goes on without it (--dashboard-port picks another port)", flush=True)
            yield None
        else:
            print(f"dashboard: {url}  (open it in a browser; it follows the demo live)", flush=True)
            yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
