"""`make bench-peers`: this consumer next to Quix Streams, per-message and batched, on one backlog.

One backlog from the built-in corpora (bench_pipeline's events) is preloaded into a fresh topic in the real
Kafka; three peers label it, one after another, each in its own process, with the same checkpoint:
  Quix per-message: sdf.apply calls a transformers pipeline on each event (torch, CPU)
  Quix batched:     a tumbling count window of --window events, one pipeline call per window
  this consumer:    `python -m consumer run` with its defaults -> labelled topic + Redis
(bench/quix_peers.py holds the two Quix applications; they run in the bench venv, .venv/bench.)
Each peer: events/s from its first consumed event to the last labelled event in its output topic (this consumer:
to its last commit, which also waits for Redis), and the peak RSS of its process tree. Every output topic is read
back: each event of the backlog must come out labelled, or the bench fails. Writes bench/results/peers.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_pipeline import BOOTSTRAP, REDIS_URL, Run, _cpu_model, corpus_texts, events  # noqa: E402

from consumer.config import ModelSettings  # noqa: E402
from schemas.checkpoint import CheckpointError, read_manifest  # noqa: E402
from schemas.redis_connection import connect  # noqa: E402

RESULTS = ROOT / "bench" / "results"
QUIX_APP = ROOT / "bench" / "quix_peers.py"
PARTITIONS = 4  # Run's input topic
OUTPUT_PARTITIONS = 2  # as Run's output topic
# Issue 25: this consumer against each Quix peer.
TARGETS = {"per-message": 4.0, "batched": 2.0}
# A peer that labels nothing new for this long has stalled: fail rather than wait forever.
STALL_S = 120.0


def produce_backlog(topic: str, values: list[bytes]) -> None:
    """Round-robin over the partitions, keyed by partition: Quix windows are per key (and skip unkeyed events),
    so each partition's events share one key and fill its windows; the consumer ignores input keys."""
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 20, "enable.idempotence": True})
    for i, value in enumerate(values):
        partition = i % PARTITIONS
        producer.produce(topic, value, key=f"partition-{partition}", partition=partition)
        if i % 5000 == 0:
            producer.poll(0)
    producer.flush(60)


class Outputs:
    """Counts and reads back the peers' output topics (one long-lived client: the peers share the CPU with it)."""

    def __init__(self) -> None:
        self.client = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "bench-peers-reader", "enable.auto.commit": False})

    def count(self, topic: str) -> int:
        return sum(self.client.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(OUTPUT_PARTITIONS))

    def labelled_ids(self, topic: str) -> tuple[set[str], int]:
        """Event ids of the labelled events in `topic`, and how many messages it holds."""
        total = self.count(topic)
        self.client.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(OUTPUT_PARTITIONS)])
        ids, read = set(), 0
        deadline = time.monotonic() + 120
        while read < total and time.monotonic() < deadline:
            for msg in self.client.consume(1000, timeout=1.0):
                if msg.error() is None:
                    read += 1
                    event = orjson.loads(msg.value())
                    if event.get("sentiment", {}).get("label"):
                        ids.add(event["event_id"])
        self.client.unassign()
        return ids, total

    def close(self) -> None:
        self.client.close()


def tree_peak_rss_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of `pid` and its descendants, summed: exact for one process, an upper bound for a tree."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total_kb, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        total_kb += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0)
    return total_kb / 1024


def wait_labelled(name: str, proc: subprocess.Popen, log_path: Path, outputs: Outputs, topic: str, n: int,
                  done: Callable[[], bool] = lambda: True) -> float:
    """Wait until `topic` holds n events and `done()`; the time that happened. Fails on an exit or a stall."""
    last, progress_at = -1, time.monotonic()
    while True:
        count = outputs.count(topic)
        if count >= n and done():
            return time.time()
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} after {count} of {n} events; see {log_path}")
        if count != last:
            last, progress_at = count, time.monotonic()
        elif time.monotonic() - progress_at > STALL_S:
            raise RuntimeError(f"{name} stalled at {count} of {n} labelled events for {STALL_S:.0f} s; see {log_path}")
        time.sleep(0.2)


def check_labelled(name: str, outputs: Outputs, topic: str, expected_ids: set[str]) -> int:
    """Every backlog event came out labelled; returns the duplicates (allowed under at-least-once)."""
    ids, total = outputs.labelled_ids(topic)
    missing = expected_ids - ids
    if missing:
        raise RuntimeError(f"{name} labelled {len(expected_ids) - len(missing)} of {len(expected_ids)} events "
                           f"({len(missing)} missing, e.g. {sorted(missing)[:3]})")
    return total - len(ids)


