"""Spike detection and alert lifecycle: the detector on real Redis, then the whole consumer on real Kafka."""

from __future__ import annotations

import http.server
import threading
import time

import orjson
import pytest

from consumer.alerts.detector import MAX_BASELINES, SpikeDetector
from consumer.alerts.state import AlertStore
from consumer.state.counters import CounterLayout, CounterStore, Increment, WindowStats
from consumer.state.rates import RateStore
from model_runtime.stats.spikes import SpikeRule

from .harness import free_port, mixed_events, pick_texts, produce, read_topic

MINUTE = 60_000


class Feed:
    """Writes labelled increments straight into the counters, as the consumer would."""

    def __init__(self, store: CounterStore) -> None:
        self.store, self.offset = store, 0

    def add(self, query: str, negative: int, other: int, ts_ms: int) -> None:
        labels = ["negative"] * negative + ["positive"] * other
        incs = []
        for label in labels:
            incs.append(Increment("query", query, "t", 0, self.offset, ts_ms, label))
            self.offset += 1
        self.store.apply(incs, int(time.time() * 1000))


@pytest.fixture
def detector_env(redis_prefix):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":")))

    def detector(cooldown_s: int = 900) -> SpikeDetector:
        return SpikeDetector(store, AlertStore(client, store.layout, 86400 + 300 + cooldown_s + 3600), RateStore(store), SpikeRule(),
                             "5m", 86400, cooldown_s)

    return store, Feed(store), detector


def test_one_firing_for_the_spike_none_for_steady_queries_then_resolved(detector_env):
    store, feed, detector = detector_env
    now = int(time.time() * 1000)
    queries = [f"steady query {i}" for i in range(12)] + ["smart watch"]
    for q in queries:
        feed.add(q, negative=20, other=180, ts_ms=now - 60 * MINUTE)  # baseline: 10% negative, 200 events
        feed.add(q, negative=3, other=27, ts_ms=now - MINUTE)  # short window: steady
    feed.add("smart watch", negative=40, other=0, ts_ms=now - MINUTE)  # the spike
    feed.add("tiny query", negative=2, other=0, ts_ms=now - MINUTE)  # 2/2 negative, too few

    d = detector()
    fired = d.check([("query", q) for q in queries + ["tiny query"]], now)
    assert [(a["query"], a["state"]) for a in fired] == [("smart watch", "firing")]
    alert = fired[0]
    assert alert["count"] == 70 and alert["negative_share"] == pytest.approx(43 / 70, abs=1e-4)
    assert alert["baseline_share"] == pytest.approx(0.1) and alert["statistic"] > 5
    assert d.check([("query", "smart watch")], now) == []  # dedup while firing
    assert detector().check([("query", "smart watch")], now) == []  # a restarted or second process too

    feed.add("smart watch", negative=0, other=400, ts_ms=now - MINUTE)  # the share falls back
    resolved = d.check([("query", "smart watch")], now)
    assert [(a["state"], a["alert_id"]) for a in resolved] == [("resolved", alert["alert_id"])]
    assert resolved[0]["resolved_at"] is not None
    assert [a["state"] for a in d.alerts.read()] == ["resolved"]

    feed.add("smart watch", negative=300, other=0, ts_ms=now - MINUTE)  # a new spike inside the cooldown
    assert d.check([("query", "smart watch")], now) == []
    later = now + 16 * MINUTE  # after the 15-minute cooldown, it may fire again
    feed.add("smart watch", negative=60, other=0, ts_ms=later - MINUTE)
    assert [a["state"] for a in d.check([("query", "smart watch")], later)] == ["firing"]


def test_two_detectors_racing_fire_once(detector_env):
    store, feed, detector = detector_env
    now = int(time.time() * 1000)
    feed.add("gaming chair", negative=30, other=10, ts_ms=now - MINUTE)
    results = []
    barrier = threading.Barrier(4)

    def run() -> None:
        d = detector()
        barrier.wait()
        results.extend(d.check([("query", "gaming chair")], now))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a["state"] for a in results] == ["firing"]


class CountedSubject(tuple):
    """A subject that counts how often it is hashed: each dict operation on it hashes it once."""

    hashes = 0

    def __hash__(self) -> int:
        CountedSubject.hashes += 1
        return tuple.__hash__(self)


