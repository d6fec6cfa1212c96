"""Hostile input and faults against the real broker and Redis: nothing stops the stream,
skips a range or loses an alert (issue: hardening). One test per named failure."""

from __future__ import annotations

import re
import secrets
import signal
import time

import orjson
import redis

from consumer.state.counters import CounterStore
from model_runtime.rollout import RolloutStore
from tests.services.redis_server import RedisServer

from .conftest import assert_counters_exact
from .harness import committed, labelled_by_id, make_events, mixed_events, pick_texts, produce, read_topic, wait_committed, wait_for


def _wait_committed(stream, expect: int, timeout: float = 60) -> int:
    return wait_committed(stream["bootstrap"], stream["group"], stream["topics"]["input"], 4, expect, timeout)


def test_oversized_dead_letters_fit_and_output_refusals_are_dead_lettered(stream, make_topic):
    """Item 1: envelopes that would exceed the broker limit are capped; a labelled event the output
    topic refuses (topic max.message.bytes below ours) is dead-lettered as output_rejected."""
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    small_output = make_topic("small-out", partitions=2, config={"max.message.bytes": "3000"})
    events = make_events(40, seed=21)
    for e in events[::10]:
        # ~6 KB that compression cannot shrink: a valid input whose labelled output the topic refuses.
        e["text"] = " ".join(secrets.token_urlsafe(8) for _ in range(600))
    refused_ids = {e["event_id"] for e in events[::10]}
    poison = [b"\x00" * 170_000, bytes(range(256)) * 3000, orjson.dumps({"a": [[[[[[[]]]]]]]})[:-1] * 1,
              b"[" * 5000 + b"]" * 5000, b'{"event_type": "review", "ts": NaN}']
    produce(bootstrap, topics["input"], [orjson.dumps(e) for e in events] + poison)
    proc = stream["start"]("poison", extra=["--output-topic", small_output])

    labelled = read_topic(bootstrap, small_output, expect=len(events) - len(refused_ids), timeout=120, settle=2)
    dead = [orjson.loads(m.value()) for m in read_topic(bootstrap, topics["dlq"], expect=len(refused_ids) + len(poison), timeout=60, settle=2)]
    by_id, _ = labelled_by_id(labelled)
    assert set(by_id) == {e["event_id"] for e in events} - refused_ids
    rejected = [d for d in dead if d["error_code"] == "output_rejected"]
    assert {orjson.loads(d["original"])["event_id"] for d in rejected} == refused_ids
    assert all("MSG_SIZE_TOO_LARGE" in d["error_message"] for d in rejected)
    big = [d for d in dead if d["original_bytes"] and d["original_bytes"] >= 170_000]
    assert len(big) == 2 and all(d["truncated"] and d["error_code"] == "message_too_large" for d in big)
    assert sorted(d["original_encoding"] for d in big) == ["base64", "utf-8"]
    assert len(dead) == len(refused_ids) + len(poison)
    assert _wait_committed(stream, len(events) + len(poison)) == len(events) + len(poison)
    assert proc.stop() == 0
    assert_counters_exact(stream["store"], by_id)  # refused outputs are not counted


def test_dead_letter_topic_refusing_is_one_fatal_line_and_commits_nothing(stream, make_topic):
    """Item 1: when the DLQ itself refuses, the consumer stops non-zero with one clear line."""
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    tiny_dlq = make_topic("tiny-dlq", config={"max.message.bytes": "200"})
    produce(bootstrap, topics["input"], [b"{not json at all, and long enough to need a real envelope}"])
    proc = stream["start"]("fatal", extra=["--dlq-topic", tiny_dlq])
    assert proc.proc.wait(timeout=120) == 3
    proc.log.close()
    fatal = [line for line in proc.logs() if line.get("level") == "CRITICAL"]
    assert len(fatal) == 1 and tiny_dlq in fatal[0]["msg"] and "MSG_SIZE_TOO_LARGE" in fatal[0]["msg"]
    assert "Traceback" not in proc.log_path.read_text()
    assert committed(bootstrap, stream["group"], topics["input"], 4) == 0


