"""The consumer process a demo runs: its own topics, a log file, and a clean stop."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic


@contextmanager
def demo_topics(bootstrap: str, topics: list[str], partitions: int = 2) -> Iterator[None]:
    """Create `topics` for one demo run; delete them on exit."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics]).values():
        future.result(timeout=30)
    try:
        yield
    finally:
        for future in admin.delete_topics(topics).values():
            future.result(timeout=30)


@contextmanager
def running_consumer(cmd: list[str], log_path: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    """Start `cmd` logging to `log_path`; on exit stop it (SIGTERM, as an operator would)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"starting a consumer (log: {log_path.relative_to(cwd)})", flush=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


@contextmanager
def consumer_on_demo_topics(bootstrap: str, topics: list[str], cmd: list[str], log_path: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    """`topics` created, `cmd` running on them; on exit the consumer stops, then the topics go."""
    with demo_topics(bootstrap, topics), running_consumer(cmd, log_path, cwd) as proc:
        yield proc