def figures(n: int, first_s: float, end_s: float, rss_mb: float, duplicates: int) -> dict:
    seconds = end_s - first_s
    # The 1-minute load average as the peer finished: the CPUs are shared, and a busy minute slows the peer measured in it.
    return {"events": n, "seconds": round(seconds, 2), "eps": round(n / seconds, 1), "peak_rss_mb": round(rss_mb, 1),
            "duplicates": duplicates, "load_average_1m": round(os.getloadavg()[0], 2)}


def quix_peer(mode: str, run: Run, args: argparse.Namespace, checkpoint: str, max_length: int, outputs: Outputs,
              expected_ids: set[str]) -> dict:
    name = f"Quix {mode}"
    topic = f"{run.id}-quix-{mode}-out"
    for future in run.admin.create_topics([NewTopic(topic, num_partitions=OUTPUT_PARTITIONS, replication_factor=1)]).values():
        future.result(30)
    log_path = RESULTS / f"{run.id}-quix-{mode}.log"
    cmd = [args.quix_python, str(QUIX_APP), mode, "--bootstrap-servers", BOOTSTRAP, "--topic", run.topics["in"],
           "--output-topic", topic, "--group-id", f"{run.id}-quix-{mode}", "--checkpoint", checkpoint,
           "--max-length", str(max_length), "--window", str(args.window)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            first = first_consumed_s(name, proc, log_path)
            end = wait_labelled(name, proc, log_path, outputs, topic, len(expected_ids))
            rss = tree_peak_rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return figures(len(expected_ids), first, end, rss, check_labelled(name, outputs, topic, expected_ids))


def first_consumed_s(name: str, proc: subprocess.Popen, log_path: Path, timeout: float = 180) -> float:
    """The time the Quix app consumed its first event: the one JSON line quix_peers.py prints for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_path.read_bytes().splitlines():
            if line.startswith(b'{"first_consumed_ms"'):
                return orjson.loads(line)["first_consumed_ms"] / 1000
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before consuming; see {log_path}")
        time.sleep(0.1)
    raise RuntimeError(f"{name} consumed nothing in {timeout:.0f} s; see {log_path}")


def this_consumer(run: Run, outputs: Outputs, expected_ids: set[str]) -> dict:
    """bench_pipeline's consumer run, ending at the later of: all n labelled in the output topic, all n committed."""
    n = len(expected_ids)
    run.start()
    first = run.wait_logged("first batch polled")["epoch_ms"] / 1000
    end = wait_labelled("this consumer", run.proc, run.log_path, outputs, run.topics["out"], n, lambda: run.committed() >= n)
    rss = tree_peak_rss_mb(run.proc.pid)
    return figures(n, first, end, rss, check_labelled("this consumer", outputs, run.topics["out"], expected_ids))


def delete_leftovers(admin: AdminClient, run_id: str) -> None:
    """The Quix output topics and whatever Quix created for its state (changelog topics carry the group name)."""
    topics = [t for t in admin.list_topics(timeout=10).topics if run_id in t]
    if topics:
        for future in admin.delete_topics(topics).values():
            try:
                future.result(30)
            except Exception:  # noqa: BLE001 - cleanup only
                pass
    redis = connect(REDIS_URL, check=False)
    for key in redis.scan_iter(match=f"{run_id}:*", count=1000):
        redis.delete(key)
    redis.close()


def versions(python: str) -> dict:
    code = ("import json, importlib.metadata as m; "
            "print(json.dumps({p: m.version(p) for p in ('quixstreams', 'confluent-kafka', 'torch', 'transformers')}))")
    return orjson.loads(subprocess.run([python, "-c", code], capture_output=True, check=True, text=True).stdout)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.environ.get("CHECKPOINT", "checkpoints/latest"),
                        help="checkpoint all three peers load [env CHECKPOINT]")
    parser.add_argument("--events", type=int, default=6000,
                        help=f"backlog size, rounded up to whole Quix windows on each of the {PARTITIONS} partitions "
                             "(a count window closes only when full, and a backlog has no later events to fill it)")
    parser.add_argument("--window", type=int, default=64, help="Quix batched: events per tumbling count window (and pipeline batch_size)")
    parser.add_argument("--quix-python", default=str(ROOT / ".venv" / "bench" / "bin" / "python"),
                        help="python of the venv holding Quix Streams (make bench-peers builds .venv/bench)")
    args = parser.parse_args()
    if args.events < 1:
        parser.error(f"--events must be at least 1, got {args.events}")
    if args.window < 1:
        parser.error(f"--window must be at least 1, got {args.window}")
    if not Path(args.quix_python).exists():
        parser.error(f"no Quix Streams venv at {args.quix_python}: make bench-peers builds it")
    try:
        args.max_length = read_manifest(args.checkpoint)["max_length"]
    except CheckpointError as exc:
        parser.error(str(exc))
    return args