def test_shutdown_during_redis_outage_commits_nothing_past_the_abandoned_batch(stream, tmp_path):
    """Item 2: a batch abandoned at the drain deadline blocks every later commit and count."""
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    with RedisServer(tmp_path / "redis") as server:
        store = CounterStore(redis.Redis.from_url(server.url), stream["store"].layout)
        first = stream["start"]("drain-1", redis_url=server.url, extra=["--shutdown-timeout-s", "3"])
        wave1 = make_events(64, seed=22)
        produce(bootstrap, topics["input"], [orjson.dumps(e) for e in wave1])
        read_topic(bootstrap, topics["output"], expect=len(wave1), timeout=120)
        assert _wait_committed(stream, len(wave1)) == len(wave1)
        server.stop()
        wave2 = make_events(200, seed=23)
        produce(bootstrap, topics["input"], [orjson.dumps(e) for e in wave2])
        wait_for(lambda: any(l.get("msg") == "redis update failed; retrying" for l in first.logs()), 60, "redis retries")
        time.sleep(6)  # the retry backoff grows to seconds
        first.proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        server.start()  # back before the deadline passes: a later batch's update would now succeed
        assert first.proc.wait(timeout=60) == 0
        first.log.close()
        assert any(l.get("msg") == "batch abandoned uncommitted" and l.get("reason") == "shutdown" for l in first.logs())
        after = committed(bootstrap, stream["group"], topics["input"], 4)
        assert after == len(wave1), "nothing may be committed past the abandoned batch"

        second = stream["start"]("drain-2", redis_url=server.url)
        labelled = read_topic(bootstrap, topics["output"], expect=len(wave1) + len(wave2), timeout=180, settle=1)
        by_id, _ = labelled_by_id(labelled)
        assert set(by_id) == {e["event_id"] for e in wave1 + wave2}
        assert _wait_committed(stream, len(wave1) + len(wave2)) == len(wave1) + len(wave2)
        assert second.stop() == 0
        assert_counters_exact(store, by_id)


def test_alert_left_pending_by_a_crash_is_sent_after_restart(stream):
    """Item 3: the state change and its pending record are one script; a process that died
    before producing leaves the record, and the next process sends it (same alert_id)."""
    from consumer.alerts.state import AlertStore

    topics, bootstrap = stream["topics"], stream["bootstrap"]
    store = stream["store"]
    alerts = AlertStore(stream["client"], store.layout, 3600)
    event = {"alert_id": "crash-1", "subject": "query", "query": "smart watch", "product_id": None, "state": "firing",
             "window": "5m", "negative_share": 0.9, "baseline_share": 0.1, "reference_share": 0.1, "count": 40,
             "baseline_count": 100, "statistic": 9.0, "test": "two_proportion_z", "fired_at": "2026-12-01T10:00:00.000Z",
             "resolved_at": None}
    assert alerts.fire(("query", "smart watch"), "crash-1", int(time.time() * 1000), orjson.dumps(event))
    proc = stream["start"]("outbox")
    sent = read_topic(bootstrap, f"{topics['output']}-alerts", expect=2, timeout=90, settle=2)
    # The pending firing event goes out first; then, the query having no traffic at all, the
    # time-driven evaluation resolves it (same alert_id).
    assert [(orjson.loads(m.value())["alert_id"], orjson.loads(m.value())["state"]) for m in sent] == [
        ("crash-1", "firing"), ("crash-1", "resolved")]
    assert orjson.loads(sent[0].value()) == event
    wait_for(lambda: not alerts.pending(), 30, "the pending records to be marked sent")
    assert proc.stop() == 0
    assert [a["state"] for a in alerts.read()] == ["resolved"]


def test_burst_into_a_stopped_consumer_fires_then_resolves_without_traffic(stream, tiny_checkpoint):
    """Item 4: evaluation is time-driven: a replayed burst fires, and the alert resolves when the
    window slides past the spike even though no event arrives."""
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    pools = pick_texts(tiny_checkpoint)
    now = int(time.time() * 1000)
    produce(bootstrap, topics["input"], mixed_events("phone charger", pools, 40, 0, now, "burst"))
    proc = stream["start"]("burst", extra=["--bucket-seconds", "5", "--windows", "20s,1h,24h", "--alert-window", "20s",
                                           "--alert-eval-interval-s", "1", "--alert-cooldown", "1m"])
    alerts_topic = f"{topics['output']}-alerts"
    fired = [orjson.loads(m.value()) for m in read_topic(bootstrap, alerts_topic, expect=2, timeout=120, settle=1)]
    assert sorted((a["subject"], a["state"]) for a in fired) == [("product", "firing"), ("query", "firing")]
    both = [orjson.loads(m.value()) for m in read_topic(bootstrap, alerts_topic, expect=4, timeout=90, settle=1)]
    resolved = [a for a in both if a["state"] == "resolved"]
    assert sorted(a["alert_id"] for a in resolved) == sorted(a["alert_id"] for a in fired)
    assert proc.stop() == 0


