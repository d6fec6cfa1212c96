"""The consumer process a demo runs: its own topics, a log file, and a clean stop."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic


@contextmanager
def consumer_on_demo_topics(bootstrap: str, topics: list[str], cmd: list[str], log_path: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    """Create `topics`, start `cmd` logging to `log_path`; on exit stop it (SIGTERM, as an operator would) and delete the topics."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, num_partitions=2, replication_factor=1) for t in topics]).values():
        future.result(timeout=30)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"starting the consumer (log: {log_path.relative_to(cwd)})", flush=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        for future in admin.delete_topics(topics).values():
            future.result(timeout=30)