def main() -> int:
    args = parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    checkpoint = str(Path(args.checkpoint).resolve())
    per_window = PARTITIONS * args.window
    n = -(-args.events // per_window) * per_window
    texts = corpus_texts()[:n]
    if len(texts) < n:
        sys.exit(f"error: --events {args.events} needs {n} texts; the built-in corpora hold {len(texts)}")
    started, load = time.monotonic(), os.getloadavg()
    peer_versions = versions(args.quix_python)
    defaults = ModelSettings()
    run = Run("peers", checkpoint, argparse.Namespace(batch_size=defaults.batch_size, max_wait_ms=defaults.max_wait_ms))
    outputs = Outputs()
    values = events(texts, "peers")
    expected_ids = {orjson.loads(v)["event_id"] for v in values}
    results = {}
    try:
        produce_backlog(run.topics["in"], values)
        print(f"backlog: {n} events ({args.events} asked, rounded up to whole windows of {args.window} on "
              f"{PARTITIONS} partitions); load average {load[0]:.2f}", flush=True)
        for mode in ("per-message", "batched"):
            print(f"Quix {mode} ...", flush=True)
            results[mode] = quix_peer(mode, run, args, checkpoint, args.max_length, outputs, expected_ids)
            print(f"    {results[mode]['eps']} events/s, peak RSS {results[mode]['peak_rss_mb']} MB", flush=True)
        print("this consumer ...", flush=True)
        results["consumer"] = this_consumer(run, outputs, expected_ids)
        print(f"    {results['consumer']['eps']} events/s, peak RSS {results['consumer']['peak_rss_mb']} MB", flush=True)
    finally:
        outputs.close()
        if run.proc is not None:  # Run.stop closes the log start() opens
            run.stop()
        delete_leftovers(run.admin, run.id)  # every topic of the run, Run's own included

    consumer = results["consumer"]
    ratios = {mode: {"throughput": round(consumer["eps"] / results[mode]["eps"], 2),
                     "memory": round(consumer["peak_rss_mb"] / results[mode]["peak_rss_mb"], 2),
                     "throughput_target": target, "memory_target": 1.0} for mode, target in TARGETS.items()}
    for r in ratios.values():
        r["met"] = r["throughput"] >= r["throughput_target"] and r["memory"] <= r["memory_target"]
    report = {"events": n, "window": args.window, "max_length": args.max_length, "peers": results, "ratios": ratios,
              "consumer_settings": {"batch_size": defaults.batch_size, "max_wait_ms": defaults.max_wait_ms,
                                    "backend": defaults.backend, "quantize": defaults.quantize},
              "checkpoint_version": read_manifest(checkpoint)["version"], "peer_versions": peer_versions,
              "load_average_at_start": [round(x, 2) for x in load], "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
              "cpu_model": _cpu_model(), "cpus": os.cpu_count(),
              "bench_seconds": round(time.monotonic() - started, 1), "python": platform.python_version()}
    (RESULTS / "peers.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))

    print(f"\n{'peer':<36}{'events/s':>12}{'peak RSS':>12}{'load 1m':>10}")
    for label, key in (("Quix per-message", "per-message"), (f"Quix batched (window {args.window})", "batched"),
                       ("this consumer", "consumer")):
        print(f"{label:<36}{results[key]['eps']:>12.0f}{results[key]['peak_rss_mb']:>9.0f} MB{results[key]['load_average_1m']:>10.2f}")
    print(f"\n{'this consumer vs':<36}{'throughput':>12}{'target':>9}{'memory':>10}{'target':>9}{'met':>6}")
    for mode, r in ratios.items():
        print(f"{'Quix ' + mode:<36}{r['throughput']:>11.2f}x{'>= ' + str(r['throughput_target']) + 'x':>9}"
              f"{r['memory']:>9.2f}x{'<= 1x':>9}{'yes' if r['met'] else 'no':>6}")
    print(f"\n{n} events, checkpoint {report['checkpoint_version']} (max_length {args.max_length} for all), "
          f"quixstreams {peer_versions['quixstreams']}, torch {peer_versions['torch']}, {report['cpu_model']}; "
          f"load average {load[0]:.2f} at start, {report['load_average_at_end'][0]:.2f} at end (CPUs shared); "
          f"{report['bench_seconds']:.0f} s in all")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:
        sys.exit(f"error: {exc}")
