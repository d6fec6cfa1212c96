"""`make chaos-cluster`: the consumer on a 3-broker Kafka cluster and a Redis Cluster, under load,
while a Redis master, a partition leader, or group members are killed or come and go.

Needs the local clusters `make chaos-cluster` starts (KAFKA_BROKERS=3 REDIS_CLUSTER=1). Rows
go to bench/results/cluster-latest.json and the table printed at the end of the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka.admin import AdminClient

from tests.conftest import KAFKA, REDIS_URL
from tests.consumer.harness import ROOT, produce

from .harness import ChaosStream, Feeder, Row, load_events

pytestmark = pytest.mark.cluster
SERVICES_DIR = Path(os.environ.get("SERVICES_DIR", ROOT / ".cache" / "services"))
ROWS: list[Row] = []
RESULTS = ROOT / "bench" / "results" / "cluster-latest.json"


@pytest.fixture(scope="module", autouse=True)
def clusters():
    """The local clusters must be up: these tests mean nothing against one node."""
    brokers = len(AdminClient({"bootstrap.servers": KAFKA}).list_topics(timeout=15).brokers)
    assert brokers == 3, f"expected 3 Kafka brokers at {KAFKA}, found {brokers}: run make chaos-cluster"
    info = redis.Redis.from_url(REDIS_URL).info("cluster")
    assert info.get("cluster_enabled") == 1, f"{REDIS_URL} is not a Redis Cluster: run make chaos-cluster"
    yield
    if ROWS:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_bytes(orjson.dumps([asdict(r) for r in ROWS], option=orjson.OPT_INDENT_2))


def _stream(name: str, checkpoint: Path, tmp_path: Path, partitions: int = 4) -> ChaosStream:
    return ChaosStream(name, KAFKA, REDIS_URL, checkpoint, tmp_path, partitions=partitions, replication=3, redis_cluster=True)


def _check(row: Row, events: int, fires: frozenset[str] = frozenset()) -> None:
    """The row as measured; `fires`: the subjects ("<kind>:<name>") whose alert the scenario must raise, and no others."""
    ROWS.append(row)
    assert row.labelled_unique == events, f"{row.fault}: {events - row.labelled_unique} events lost"
    assert row.counters_exact, f"{row.fault}: counters differ from the outputs"
    assert row.alert_ids_match, f"{row.fault}: the alerts topic and Redis disagree on (alert_id, state): {row.alerts_sent} of {row.alerts_expected} sent"
    assert set(row.fired) == set(fires), f"{row.fault}: fired {row.fired}, expected {sorted(fires)}"


def _restart_services() -> None:
    """services.sh up starts whichever node is down; a killed node rejoins (Redis: as a replica)."""
    subprocess.run([str(ROOT / "services" / "services.sh"), "up"], check=True, capture_output=True, timeout=180)


def _redis_masters(dead: int | None = None) -> list[int]:
    """Ports of the masters holding slots, as the first live node other than `dead` sees them."""
    first = int(os.environ.get("REDIS_PORT", "6379"))
    for port in range(first, first + 6):
        if port == dead:
            continue
        try:
            nodes = redis.Redis(port=port).cluster("nodes")
        except redis.ConnectionError:
            continue
        return sorted(int(addr.split(":")[1].split("@")[0]) for addr, info in nodes.items()
                      if "master" in info["flags"] and "fail" not in info["flags"] and info["slots"])
    return []


def _promoted(victim: int) -> bool:
    masters = _redis_masters(dead=victim)
    return len(masters) == 3 and victim not in masters


def test_redis_master_sigkill_midstream(tiny_checkpoint, tmp_path):
    stream = _stream("redis-master", tiny_checkpoint, tmp_path)
    events = load_events(stream.tag)
    feeder = Feeder(stream.bootstrap, stream.topics["input"], events, 120.0)
    stream.start("0", extra=["--redis-wait-replicas", "1"])
    feeder.start()
    assert stream.wait_labelled(len(events) // 3, 180) >= len(events) // 3
    victim = _redis_masters()[0]
    os.kill(int((SERVICES_DIR / "redis-cluster" / f"node-{victim}" / "redis.pid").read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not _promoted(victim) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _promoted(victim), "no replica was promoted"
    _restart_services()
    stream.faults_cleared_at = time.monotonic()
    _check(stream.finish("Redis master SIGKILL, replica promoted (WAIT 1)", events, 0, feeder), len(events))


def test_kafka_partition_leader_sigkill(tiny_checkpoint, tmp_path):
    stream = _stream("leader", tiny_checkpoint, tmp_path)
    events = load_events(stream.tag)
    feeder = Feeder(stream.bootstrap, stream.topics["input"], events, 120.0)
    stream.start("0")
    feeder.start()
    assert stream.wait_labelled(len(events) // 3, 180) >= len(events) // 3
    leader = AdminClient({"bootstrap.servers": KAFKA}).list_topics(stream.topics["input"], timeout=15) \
        .topics[stream.topics["input"]].partitions[0].leader
    os.kill(int((SERVICES_DIR / "kafka-cluster" / f"node-{leader}" / "kafka.pid").read_text()), signal.SIGKILL)
    assert stream.wait_labelled(2 * len(events) // 3, 180) >= 2 * len(events) // 3, "no progress with a broker down"
    _restart_services()
    stream.faults_cleared_at = time.monotonic()
    _check(stream.finish(f"Kafka leader of partition 0 (broker {leader}) SIGKILL", events, 0, feeder), len(events))


def test_members_join_and_leave_every_15s(tiny_checkpoint, tmp_path):
    """Three processes on 12 partitions; one joins or leaves every 15 s for 2 minutes."""
    stream = _stream("rebalance", tiny_checkpoint, tmp_path, partitions=12)
    events = load_events(stream.tag)
    feeder = Feeder(stream.bootstrap, stream.topics["input"], events, 20.0)  # ~125 s of load
    members = {name: stream.start(name, extra=["--threads", "1"]) for name in ("a", "b")}
    feeder.start()
    started = time.monotonic()
    for step in range(8):
        time.sleep(max(0.0, started + 15 * (step + 1) - time.monotonic()))
        if step % 2 == 0:
            name = f"c{step}"
            members[name] = stream.start(name, extra=["--threads", "1"])
        else:
            name = next(n for n in members if n != "a")  # the longest-running member other than a leaves
            assert members.pop(name).stop() == 0
    stream.faults_cleared_at = time.monotonic()
    row = stream.finish("3 members, one joins or leaves every 15 s for 2 min (cooperative-sticky)", events, 0, feeder)
    _check(row, len(events))


def test_alerts_partition_leaderless_for_60s_under_load(tiny_checkpoint, tmp_path):
    """The alerts topic has one replica, and its broker dies for 60 s while a spike fires. Alerts have their
    own producer and the outputs wait for their own acks only, so the labelled stream keeps its rate;
    the alert, durable in the Redis outbox, reaches the topic once the broker is back."""
    from tests.consumer.harness import mixed_events, pick_texts

    victim = max(AdminClient({"bootstrap.servers": KAFKA}).list_topics(timeout=15).brokers)
    stream = ChaosStream("alerts-leaderless", KAFKA, REDIS_URL, tiny_checkpoint, tmp_path, replication=3, redis_cluster=True,
                         alerts_broker=victim)
    rate = 30.0
    events = load_events(stream.tag)
    feeder = Feeder(stream.bootstrap, stream.topics["input"], events, rate)
    stream.start("0")
    feeder.start()
    assert stream.wait_labelled(len(events) // 6, 180) >= len(events) // 6
    os.kill(int((SERVICES_DIR / "kafka-cluster" / f"node-{victim}" / "kafka.pid").read_text()), signal.SIGKILL)
    killed_at = time.monotonic()
    before = stream.wait_labelled(10**9, 2)
    spike = mixed_events("flash sale tv", pick_texts(tiny_checkpoint), 60, 0, int(time.time() * 1000), f"{stream.tag}-spike")
    produce(stream.bootstrap, stream.topics["input"], spike)
    time.sleep(max(0.0, killed_at + 60 - time.monotonic()))
    during = stream.wait_labelled(10**9, 2) - before
    offered = rate * (time.monotonic() - killed_at) + len(spike)
    _restart_services()
    stream.faults_cleared_at = time.monotonic()
    spiked = [orjson.loads(v) for v in spike]
    row = stream.finish(f"alerts partition leaderless 60 s (broker {victim} SIGKILL): {during} labelled meanwhile, ~{offered:.0f} offered",
                        events + spiked, 0, feeder)
    _check(row, len(events) + len(spiked), fires=frozenset({"query:flash sale tv", "product:p-flash sale tv"}))
    assert during >= 0.6 * offered, f"the labelled stream slowed to {during} of ~{offered:.0f} events while the alert could not be sent"
