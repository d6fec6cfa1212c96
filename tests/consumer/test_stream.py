"""The consumer against the real Kafka broker and the real Redis server."""

from __future__ import annotations

import signal
import time
import urllib.request

import jsonschema
import orjson
import redis

from consumer.state.counters import CounterStore
from schemas import load_schema
from tests.schemas.test_events import _registry

from .conftest import assert_counters_exact
from .harness import committed, labelled_by_id, make_events, produce, read_topic, wait_committed

INVALID = [
    (b"\xff\xfe not utf8", "not_utf8"),
    (b"{not json", "not_json"),
    (b'{"event_type": "click", "schema_version": 1}', "unknown_event_type"),
    (b'{"event_type": "review", "schema_version": 2, "event_id": "x", "ts": 0, "product_id": "p", "text": "t"}', "unsupported_schema_version"),
    (orjson.dumps({"event_type": "review", "schema_version": 1, "event_id": "x", "ts": "soon", "product_id": "p", "text": "t"}), "bad_timestamp"),
    (orjson.dumps({"event_type": "review", "schema_version": 1, "event_id": "x", "ts": 1796131800000, "product_id": "p", "text": "  "}), "empty_text"),
    (orjson.dumps({"event_type": "search_result", "schema_version": 1, "event_id": "x", "ts": 1796131800000, "product_id": "p", "text": "t", "title": "", "rank": 1}), "missing_field"),
    (orjson.dumps({"event_type": "review", "schema_version": 1, "event_id": "x", "ts": 1796131800000, "product_id": "p", "text": "t" * 20000}), "text_too_long"),
    (b"x" * 70000, "message_too_large"),
]


def test_labels_valid_dead_letters_invalid_counts_exactly_and_exits_cleanly(stream):
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    events = make_events(60, seed=1)
    future = events[-1]
    future["ts"] = int(time.time() * 1000) + 10 * 60_000  # a producer's clock 10 minutes ahead
    produce(bootstrap, topics["input"], [orjson.dumps(e) for e in events] + [raw for raw, _ in INVALID])
    proc = stream["start"](extra=["--kafka-config", "sasl.password=hunter2-secret"])

    labelled = read_topic(bootstrap, topics["output"], expect=len(events))
    dead = read_topic(bootstrap, topics["dlq"], expect=len(INVALID))
    by_id, seen = labelled_by_id(labelled)
    assert set(by_id) == {e["event_id"] for e in events}
    assert max(seen.values()) == 1
    validator = jsonschema.Draft202012Validator(load_schema("labelled"), registry=_registry())
    for event in events:
        out = by_id[event["event_id"]]
        validator.validate(out)
        assert {k: out[k] for k in event} == event
        assert out["model"]["version"] and out["sentiment"]["label"] in ("negative", "neutral", "positive")
    keys = {msg.key().decode() for msg in labelled}
    assert keys == {by_id[e["event_id"]]["query_norm"] for e in events}

    codes = sorted(orjson.loads(msg.value())["error_code"] for msg in dead)
    assert codes == sorted(code for _, code in INVALID)
    dlq_validator = jsonschema.Draft202012Validator(load_schema("dead_letter"), registry=_registry())
    for msg in dead:
        dlq_validator.validate(orjson.loads(msg.value()))

    # Committed offsets trail the outputs: wait for the commit of the last batch (every offset, dead-lettered too).
    expect = len(events) + len(INVALID)
    assert wait_committed(bootstrap, stream["group"], topics["input"], 4, expect, timeout=30) == expect
    # Published, but not counted: event time is in the future (said in a metric and a log line).
    assert_counters_exact(stream["store"], {k: v for k, v in by_id.items() if k != future["event_id"]})

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5).read().decode()
    assert 'sentiment_events_dead_lettered_total{error_code="not_utf8"} 1.0' in metrics
    assert 'sentiment_events_not_counted_total{reason="future"} 1.0' in metrics
    assert f'sentiment_events_in_total{{topic="{topics["input"]}"}} {float(len(events) + len(INVALID))}' in metrics
    health = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/healthz", timeout=5).read())
    assert health["status"] == "ok"

    assert proc.stop(signal.SIGTERM) == 0
    assert committed(bootstrap, stream["group"], topics["input"], 4) == len(events) + len(INVALID)
    text = proc.log_path.read_text()
    assert "hunter2-secret" not in text
    assert any(line.get("msg") == "model loaded" and line.get("model_version") for line in proc.logs())
    assert any(line.get("msg", "").startswith("event timestamp in the future") for line in proc.logs())


