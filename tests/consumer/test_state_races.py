"""Races in the Redis state layer, staged deterministically on the real Redis: a monkeypatched hook
runs another process's call (on its own connection), or empties the script cache, between two real
calls of the code under test."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
import redis

from consumer.alerts.state import PENDING_FIELDS, AlertStore, member
from consumer.observability import Health, Metrics
from consumer.pipeline.count import CountStep
from consumer.pipeline.flow import Waiter
from consumer.state.counters import CounterLayout, CounterStore, Increment
from consumer.state.rates import RateStore
from tests.conftest import REDIS_URL

SUBJECT = ("query", "smart watch")


def _event(alert_id: str, state: str) -> bytes:
    return orjson.dumps({"alert_id": alert_id, "state": state})


@pytest.fixture
def stores(redis_prefix) -> Iterator[tuple[AlertStore, AlertStore]]:
    """The store under test, and another process's store on a connection of its own."""
    client, prefix = redis_prefix
    layout = CounterLayout(prefix.rstrip(":"))
    other = redis.Redis.from_url(REDIS_URL)
    yield AlertStore(client, layout, 3600), AlertStore(other, layout, 3600)
    other.close()


def _after_next_pipeline(monkeypatch, client, hook) -> None:
    """Run `hook` once, right after the next pipeline sent on `client` has executed."""
    make = client.pipeline

    def pipeline(*args, **kwargs):
        pipe = make(*args, **kwargs)
        execute = pipe.execute

        def execute_then_hook(*a, **k):
            out = execute(*a, **k)
            monkeypatch.setattr(client, "pipeline", make)
            hook()
            return out

        pipe.execute = execute_then_hook
        return pipe

    monkeypatch.setattr(client, "pipeline", pipeline)


def _unmarked_pending(store: AlertStore, subject) -> list[str]:
    """Pending events of the subject that no marker points at: a crash would strand them."""
    values = store.client.hmget(store.state_key(subject), *PENDING_FIELDS)
    if store.client.zscore(store.pending_key, member(subject)) is not None:
        return []
    return [field for field, value in zip(PENDING_FIELDS, values) if value is not None]


def _settled_marker(other: AlertStore, now: int) -> None:
    """SUBJECT firing, its event acked, and a marker left by a transition that did not happen."""
    assert other.fire(SUBJECT, "a1", now, _event("a1", "firing"))
    for subject, field, payload in other.pending():
        other.sent(subject, field, payload)
    assert not other.fire(SUBJECT, "a2", now, _event("a2", "firing"))  # already firing: marked, nothing pending
    assert other.client.zscore(other.pending_key, member(SUBJECT)) is not None


def test_a_transition_between_the_scan_reading_markers_and_removing_them_keeps_its_marker(stores, monkeypatch):
    scanner, other = stores
    now = int(time.time() * 1000)
    _settled_marker(other, now)
    resolved = _event("a1", "resolved")
    # The scan reads the marker and the subject's state (nothing pending), then the resolve lands.
    _after_next_pipeline(monkeypatch, scanner.client, lambda: other.resolve(SUBJECT, "a1", now + 900_000, now + 1, resolved))
    assert scanner.pending() == []
    assert _unmarked_pending(scanner, SUBJECT) == []
    assert scanner.pending() == [(SUBJECT, "pending:resolved", resolved)]  # a later scan (another process's) finds it


def test_a_transition_marked_before_the_scan_that_lands_after_it_is_never_left_unmarked(stores, monkeypatch):
    scanner, other = stores
    now = int(time.time() * 1000)
    mark = other._mark

    def mark_then_scan(*args):  # the transition is in flight: marked, its script not yet run
        score = mark(*args)
        scanner.pending()
        return score

    monkeypatch.setattr(other, "_mark", mark_then_scan)
    fired = other.fire(SUBJECT, "a1", now, _event("a1", "firing"))
    assert _unmarked_pending(scanner, SUBJECT) == []
    assert not fired  # the scan removed its marker and closed its mark: refused rather than applied unmarked
    monkeypatch.setattr(other, "_mark", mark)
    assert other.fire(SUBJECT, "a2", now + 1, _event("a2", "firing"))  # the detector's next evaluation
    assert [field for _, field, _ in scanner.pending()] == ["pending:firing"]


def test_every_mark_scores_above_the_last_one(stores):
    store, _ = stores
    last = 4 * 10 ** 15  # a mark the server clock has not reached: one in the same microsecond, or before a clock step back
    store.client.zadd(store.pending_key, {member(SUBJECT): last})
    assert store._mark(SUBJECT, int(time.time() * 1000)) == last + 1
    assert store.client.zscore(store.pending_key, member(SUBJECT)) == last + 1


def test_a_transition_between_an_ack_and_its_cleanup_keeps_its_marker(stores, monkeypatch):
    store, other = stores
    now = int(time.time() * 1000)
    assert store.fire(SUBJECT, "a1", now, _event("a1", "firing"))
    [(subject, field, payload)] = store.pending()
    sent = store._sent
    resolved = _event("a1", "resolved")

    def sent_then_resolve(**kwargs):  # another process resolves right after the ack is recorded
        reply = sent(**kwargs)
        other.resolve(SUBJECT, "a1", now + 900_000, now + 1, resolved)
        return reply

    monkeypatch.setattr(store, "_sent", sent_then_resolve)
    store.sent(subject, field, payload)
    assert _unmarked_pending(store, SUBJECT) == []
    assert store.pending() == [(SUBJECT, "pending:resolved", resolved)]


def test_a_script_cache_emptied_between_load_and_exec_is_retried_and_counted_exactly(redis_prefix, monkeypatch):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":")))
    metrics = Metrics()
    step = CountStep(store, RateStore(store), metrics)
    waiter = Waiter(lambda: None, lambda: None, lambda span: False, lambda: float("inf"), Health(metrics, 30))
    now = int(time.time() * 1000)
    batch = [Increment("query", f"q{i % 3}", "t", 0, i, now, "negative") for i in range(9)]
    store.apply(batch[:3], now)  # an earlier attempt got part of the batch in
    load = redis.client.Pipeline.load_scripts
    flushes = iter([None])

    def load_then_flush(pipe):  # SCRIPT FLUSH, or a failover to a replica with an empty cache, after the load
        load(pipe)
        for _ in flushes:
            client.script_flush()

    monkeypatch.setattr(redis.client.Pipeline, "load_scripts", load_then_flush)
    step.run(batch, [], waiter)
    assert metrics.redis_retries.labels("script_missing")._value.get() == 1
    assert [s.counts for s in store.window_stats_many([(q, n, 3600) for q, n in [("query", "q0"), ("query", "q1"), ("query", "q2")]], now)] \
        == [{"negative": 3}] * 3
