"""The chaos harness: a steady load from the repo's events, faults at chosen moments, one row per fault.

Each scenario gets its own topics, consumer group and Redis prefix, runs real consumer
processes against real services, and ends by checking what matters: every valid event
labelled (unique ids), duplicates counted, every bad input dead-lettered, the counters
exactly equal to the unique outputs, and the alerts by id: the subjects the row expects
to fire are the ones that fired, and the (alert_id, state) pairs on the alerts topic are
exactly the transitions Redis recorded.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.alerts.state import AlertStore
from schemas.redis_connection import connect
from consumer.state.counters import CounterLayout, CounterStore
from tests.consumer.harness import ConsumerProcess, expected_counts, labelled_by_id, read_topic, wait_committed

LOAD = Path(__file__).with_name("load.jsonl")
LAYOUT_WINDOWS = (300, 3600, 86400)


@dataclass
class Row:
    fault: str
    events_in: int
    labelled_unique: int
    duplicates: int
    dead_lettered: int
    counters_exact: bool
    alerts_expected: int  # transitions Redis recorded: (alert_id, state) pairs
    alerts_sent: int  # of those, on the alerts topic
    alert_ids_match: bool  # the topic holds exactly the recorded (alert_id, state) pairs
    fired: list[str]  # the subjects that fired, "<kind>:<name>"
    recover_s: float


def load_events(tag: str, n: int | None = None) -> list[dict]:
    """The repo's load events with ids unique to this run and timestamps set when produced."""
    events = [orjson.loads(line) for line in LOAD.read_bytes().splitlines()[:n]]
    for e in events:
        e["event_id"] = f"{tag}-{e['event_id']}"
    return events