def test_sigkill_mid_stream_then_restart_loses_nothing_and_counts_exactly(stream):
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    events = make_events(500, seed=2)
    produce(bootstrap, topics["input"], [orjson.dumps(e) for e in events])
    first = stream["start"]("first")
    partial = read_topic(bootstrap, topics["output"], expect=120, timeout=120)
    assert len(partial) >= 120
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    before_restart = read_topic(bootstrap, topics["output"], expect=len(events), timeout=3)
    assert len(before_restart) < len(events), "the kill must land mid-stream"

    second = stream["start"]("second")
    labelled = read_topic(bootstrap, topics["output"], expect=len(events), timeout=180, settle=2)
    by_id, seen = labelled_by_id(labelled)
    assert set(by_id) == {e["event_id"] for e in events}, "an event is missing from the output"
    duplicates = sum(seen.values()) - len(seen)
    assert len(labelled) == len(events) + duplicates
    # Duplicates are whole re-publications of the same event (same event_id, same verdict).
    for msg in labelled:
        event = orjson.loads(msg.value())
        assert event["sentiment"]["label"] == by_id[event["event_id"]]["sentiment"]["label"]
    assert wait_committed(bootstrap, stream["group"], topics["input"], 4, len(events), timeout=30) == len(events)
    assert second.stop() == 0
    assert_counters_exact(stream["store"], by_id)
    print(f"sigkill restart: {duplicates} duplicate outputs of {len(events)} events")


def test_two_processes_share_partitions_and_stay_exact_when_one_leaves(stream):
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    a, b = stream["start"]("a"), stream["start"]("b")
    # Both members must have joined before the backlog arrives, so the work is shared.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assigned = [any(line.get("msg") == "partitions assigned" and line.get("partitions") for line in p.logs()) for p in (a, b)]
        if all(assigned):
            break
        time.sleep(0.5)
    assert all(assigned), "both consumers should get partitions"
    events = make_events(600, seed=3)
    produce(bootstrap, topics["input"], [orjson.dumps(e) for e in events], keys=[e["event_id"].encode() for e in events])
    read_topic(bootstrap, topics["output"], expect=150, timeout=120)
    assert b.stop(signal.SIGTERM) == 0
    labelled = read_topic(bootstrap, topics["output"], expect=len(events), timeout=180, settle=2)
    by_id, seen = labelled_by_id(labelled)
    assert set(by_id) == {e["event_id"] for e in events}
    assert wait_committed(bootstrap, stream["group"], topics["input"], 4, len(events), timeout=30) == len(events)
    assert a.stop() == 0
    assert any(line.get("msg") == "partitions revoked" for line in a.logs()), "a should rebalance when b leaves"
    batches = [next(line["batches"] for line in p.logs() if line.get("msg") == "stopped") for p in (a, b)]
    assert all(n > 0 for n in batches), f"both processes should have committed batches, got {batches}"
    assert_counters_exact(stream["store"], by_id)


def test_redis_restart_mid_stream_loses_nothing(stream, tmp_path):
    from tests.services.redis_server import RedisServer

    topics, bootstrap = stream["topics"], stream["bootstrap"]
    with RedisServer(tmp_path / "redis") as server:
        proc = stream["start"]("redis-restart", redis_url=server.url)
        store = CounterStore(redis.Redis.from_url(server.url), stream["store"].layout)
        wave1 = make_events(100, seed=4)
        produce(bootstrap, topics["input"], [orjson.dumps(e) for e in wave1])
        read_topic(bootstrap, topics["output"], expect=len(wave1), timeout=120)
        server.stop()
        wave2 = make_events(150, seed=5)
        produce(bootstrap, topics["input"], [orjson.dumps(e) for e in wave2])
        time.sleep(4)  # the consumer is now retrying against a dead Redis
        server.start()
        labelled = read_topic(bootstrap, topics["output"], expect=len(wave1) + len(wave2), timeout=180, settle=1)
        by_id, _ = labelled_by_id(labelled)
        assert set(by_id) == {e["event_id"] for e in wave1 + wave2}
        expect = len(wave1) + len(wave2)
        assert wait_committed(bootstrap, stream["group"], topics["input"], 4, expect, timeout=60) == expect
        assert proc.stop() == 0
        assert any(line.get("msg") == "redis update failed; retrying" for line in proc.logs())
        assert_counters_exact(store, by_id)
