"""`make bench-cluster`: scale-out figures on the local clusters (3 Kafka brokers, Redis Cluster), in one run.

  (a) the processing pause of a member that keeps partitions when another member joins, eager
      (range) vs cooperative-sticky: the longest gap between its committed batches from the
      joiner's subscription to 5 s after the joiner's first partitions; median of 5 joins
  (b) work redone per rebalance, same runs (5 joins + 5 leaves per strategy): the kept member's
      batches abandoned (re-labelled after the rebalance), and duplicate outputs
  (c) throughput with 1, 2 and 3 consumer processes on one 12-partition backlog, all members
      assigned before the backlog is produced; produce end to last commit
  (d) the cost of --redis-wait-replicas 1: one batch's counter writes (64 events) with and without WAIT
Writes bench/results/cluster.json and prints one table.
"""

from __future__ import annotations

import argparse
import calendar
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_pipeline import corpus_texts, events  # noqa: E402

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
PARTITIONS = 12
STRATEGIES = {"eager (range)": "range", "cooperative-sticky": "cooperative-sticky"}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_time(entry: dict) -> float:
    stamp = datetime.strptime(entry["ts"][:19], "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(stamp.timetuple()) + int(entry["ts"][20:23]) / 1000


class Group:
    """Topics (12 partitions, replication 3), one consumer group, its member processes."""

    def __init__(self, name: str, checkpoint: str, strategy: str) -> None:
        self.id = f"bench-{name}-{uuid.uuid4().hex[:6]}"
        self.topics = {k: f"{self.id}-{k}" for k in ("in", "out", "dlq", "alerts")}
        self.admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        specs = [NewTopic(t, PARTITIONS if k == "in" else 2, 3, config={"min.insync.replicas": "2"}) for k, t in self.topics.items()]
        for future in self.admin.create_topics(specs).values():
            future.result(30)
        self.checkpoint, self.strategy = checkpoint, strategy
        self.members: dict[str, tuple[subprocess.Popen, Path, int]] = {}
        self.logs: dict[str, Path] = {}  # kept after a member stops
        self._offsets = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": self.id})

    def produce(self, values: list[bytes]) -> None:
        producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 20, "enable.idempotence": True})
        for i, value in enumerate(values):
            producer.produce(self.topics["in"], value, partition=i % PARTITIONS)
            if i % 5000 == 0:
                producer.poll(0)
        producer.flush(60)

    def start(self, name: str) -> None:
        port = free_port()
        log = ROOT / "bench" / "results" / f"{self.id}-{name}.log"
        cmd = [sys.executable, "-m", "consumer", "run", "--bootstrap-servers", BOOTSTRAP, "--redis-url", REDIS_URL,
               "--redis-cluster", "true", "--redis-prefix", self.id, "--input-topics", self.topics["in"],
               "--output-topic", self.topics["out"], "--dlq-topic", self.topics["dlq"], "--alerts-topic", self.topics["alerts"],
               "--group-id", self.id, "--checkpoint", self.checkpoint, "--metrics-port", str(port), "--threads", "1",
               "--kafka-config", f"partition.assignment.strategy={self.strategy}"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.members[name] = (proc, log, port)
        self.logs[name] = log

    def entries(self, name: str, message: str, nonempty: bool = False) -> list[dict]:
        """The member's log entries with this message (and, with `nonempty`, some partitions)."""
        found = []
        for line in self.logs[name].read_bytes().splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if entry.get("msg") == message and (not nonempty or entry.get("partitions")):
                found.append(entry)
        return found

    def logged(self, name: str, message: str, nonempty: bool = False) -> dict | None:
        found = self.entries(name, message, nonempty)
        return found[0] if found else None

    def wait_logged(self, name: str, message: str, nonempty: bool = False, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.logged(name, message, nonempty)
            if entry is not None:
                return entry
            if self.members[name][0].poll() is not None:
                raise RuntimeError(f"member {name} exited; see {self.members[name][1]}")
            time.sleep(0.1)
        raise RuntimeError(f"member {name}: no {message!r} within {timeout} s")

    def batches(self, name: str) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.members[name][2]}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("sentiment_batches_total "):
                    return int(float(line.split()[1]))
        return 0

    def committed(self) -> int:
        partitions = [TopicPartition(self.topics["in"], p) for p in range(PARTITIONS)]
        return sum(max(tp.offset, 0) for tp in self._offsets.committed(partitions, timeout=10))

    def stop(self, name: str) -> None:
        proc = self.members.pop(name)[0]
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    def outputs(self) -> tuple[int, int]:
        """(labelled events, unique event ids) in the output topic."""
        reader = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"{self.id}-reader", "auto.offset.reset": "earliest",
                           "enable.auto.commit": False})
        reader.subscribe([self.topics["out"]])
        ids: list[str] = []
        idle = time.monotonic()
        while time.monotonic() - idle < 5:
            for msg in reader.consume(1000, 0.5):
                if msg.error() is None:
                    ids.append(orjson.loads(msg.value())["event_id"])
                    idle = time.monotonic()
        reader.close()
        return len(ids), len(set(ids))

    def close(self) -> None:
        for name in list(self.members):
            self.stop(name)
        self._offsets.close()
        for future in self.admin.delete_topics(list(self.topics.values())).values():
            try:
                future.result(30)
            except Exception:  # noqa: BLE001 - cleanup only
                pass


