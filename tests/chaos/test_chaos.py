"""`make chaos`: the consumer under a steady load of the repo's events while faults are injected.

One row per fault (events in, labelled out, duplicates, dead-lettered, counters exact,
alerts expected vs sent, seconds to recover), printed as a table and written to
bench/results/chaos-latest.json. Every scenario asserts the row: no event lost,
counters exact, every bad input dead-lettered, no alert lost.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import orjson
import pytest
import redis

from tests.conftest import KAFKA, REDIS_URL
from tests.consumer.harness import ROOT, free_port, produce, wait_for
from tests.services.redis_server import RedisServer

from .harness import ChaosStream, Feeder, Row, load_events

pytestmark = pytest.mark.chaos
RATE = 120.0  # events/s offered, about what the test checkpoint labels on 2 cores with the rest running
ROWS: list[Row] = []
POISON = [
    b"\x00" * 170_000,  # escapes to ~1 MB of JSON if copied whole into the dead letter
    bytes(range(256)) * 3000,  # 768 KB of binary: base64 adds a third
    b"[" * 100_000 + b"]" * 100_000,  # deeply nested JSON
    b"\xff\xfe\xfd not utf-8",
    b'{"event_type": "review", "schema_version": 1, "event_id": "nan", "ts": NaN, "product_id": "p", "text": "x"}',
    b'{"event_type": "review", "schema_version": 1, "event_id": "inf", "ts": 1, "product_id": "p", "text": "x", "rating": Infinity}',
]


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if not ROWS:
        return
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos-latest.json").write_bytes(orjson.dumps([asdict(r) for r in ROWS], option=orjson.OPT_INDENT_2))


def _check(row: Row, events: int, poison: int = 0, fires: frozenset[str] = frozenset()) -> None:
    """The row as measured; `fires`: the subjects ("<kind>:<name>") whose alert the scenario must raise, and no others."""
    ROWS.append(row)
    assert row.labelled_unique == events, f"{row.fault}: {events - row.labelled_unique} events lost"
    assert row.dead_lettered == poison, f"{row.fault}: {row.dead_lettered} dead letters, expected {poison}"
    assert row.counters_exact, f"{row.fault}: counters differ from the outputs"
    assert row.alert_ids_match, f"{row.fault}: the alerts topic and Redis disagree on (alert_id, state): {row.alerts_sent} of {row.alerts_expected} sent"
    assert set(row.fired) == set(fires), f"{row.fault}: fired {row.fired}, expected {sorted(fires)}"


def _stream(name: str, checkpoint: Path, tmp_path: Path, bootstrap: str = KAFKA, redis_url: str = REDIS_URL) -> ChaosStream:
    return ChaosStream(name, bootstrap, redis_url, checkpoint, tmp_path)


def _loaded_with_fault_file(name: str, variable: str, checkpoint: Path, tmp_path: Path) -> tuple[ChaosStream, Path, dict, list[dict], Feeder]:
    """A stream with the steady load ready, and the fault file `variable` names (absent until the test touches it)."""
    stream = _stream(name, checkpoint, tmp_path)
    fault = tmp_path / name
    events = load_events(stream.tag)
    return stream, fault, {variable: str(fault)}, events, Feeder(stream.bootstrap, stream.topics["input"], events, RATE)


def _wait_until(stream: ChaosStream, labelled: int) -> None:
    assert stream.wait_labelled(labelled, 180) >= labelled


def test_consumer_sigkill_three_times(tiny_checkpoint, tmp_path):
    stream = _stream("sigkill", tiny_checkpoint, tmp_path)
    events = load_events(stream.tag)
    feeder = Feeder(stream.bootstrap, stream.topics["input"], events, RATE)
    proc = stream.start("0")
    feeder.start()
    rng = random.Random(5)
    for i, share in enumerate(sorted(rng.uniform(0.1, 0.8) for _ in range(3))):
        _wait_until(stream, int(share * len(events)))
        proc.stop(signal.SIGKILL)
        proc = stream.start(str(i + 1))
        stream.faults_cleared_at = time.monotonic()
    _check(stream.finish("consumer SIGKILL x3", events, 0, feeder), len(events))


def test_sigterm_at_the_drain_deadline_during_a_redis_outage(tiny_checkpoint, tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        stream = _stream("drain", tiny_checkpoint, tmp_path, redis_url=server.url)
        events = load_events(stream.tag)
        feeder = Feeder(stream.bootstrap, stream.topics["input"], events, RATE)
        proc = stream.start("0", extra=["--shutdown-timeout-s", "3"])
        feeder.start()
        _wait_until(stream, len(events) // 4)
        server.stop()
        time.sleep(6)  # retries back off to seconds
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=60) == 0  # the drain deadline (3 s) passes with Redis still down
        proc.log.close()
        assert any(line.get("msg") == "batch abandoned uncommitted" for line in proc.logs())
        server.start()
        stream.start("1")
        stream.faults_cleared_at = time.monotonic()
        _check(stream.finish("SIGTERM at drain deadline, Redis down", events, 0, feeder), len(events))


def test_broker_sigkill_and_restart(tiny_checkpoint, tmp_path):
    env = {**os.environ, "SERVICES_DIR": str(tmp_path / "services"), "KAFKA_PORT": str(free_port()),
           "KAFKA_CONTROLLER_PORT": str(free_port()), "REDIS_PORT": str(free_port()),
           "KAFKA_LIBS": str(ROOT / ".cache" / "services" / "kafka" / "libs")}
    script = ROOT / "services" / "services.sh"
    subprocess.run([str(script), "up"], env=env, check=True, capture_output=True, timeout=180)
    try:
        bootstrap = f"127.0.0.1:{env['KAFKA_PORT']}"
        stream = _stream("broker", tiny_checkpoint, tmp_path, bootstrap=bootstrap)
        events = load_events(stream.tag)
        feeder = Feeder(bootstrap, stream.topics["input"], events, RATE)
        stream.start("0")
        feeder.start()
        _wait_until(stream, len(events) // 3)
        pid = int((tmp_path / "services" / "kafka" / "kafka.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        time.sleep(10)
        subprocess.run([str(script), "up"], env=env, check=True, capture_output=True, timeout=180)
        stream.faults_cleared_at = time.monotonic()
        _check(stream.finish("broker SIGKILL, 10 s down", events, 0, feeder), len(events))
    finally:
        subprocess.run([str(script), "down"], env=env, capture_output=True, timeout=120)


def test_redis_sigkill_and_restart(tiny_checkpoint, tmp_path):
    with RedisServer(tmp_path / "redis") as server:  # appendfsync always: an acked write survives SIGKILL
        stream = _stream("redis-kill", tiny_checkpoint, tmp_path, redis_url=server.url)
        events = load_events(stream.tag)
        feeder = Feeder(stream.bootstrap, stream.topics["input"], events, RATE)
        stream.start("0")
        feeder.start()
        _wait_until(stream, len(events) // 3)
        os.kill(int((tmp_path / "redis" / "redis.pid").read_text()), signal.SIGKILL)
        time.sleep(5)
        server.start()
        stream.faults_cleared_at = time.monotonic()
        _check(stream.finish("Redis SIGKILL, 5 s down", events, 0, feeder), len(events))


def test_redis_out_of_memory(tiny_checkpoint, tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        stream = _stream("redis-oom", tiny_checkpoint, tmp_path, redis_url=server.url)
        client = redis.Redis.from_url(server.url)
        events = load_events(stream.tag)
        feeder = Feeder(stream.bootstrap, stream.topics["input"], events, RATE)
        stream.start("0")
        feeder.start()
        _wait_until(stream, len(events) // 3)
        client.config_set("maxmemory", max(1, int(client.info("memory")["used_memory"]) - 4096))
        time.sleep(10)
        client.config_set("maxmemory", 0)
        stream.faults_cleared_at = time.monotonic()
        _check(stream.finish("Redis OOM for 10 s", events, 0, feeder), len(events))


def test_poison_input(tiny_checkpoint, tmp_path):
    stream = _stream("poison", tiny_checkpoint, tmp_path)
    events = load_events(stream.tag)
    feeder = Feeder(stream.bootstrap, stream.topics["input"], events, RATE, extra=POISON)
    stream.start("0")
    feeder.start()
    _check(stream.finish("poison input (6 kinds)", events, len(POISON), feeder), len(events), len(POISON))


def test_model_fails_systemically_for_20_s(tiny_checkpoint, tmp_path):
    stream, fault, env, events, feeder = _loaded_with_fault_file("model", "SENTIMENT_FAULT_MODEL_FAIL_FILE", tiny_checkpoint, tmp_path)
    stream.start("0", env=env)
    feeder.start()
    _wait_until(stream, len(events) // 4)
    fault.touch()
    time.sleep(20)
    fault.unlink()
    stream.faults_cleared_at = time.monotonic()
    _check(stream.finish("model fails systemically, 20 s", events, 0, feeder), len(events))


def test_sigkill_between_produce_and_commit(tiny_checkpoint, tmp_path):
    """A fault hook kills the process after a batch's outputs are acked and its counters written, before
    its commit: the redelivered batch duplicates outputs (same event ids), and the fences keep the counters exact."""
    stream, fault, env, events, feeder = _loaded_with_fault_file("kill-commit", "SENTIMENT_FAULT_KILL_BEFORE_COMMIT_FILE",
                                                                tiny_checkpoint, tmp_path)
    proc = stream.start("0", env=env)
    feeder.start()
    for i in range(2):
        _wait_until(stream, (i + 1) * len(events) // 3)
        fault.touch()
        assert proc.proc.wait(timeout=60) == -signal.SIGKILL
        proc.log.close()
        fault.unlink()
        proc = stream.start(str(i + 1), env=env)
        stream.faults_cleared_at = time.monotonic()
    row = stream.finish("SIGKILL x2 between produce and commit (fault hook)", events, 0, feeder)
    _check(row, len(events))
    assert row.duplicates > 0, "the kills landed where no output is duplicated"


def test_rebalance_during_a_model_failure_wait(tiny_checkpoint, tmp_path):
    """The model fails, so the member waits with its whole assignment paused; a second member joins and
    the waiting batch is abandoned. The partitions the first member keeps must resume."""
    stream, fault, env, events, feeder = _loaded_with_fault_file("rebalance-wait", "SENTIMENT_FAULT_MODEL_FAIL_FILE",
                                                                tiny_checkpoint, tmp_path)
    first = stream.start("a", env=env)
    feeder.start()
    _wait_until(stream, len(events) // 4)
    fault.touch()
    wait_for(lambda: any(l.get("msg") == "model failing on every batch; partitions paused, retrying" for l in first.logs()),
             60, "the model-failure wait")
    stream.start("b", env=env)
    wait_for(lambda: any(l.get("msg") == "batch abandoned uncommitted" for l in first.logs()), 90, "the waiting batch abandoned")
    fault.unlink()
    stream.faults_cleared_at = time.monotonic()
    _check(stream.finish("rebalance during a model-failure wait", events, 0, feeder), len(events))


def test_one_poison_text_at_one_event_a_second(tiny_checkpoint, tmp_path):
    """Low traffic: a batch holds one event. The one the model cannot take is dead-lettered, with no exit."""
    stream = _stream("poison-text", tiny_checkpoint, tmp_path)
    events = load_events(stream.tag, 40)
    poison = {**events[0], "event_id": f"{stream.tag}-poison", "text": "POISON-TEXT " + events[0]["text"], "ts": int(time.time() * 1000)}
    feeder = Feeder(stream.bootstrap, stream.topics["input"], events, 1.0, extra=[orjson.dumps(poison)])
    proc = stream.start("0", env={"SENTIMENT_FAULT_POISON_TEXT": "POISON-TEXT"})
    feeder.start()
    row = stream.finish("one poison text at 1 event/s", events, 1, feeder)
    _check(row, len(events), poison=1)
    assert proc.proc.returncode == 0 and not any(l.get("level") == "CRITICAL" for l in proc.logs())


def test_spike_burst_into_a_stopped_consumer(tiny_checkpoint, tmp_path):
    from tests.consumer.harness import mixed_events, pick_texts

    stream = _stream("spike", tiny_checkpoint, tmp_path)
    events = load_events(stream.tag, 600)
    now = int(time.time() * 1000)
    for e in events:
        e["ts"] = now
    pools = pick_texts(tiny_checkpoint)
    spike = mixed_events("flash sale tv", pools, 60, 0, now, f"{stream.tag}-spike")
    produce(stream.bootstrap, stream.topics["input"], [orjson.dumps(e) for e in events] + spike)
    stream.faults_cleared_at = time.monotonic()
    stream.start("0")
    spiked = [orjson.loads(v) for v in spike]
    feeder = Feeder(stream.bootstrap, stream.topics["input"], [], RATE)
    feeder.start()
    row = stream.finish("spike burst into a stopped consumer", events + spiked, 0, feeder)
    _check(row, len(events) + len(spiked), fires=frozenset({"query:flash sale tv", "product:p-flash sale tv"}))


def test_steady_queries_streamed_live_for_10_minutes_raise_no_alert(tiny_checkpoint, tmp_path):
    """60 queries at 5-10 events a minute, each at its own constant negative share, after an hour of
    history: nothing changes, so nothing may page (the round-2 rule fired on 12 of 60 such queries)."""
    from tests.consumer.harness import pick_texts

    stream = _stream("steady-live", tiny_checkpoint, tmp_path)
    pools, rng, now = pick_texts(tiny_checkpoint), random.Random(5), int(time.time() * 1000)
    queries = {f"steady live {i}": (rng.uniform(0.05, 0.5), rng.uniform(5, 10)) for i in range(60)}  # share, events a minute

    def event(query: str, share: float, i: int, ts_ms: int) -> dict:
        pool = pools["negative"] if rng.random() < share else pools["positive"]
        return {"event_id": f"{stream.tag}-{query}-{i}", "event_type": "search_result", "schema_version": 1, "query": query,
                "ts": ts_ms, "product_id": f"p-{query}", "rank": i % 10, "title": "t", "text": pool[rng.randrange(len(pool))]}

    history = [event(q, share, i, now - int(rng.uniform(6, 60) * 60_000))
               for q, (share, rate) in queries.items() for i in range(int(rate * 54))]
    produce(stream.bootstrap, stream.topics["input"], [orjson.dumps(e) for e in history], [e["query"].encode() for e in history])
    stream.start("0")
    _wait_until(stream, len(history))
    # The live ten minutes: each query at its own rate, interleaved in time as the feeder sends them.
    total_rate = sum(rate for _, rate in queries.values()) / 60
    names, weights = list(queries), [rate for _, rate in queries.values()]
    live = [event(q, queries[q][0], len(history) + i, 0) for i, q in enumerate(rng.choices(names, weights, k=int(total_rate * 600)))]
    feeder = Feeder(stream.bootstrap, stream.topics["input"], live, total_rate)
    feeder.start()
    stream.faults_cleared_at = time.monotonic()
    row = stream.finish("steady queries live for 10 min", history + live, 0, feeder)
    _check(row, len(history) + len(live))  # fires nothing
