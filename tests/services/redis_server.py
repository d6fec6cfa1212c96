"""A private redis-server on a free port, for tests that stop and restart Redis."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from tests.consumer.harness import free_port


def wait_for_ping(port: int, timeout: float = 10.0) -> None:
    client = redis.Redis(port=port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not start")


class RedisServer:
    def __init__(self, directory: Path, *args: str) -> None:
        self.dir = directory
        self.args = list(args)  # extra redis-server options, e.g. "--maxmemory-policy", "allkeys-lru"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
                        "--daemonize", "yes", "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                        "--pidfile", str(self.dir / "redis.pid"), "--logfile", str(self.dir / "redis.log"), *self.args], check=True)
        wait_for_ping(self.port)

    def stop(self) -> None:
        try:
            redis.Redis(port=self.port).shutdown(nosave=False)
        except redis.ConnectionError:
            pass  # shutdown closes the connection by design

    def __enter__(self) -> "RedisServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