def test_systemic_model_failure_pauses_reports_unhealthy_and_dead_letters_nothing(stream, tmp_path):
    """Item 5: every forward pass fails for a while: no event is dead-lettered or committed, /healthz
    fails, and when the model works again every event is labelled and counted exactly once."""
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    fault = tmp_path / "model-fails"
    fault.touch()
    proc = stream["start"]("model", env={"SENTIMENT_FAULT_MODEL_FAIL_FILE": str(fault)})
    events = make_events(120, seed=24)
    produce(bootstrap, topics["input"], [orjson.dumps(e) for e in events])
    status, body = wait_for(lambda: (r := proc.scrape("/healthz"))[0] == 503 and r, 90, "/healthz to fail")
    assert "model" in orjson.loads(body)["failing"]
    time.sleep(3)
    assert committed(bootstrap, stream["group"], topics["input"], 4) == 0
    fault.unlink()
    labelled = read_topic(bootstrap, topics["output"], expect=len(events), timeout=120, settle=1)
    by_id, _ = labelled_by_id(labelled)
    assert set(by_id) == {e["event_id"] for e in events}
    assert read_topic(bootstrap, topics["dlq"], expect=1, timeout=3) == []
    assert _wait_committed(stream, len(events)) == len(events)
    assert wait_for(lambda: proc.scrape("/healthz")[0] == 200, 30, "/healthz to recover")
    assert proc.stop() == 0
    assert_counters_exact(stream["store"], by_id)


def test_model_failing_past_the_timeout_exits_non_zero(stream, tmp_path):
    """Item 5: after --model-failure-timeout-s the consumer gives up (exit 3), committing nothing."""
    fault = tmp_path / "model-fails"
    fault.touch()
    produce(stream["bootstrap"], stream["topics"]["input"], [orjson.dumps(e) for e in make_events(20, seed=25)])
    proc = stream["start"]("model-timeout", extra=["--model-failure-timeout-s", "4"],
                           env={"SENTIMENT_FAULT_MODEL_FAIL_FILE": str(fault)})
    assert proc.proc.wait(timeout=120) == 3
    proc.log.close()
    assert any(l.get("level") == "CRITICAL" and "model failing" in l["msg"] for l in proc.logs())
    assert committed(stream["bootstrap"], stream["group"], stream["topics"]["input"], 4) == 0


def test_redis_out_of_memory_is_backpressure_and_every_key_expires(stream, tmp_path):
    """Item 6: OOM pauses and retries (metric, unhealthy), then the stream resumes exactly; every key
    the consumer wrote has a TTL."""
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    with RedisServer(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url)
        store = CounterStore(client, stream["store"].layout)
        proc = stream["start"]("oom", redis_url=server.url, extra=["--health-stall-s", "2"])
        wave1 = make_events(50, seed=26)
        produce(bootstrap, topics["input"], [orjson.dumps(e) for e in wave1])
        assert _wait_committed(stream, len(wave1)) == len(wave1)
        client.config_set("maxmemory", max(1, int(client.info("memory")["used_memory"]) - 4096))
        wave2 = make_events(150, seed=27)
        produce(bootstrap, topics["input"], [orjson.dumps(e) for e in wave2])
        wait_for(lambda: 'sentiment_redis_retries_total{reason="out_of_memory"}' in proc.scrape()[1], 60, "OOM retries")
        status, body = wait_for(lambda: (r := proc.scrape("/healthz"))[0] == 503 and r, 30, "/healthz to fail")
        assert "redis" in orjson.loads(body)["failing"]
        assert committed(bootstrap, stream["group"], topics["input"], 4) < len(wave1) + len(wave2)
        client.config_set("maxmemory", 0)
        labelled = read_topic(bootstrap, topics["output"], expect=len(wave1) + len(wave2), timeout=120, settle=1)
        by_id, _ = labelled_by_id(labelled)
        assert _wait_committed(stream, len(wave1) + len(wave2)) == len(wave1) + len(wave2)
        assert proc.stop() == 0
        assert_counters_exact(store, by_id)
        keys = list(client.scan_iter(match=store.layout.prefix + "*"))
        # The one key without a TTL is the group's rollout decision: durable by design, one small hash per route.
        rollout = RolloutStore(client, store.layout.prefix, stream["group"], "english").key.encode()
        assert keys and [k for k in keys if client.ttl(k) <= 0] == [rollout]