class BatchWatch(threading.Thread):
    """Samples one member's committed-batch counter every 50 ms: (time, batches)."""

    def __init__(self, group: Group, name: str) -> None:
        super().__init__(daemon=True)
        self.group, self.name, self.samples, self.running = group, name, [], True

    def run(self) -> None:
        while self.running:
            try:
                self.samples.append((time.time(), self.group.batches(self.name)))
            except OSError:
                pass
            time.sleep(0.05)

    def longest_gap(self, start: float, end: float) -> float:
        """Longest time the counter stood still within [start, end]."""
        changes = [start] + [t for (t, n), (_, before) in zip(self.samples[1:], self.samples) if n != before and start <= t <= end] + [end]
        return max(b - a for a, b in zip(changes, changes[1:]))


def join_pauses(checkpoint: str, strategy: str, values: list[bytes], joins: int) -> dict:
    group = Group(f"join-{strategy}", checkpoint, strategy)
    try:
        group.produce(values)
        group.start("keeper")
        group.wait_logged("keeper", "first batch polled")
        watch = BatchWatch(group, "keeper")
        watch.start()
        pauses = []
        for i in range(joins):
            name = f"joiner{i}"
            group.start(name)
            subscribed = log_time(group.wait_logged(name, "model loaded"))
            assigned = log_time(group.wait_logged(name, "partitions assigned", nonempty=True))
            time.sleep(max(0.0, assigned + 5 - time.time()))
            pauses.append(watch.longest_gap(subscribed, assigned + 5))
            group.stop(name)  # the leave is a rebalance too; its redone events count below
            time.sleep(5)
        watch.running = False
        group.stop("keeper")
        abandoned = len(group.entries("keeper", "batch abandoned uncommitted"))
        labelled, unique = group.outputs()
        return {"pause_ms_median": round(1000 * statistics.median(pauses)), "pauses_ms": [round(1000 * p) for p in pauses],
                "rebalances": 2 * joins, "abandoned_batches": abandoned, "labelled": labelled, "duplicates": labelled - unique}
    finally:
        group.close()


def throughput(checkpoint: str, members: int, values: list[bytes]) -> dict:
    group = Group(f"scale{members}", checkpoint, "cooperative-sticky")
    try:
        names = [f"m{i}" for i in range(members)]
        for name in names:
            group.start(name)
        for name in names:  # everyone holds partitions before the backlog arrives
            group.wait_logged(name, "partitions assigned", nonempty=True)
        time.sleep(3)
        group.produce(values)
        started = time.time()
        while group.committed() < len(values):
            time.sleep(0.2)
        seconds = time.time() - started
        return {"members": members, "events": len(values), "seconds": round(seconds, 1), "eps": round(len(values) / seconds, 1)}
    finally:
        group.close()


def wait_cost(batches: int = 300) -> dict:
    from schemas.redis_connection import connect
    from consumer.state.counters import CounterLayout, CounterStore, Increment
    from consumer.state.routing import Replication

    client = connect(REDIS_URL, cluster=True)
    out = {}
    for replicas in (0, 1):
        layout = CounterLayout(f"bench-wait{replicas}-{uuid.uuid4().hex[:6]}")
        store = CounterStore(client, layout, Replication(replicas, 1000))
        now = int(time.time() * 1000)
        times = []
        for b in range(batches):
            incs = [Increment("query", f"query {(b * 64 + i) % 40}", "in", i % 4, b * 16 + i // 4, now, "negative")
                    for i in range(64)]
            started = time.perf_counter()
            store.apply(incs, now)
            times.append(time.perf_counter() - started)
        out[f"wait_{replicas}_ms_per_batch"] = round(1000 * statistics.median(times), 2)
        keys = list(client.scan_iter(match=layout.prefix + "*", count=1000))
        for key in keys:
            client.delete(key)
    out["wait_1_cost_ratio"] = round(out["wait_1_ms_per_batch"] / out["wait_0_ms_per_batch"], 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/latest", help="checkpoint the consumers load")
    parser.add_argument("--joins", type=int, default=5, help="joins per strategy for the pause median")
    parser.add_argument("--backlog", type=int, default=30000, help="events waiting while members join")
    parser.add_argument("--scale-events", type=int, default=6000, help="backlog for each throughput run")
    args = parser.parse_args()
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    texts = corpus_texts()
    results: dict = {"wait": wait_cost()}
    print("WAIT", results["wait"], flush=True)
    results["rebalance"] = {}
    for label, strategy in STRATEGIES.items():
        values = events([texts[i % len(texts)] for i in range(args.backlog)], f"join-{strategy}")
        results["rebalance"][label] = join_pauses(args.checkpoint, strategy, values, args.joins)
        print(label, results["rebalance"][label], flush=True)
    results["throughput"] = []
    for members in (1, 2, 3):
        values = events([texts[i % len(texts)] for i in range(args.scale_events)], f"scale-{members}")
        results["throughput"].append(throughput(args.checkpoint, members, values))
        print(results["throughput"][-1], flush=True)
    results["machine"] = {"cpus": os.cpu_count()}
    (ROOT / "bench" / "results" / "cluster.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print("| strategy | longest commit gap of a kept member on a join, median of 5 (ms) | its batches abandoned | duplicate outputs | rebalances |")
    print("|---|---|---|---|---|")
    for label, r in results["rebalance"].items():
        print(f"| {label} | {r['pause_ms_median']} | {r['abandoned_batches']} | {r['duplicates']} | {r['rebalances']} |")
    print("| consumer processes | events/s |")
    print("|---|---|")
    for r in results["throughput"]:
        print(f"| {r['members']} | {r['eps']} |")
    w = results["wait"]
    print(f"WAIT 1: {w['wait_1_ms_per_batch']} ms vs {w['wait_0_ms_per_batch']} ms per 64-event batch ({w['wait_1_cost_ratio']}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