class Feeder(threading.Thread):
    """Produces values at a steady rate (event time = now), so faults land mid-stream."""

    def __init__(self, bootstrap: str, topic: str, events: list[dict], rate: float, extra: list[bytes] | None = None) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.events, self.rate = bootstrap, topic, events, rate
        self.extra = extra or []  # raw poison values, spread through the stream
        self.done = threading.Event()

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5,
                             "message.timeout.ms": 120000})
        started = time.monotonic()
        every = max(1, len(self.events) // (len(self.extra) + 1))
        poison = iter(self.extra)
        for i, event in enumerate(self.events):
            event["ts"] = int(time.time() * 1000)
            producer.produce(self.topic, orjson.dumps(event))
            if i % every == every - 1:
                value = next(poison, None)
                if value is not None:
                    producer.produce(self.topic, value)
            producer.poll(0)
            delay = started + (i + 1) / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for value in poison:
            producer.produce(self.topic, value)
        assert producer.flush(120) == 0
        self.done.set()


class ChaosStream:
    def __init__(self, name: str, bootstrap: str, redis_url: str, checkpoint: Path, logs: Path, *, partitions: int = 4,
                 replication: int = 1, redis_cluster: bool = False, alerts_broker: int | None = None) -> None:
        """`alerts_broker`: the alerts topic gets one replica, on that broker (a leaderless partition when it dies)."""
        self.name, self.bootstrap, self.redis_url, self.checkpoint, self.logs = name, bootstrap, redis_url, checkpoint, logs
        self.partitions, self.redis_cluster = partitions, redis_cluster
        tag = uuid.uuid4().hex[:8]
        self.tag = f"chaos-{name}-{tag}"
        self.topics = {"input": f"{self.tag}-in", "output": f"{self.tag}-out", "dlq": f"{self.tag}-dlq"}
        self.alerts_topic = f"{self.topics['output']}-alerts"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        insync = {"min.insync.replicas": str(max(1, replication - 1))}
        specs = [NewTopic(t, n, replication, config=insync) for t, n in
                 ((self.topics["input"], partitions), (self.topics["output"], 2), (self.topics["dlq"], 1))]
        if alerts_broker is None:
            specs.append(NewTopic(self.alerts_topic, 1, replication, config=insync))
        else:
            specs.append(NewTopic(self.alerts_topic, 1, replica_assignment=[[alerts_broker]], config={"min.insync.replicas": "1"}))
        for future in admin.create_topics(specs).values():
            future.result(timeout=30)
        self.group = f"{self.tag}-group"
        self.prefix = self.tag
        self.layout = CounterLayout(self.prefix, 60, LAYOUT_WINDOWS)
        self.processes: list[ConsumerProcess] = []
        self.faults_cleared_at = time.monotonic()
        self.sent_alerts: list[dict] = []

    def start(self, label: str, extra: list[str] | None = None, env: dict[str, str] | None = None) -> ConsumerProcess:
        proc = ConsumerProcess(bootstrap=self.bootstrap, redis_url=self.redis_url, checkpoint=self.checkpoint,
                               input_topic=self.topics["input"], output_topic=self.topics["output"],
                               dlq_topic=self.topics["dlq"], group=self.group, prefix=self.prefix,
                               log_path=self.logs / f"{self.name}-{label}.log", redis_cluster=self.redis_cluster,
                               extra=["--alert-eval-interval-s", "2", "--threads", "2", *(extra or [])], env=env)
        self.processes.append(proc.start())
        return proc

    def outputs(self, timeout: float = 1.0) -> list:
        return read_topic(self.bootstrap, self.topics["output"], expect=10**9, timeout=timeout)

    def wait_labelled(self, count: int, timeout: float) -> int:
        """Until `count` unique events are labelled (polled every few seconds); returns the count seen."""
        deadline = time.monotonic() + timeout
        seen = 0
        reader = _Reader(self.bootstrap, self.topics["output"])
        try:
            while time.monotonic() < deadline and seen < count:
                seen = reader.unique(2.0)
        finally:
            reader.close()
        return seen

    def finish(self, fault: str, events: list[dict], poison: int, feeder: Feeder, redis_url: str | None = None) -> Row:
        """Wait until the stream has caught up, stop the consumer, and measure the row."""
        feeder.done.wait(300)
        total = len(events) + poison
        self.wait_labelled(len(events), 300)
        committed = wait_committed(self.bootstrap, self.group, self.topics["input"], self.partitions, total, timeout=120)
        assert committed == total, f"{fault}: {committed} of {total} offsets committed"
        recover_s = round(time.monotonic() - self.faults_cleared_at, 1)
        # Alerts are sent off the commit path: wait until the outbox in Redis is empty.
        client = connect(redis_url or self.redis_url, self.redis_cluster)
        alerts = AlertStore(client, self.layout, 3600)
        time.sleep(3)
        deadline = time.monotonic() + 30
        while (pending := alerts.pending()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not pending, f"{fault}: alerts still pending after 30 s: {pending[:3]}"
        codes = [p.stop() for p in self.processes if p.proc and p.proc.poll() is None]
        assert all(code == 0 for code in codes), f"{fault}: consumer exit codes {codes}"
        labelled = self.outputs(timeout=5)
        by_id, seen = labelled_by_id(labelled)
        sources = (orjson.loads(m.value())["source"] for m in read_topic(self.bootstrap, self.topics["dlq"], expect=10**9, timeout=3))
        dead = {(s["partition"], s["offset"]) for s in sources}
        store = CounterStore(client, self.layout)
        now = int(time.time() * 1000)
        exact = all(store.window_stats_many([(kind, name, 86400)], now)[0].counts == counts for (kind, name), counts in expected_counts(by_id).items())
        recorded = {(a["alert_id"], state) for a in AlertStore(client, self.layout, 3600).read()
                    for state in (("firing",) if a["state"] == "firing" else ("firing", "resolved"))}
        self.sent_alerts = [orjson.loads(m.value()) for m in read_topic(self.bootstrap, self.alerts_topic, expect=10**9, timeout=3)]
        sent = {(a["alert_id"], a["state"]) for a in self.sent_alerts}
        fired = sorted({f"{a['subject']}:{a['query'] or a['product_id']}" for a in self.sent_alerts if a["state"] == "firing"})
        self._cleanup(client)
        return Row(fault, total, len(set(by_id) & {e["event_id"] for e in events}), sum(seen.values()) - len(seen),
                   len(dead), exact, len(recorded), len(sent & recorded), sent == recorded, fired, recover_s)

    def _cleanup(self, client) -> None:
        keys = list(client.scan_iter(match=self.prefix + ":*", count=1000))
        if keys:
            client.delete(*keys)
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.delete_topics([*self.topics.values(), self.alerts_topic]).values():
            try:
                future.result(timeout=30)
            except Exception:  # noqa: BLE001 - best effort: a broker restarted mid-test may still be settling
                pass


class _Reader:
    """A long-lived reader of a topic that counts unique event ids."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-reader-{uuid.uuid4().hex}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.consumer.subscribe([topic])
        self.ids: set[str] = set()

    def unique(self, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for msg in self.consumer.consume(500, 0.2):
                if msg.error() is None:
                    self.ids.add(orjson.loads(msg.value())["event_id"])
        return len(self.ids)

    def close(self) -> None:
        self.consumer.close()