def test_baselines_are_bounded_forgetting_the_least_recently_used_without_a_pass_over_all(detector_env):
    store, feed, detector = detector_env
    now = int(time.time() * 1000)
    for query in ("smart watch", "phone case", "usb cable"):
        feed.add(query, negative=30, other=0, ts_ms=now - MINUTE)  # volume and share enough to need a baseline
    d = detector()
    recent = (time.monotonic(), WindowStats(), {})  # read just now: nothing is re-read
    d._baselines[("query", "smart watch")] = recent  # the least recently used of a full cache, until used again
    others = [CountedSubject(("query", f"seen {i}")) for i in range(1, MAX_BASELINES)]
    for subject in others:
        d._baselines[subject] = recent

    d.check([("query", "smart watch"), ("query", "phone case")], now)
    assert len(d._baselines) == MAX_BASELINES
    assert ("query", "smart watch") in d._baselines and ("query", "phone case") in d._baselines
    assert others[0] not in d._baselines and others[1] in d._baselines

    CountedSubject.hashes = 0
    d.check([("query", "usb cable")], now)  # one more: one forgotten, the rest untouched
    assert CountedSubject.hashes <= 10
    assert len(d._baselines) == MAX_BASELINES and others[1] not in d._baselines and others[2] in d._baselines


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        Hook.received.append(orjson.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_consumer_alerts_end_to_end(stream, tiny_checkpoint):
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    pools = pick_texts(tiny_checkpoint)
    alerts_topic = f"{topics['output']}-alerts"
    now = int(time.time() * 1000)
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    Hook.received = []
    flags = ["--alert-eval-interval-s", "0", "--alert-webhook", f"http://127.0.0.1:{hook.server_port}/hook"]

    steady = [f"steady {i}" for i in range(6)]
    backlog = []
    for q in steady + ["smart watch"]:
        backlog += mixed_events(q, pools, 20, 180, now - 60 * MINUTE, f"base-{q}")  # baseline 10% negative, 200 events
        backlog += mixed_events(q, pools, 3, 27, now - MINUTE, f"short-{q}")  # steady short window
    backlog += mixed_events("tiny query", pools, 2, 0, now - MINUTE, "tiny")
    produce(bootstrap, topics["input"], backlog)
    consumer = stream["start"]("alerts-1", extra=flags)
    read_topic(bootstrap, topics["output"], expect=len(backlog), timeout=180)
    produce(bootstrap, topics["input"], mixed_events("smart watch", pools, 40, 0, now - MINUTE, "spike"))
    fired = read_topic(bootstrap, alerts_topic, expect=2, timeout=120, settle=3)
    alerts = [orjson.loads(m.value()) for m in fired]
    # One alert per spiking subject: the query, and its product (which shares its traffic here).
    assert sorted((a["subject"], a["query"] or a["product_id"], a["state"]) for a in alerts) == [
        ("product", "p-smart watch", "firing"), ("query", "smart watch", "firing")]
    assert {m.key() for m in fired} == {b"smart watch", b"p-smart watch"}
    deadline = time.monotonic() + 20
    while len(Hook.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sorted(a["alert_id"] for a in Hook.received) == sorted(a["alert_id"] for a in alerts)
    query_alert = next(a for a in alerts if a["subject"] == "query")

    # Restart while firing, with a webhook that is down: more spike traffic must not re-fire,
    # and recovery must still reach Kafka without the webhook holding anything up.
    assert consumer.stop() == 0
    dead_hook = ["--alert-eval-interval-s", "0", "--alert-webhook", f"http://127.0.0.1:{free_port()}/down",
                 "--alert-webhook-timeout-s", "0.5"]
    consumer = stream["start"]("alerts-2", extra=dead_hook)
    produce(bootstrap, topics["input"], mixed_events("smart watch", pools, 20, 0, now - MINUTE, "spike-more"))
    recovery = mixed_events("smart watch", pools, 0, 400, now - MINUTE, "recover")
    produce(bootstrap, topics["input"], recovery)
    total = len(backlog) + 40 + 20 + len(recovery)
    labelled = read_topic(bootstrap, topics["output"], expect=total, timeout=180)
    assert len({orjson.loads(m.value())["event_id"] for m in labelled}) == total
    alerts = [orjson.loads(m.value()) for m in read_topic(bootstrap, alerts_topic, expect=4, timeout=60, settle=3)]
    on_query = [(a["state"], a["alert_id"]) for a in alerts if a["subject"] == "query"]
    assert on_query == [("firing", query_alert["alert_id"]), ("resolved", query_alert["alert_id"])]
    assert len(alerts) == 4  # the product's spike resolved too; nothing re-fired after the restart
    assert consumer.stop() == 0
    assert any(line.get("msg") == "webhook post failed" for line in consumer.logs())
    hook.shutdown()
