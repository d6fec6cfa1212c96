"""Fixtures for consumer tests: a consumer process factory on unique topics, group and prefix."""

from __future__ import annotations

import signal
import time

import pytest

from consumer.state.counters import CounterLayout, CounterStore
from tests.conftest import REDIS_URL, unique

from .harness import ConsumerProcess, expected_counts, expected_prob_sums

LAYOUT_WINDOWS = (300, 3600, 86400)


@pytest.fixture
def stream(kafka_bootstrap, make_topic, redis_prefix, tiny_checkpoint, tmp_path):
    """Unique input/output/DLQ topics, group and Redis prefix, and a factory for consumer processes."""
    client, prefix = redis_prefix
    topics = {"input": make_topic("in", partitions=4), "output": make_topic("out", partitions=2), "dlq": make_topic("dlq")}
    group = unique("group")
    processes: list[ConsumerProcess] = []

    def start(name: str = "c1", redis_url: str = REDIS_URL, extra: list[str] | None = None,
              env: dict[str, str] | None = None) -> ConsumerProcess:
        proc = ConsumerProcess(bootstrap=kafka_bootstrap, redis_url=redis_url, checkpoint=tiny_checkpoint,
                               input_topic=topics["input"], output_topic=topics["output"], dlq_topic=topics["dlq"],
                               group=group, prefix=prefix.rstrip(":"), log_path=tmp_path / f"{name}.log", extra=extra, env=env)
        processes.append(proc.start())
        return proc

    store = CounterStore(client, CounterLayout(prefix.rstrip(":"), 60, LAYOUT_WINDOWS))
    yield {"topics": topics, "group": group, "start": start, "store": store, "client": client, "bootstrap": kafka_bootstrap}
    for proc in processes:
        if proc.proc and proc.proc.poll() is None:
            proc.stop(signal.SIGKILL)


def assert_counters_exact(store: CounterStore, events: dict[str, dict]) -> None:
    """Counts equal the unique outputs; probability sums equal their calibrated probs (to the micro-unit rounding)."""
    now = int(time.time() * 1000)
    sums = expected_prob_sums(events)
    for (kind, name), expected in expected_counts(events).items():
        assert store.window_stats_many([(kind, name, 300)], now)[0].counts == expected, (kind, name)
        stats = store.window_stats_many([(kind, name, 86400)], now)[0]
        assert stats.counts == expected, (kind, name)
        n = sum(expected.values())
        for label, total in sums[(kind, name)].items():
            assert abs(stats.prob_sums.get(label, 0.0) - total) <= 2e-6 * n, (kind, name, label)