def test_evicting_redis_is_refused_unless_allowed(stream, tmp_path):
    """Item 6: an evicting maxmemory-policy could evict fences and double-count."""
    with RedisServer(tmp_path / "redis", "--maxmemory-policy", "allkeys-lru") as server:
        refused = stream["start"]("evicting", redis_url=server.url)
        assert refused.proc.wait(timeout=60) == 2
        refused.log.close()
        text = refused.log_path.read_text()
        assert "maxmemory-policy is allkeys-lru" in text and "--allow-evicting-redis" in text and "Traceback" not in text
        allowed = stream["start"]("evicting-allowed", redis_url=server.url, extra=["--allow-evicting-redis"])
        wait_for(lambda: any(l.get("msg") == "partitions assigned" for l in allowed.logs()), 90, "the consumer to run")
        assert allowed.stop() == 0


def test_kip848_group_protocol_runs(stream):
    """Item 8: --kafka-config group.protocol=consumer used to crash with a traceback."""
    events = make_events(30, seed=28)
    produce(stream["bootstrap"], stream["topics"]["input"], [orjson.dumps(e) for e in events])
    proc = stream["start"]("kip848", extra=["--kafka-config", "group.protocol=consumer"])
    labelled = read_topic(stream["bootstrap"], stream["topics"]["output"], expect=len(events), timeout=120, settle=1)
    assert set(labelled_by_id(labelled)[0]) == {e["event_id"] for e in events}
    assert _wait_committed(stream, len(events)) == len(events)
    assert proc.stop() == 0


def _owned(proc) -> set[str]:
    """The partitions a consumer owns now, by its log: assigned minus revoked or lost, in order (under
    KIP-848 and cooperative-sticky each callback names only the partitions that move)."""
    owned: set[str] = set()
    for line in proc.logs():
        if line.get("msg") == "partitions assigned":
            owned |= set(line["partitions"])
        elif line.get("msg") in ("partitions revoked", "partitions lost"):
            owned -= set(line["partitions"])
    return owned


def _batches(proc) -> float:
    """Micro-batches the consumer has committed so far, from its /metrics (0 while it is not up)."""
    found = re.search(r"^sentiment_batches_total (\S+)$", proc.scrape()[1], re.M)
    return float(found.group(1)) if found else 0.0


def test_kip848_two_members_split_the_partitions_and_one_takes_over_when_the_other_leaves(stream):
    """Item 8 with a group: two members under group.protocol=consumer (the broker assigns) split the
    four input partitions; when one stops (SIGTERM) the other takes its partitions over and labels what
    arrives on them. Every event is labelled, every offset committed, the counters are exact."""
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    every = {f"{topics['input']}[{p}]" for p in range(4)}
    kip848 = ["--kafka-config", "group.protocol=consumer"]
    a, b = stream["start"]("kip848-a", extra=kip848), stream["start"]("kip848-b", extra=kip848)
    wait_for(lambda: _owned(a) and _owned(b) and _owned(a) | _owned(b) == every, 90, "both members to own partitions")
    assert not _owned(a) & _owned(b), (_owned(a), _owned(b))

    # Keyed by event id: spread over the four partitions, so both members have work.
    wave1 = make_events(200, seed=29)
    produce(bootstrap, topics["input"], [orjson.dumps(e) for e in wave1], keys=[e["event_id"].encode() for e in wave1])
    wait_for(lambda: _batches(a) > 0 and _batches(b) > 0, 120, "both members to commit batches")
    assert b.stop(signal.SIGTERM) == 0
    stopped_b = [line for line in b.logs() if line.get("msg") == "stopped"]
    assert len(stopped_b) == 1 and stopped_b[0]["batches"] > 0, "b should have committed batches before it left"
    wait_for(lambda: _owned(a) == every, 60, "a to take over b's partitions")  # b's revoked and assigned to a

    # A second wave lands on b's former partitions too (100 random keys over 4 partitions): only a is left to label it.
    wave2 = make_events(100, seed=30)
    produce(bootstrap, topics["input"], [orjson.dumps(e) for e in wave2], keys=[e["event_id"].encode() for e in wave2])
    events = wave1 + wave2
    labelled = read_topic(bootstrap, topics["output"], expect=len(events), timeout=120, settle=2)
    by_id, _ = labelled_by_id(labelled)
    assert set(by_id) == {e["event_id"] for e in events}
    assert _wait_committed(stream, len(events)) == len(events)
    assert a.stop() == 0
    assert next(line["batches"] for line in a.logs() if line.get("msg") == "stopped") > 0
    assert not [line for line in a.logs() + b.logs() if line.get("level") in ("ERROR", "CRITICAL")]
    assert_counters_exact(stream["store"], by_id)
