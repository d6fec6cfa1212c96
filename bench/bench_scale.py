"""`make bench` (scale): does the read side stay flat from a thousand subjects to a million?

Loads a Redis with synthetic counters and alert state for each size in --sizes (1k, 100k,
1M subjects by default), written by the consumer's own code (CounterStore.apply in large
batches, AlertStore.fire/resolve), so the layout is exactly what the consumer writes. Sizes
grow one tail: subject i has max(1, C·i^-0.9) events over the last 24 h at every size
(C = --head-events), half queries, half products, two model versions (a swap 6 h ago).

At each size, through the real HTTP API (consumer.api.make_server, as `serve` runs it):
  - /top?window=1h and window=24h (kind=query, limit=50, min_count=10: the dashboard's
    request) and /series?window=24h for head subjects: p50/p99 latency;
  - Redis commands and bytes per request (INFO commandstats and INFO stats deltas);
  - Redis memory per subject-day (INFO memory, over the empty server).
Each endpoint is measured twice: every request computed (the API's shared cache off),
and as a dashboard sees it (the cache on: many tabs polling the same URLs).

And the loop thread's alert scheduling per batch (AlertStep.touched + tick, with the
spike check itself stubbed out, as that part is Redis reads): a schedule tracking 1k and
200k active subjects. Each batch touches 64 tracked subjects and one new one (so a full
schedule evicts), and the simulated clock moves interval·64/N per batch, so each batch
also finds about 64 subjects due at every size: only the number tracked differs.

By default a private redis-server (no persistence) on a free port is started and
stopped, so other users of the shared Redis neither disturb the figures nor see the
gigabytes; --redis-url uses an existing server instead (its DB must be empty; it is
flushed at the end, also on error). Writes bench/results/scale.json, prints one table,
and draws bench/scale.png (read latency against subjects).
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import orjson
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consumer.alerts.schedule import EvaluationSchedule  # noqa: E402
from consumer.alerts.state import AlertStore  # noqa: E402
from consumer.api import ReadAPI, make_server  # noqa: E402
from consumer.pipeline.alerting import AlertStep  # noqa: E402
from consumer.state.counters import CounterLayout, CounterStore, Increment  # noqa: E402
from consumer.state.rates import RateStore  # noqa: E402
from model_runtime.stats.rates import Rates  # noqa: E402

import numpy as np  # noqa: E402

PREFIX = "scale"
LABELS = ("negative", "neutral", "positive")
VERSIONS = ("english:v1", "english:v2")  # v2 labels the last SWAP_S seconds
SWAP_S = 6 * 3600
PARTITIONS = 12
ALERT_WINDOW_S, BASELINE_S, COOLDOWN_S = 300, 86400, 1800
# P(label) per decided label, micro-units: a few fixed vectors keep generation cheap.
PROBS = {"negative": (("negative", 780_000), ("neutral", 140_000), ("positive", 80_000)),
         "neutral": (("negative", 200_000), ("neutral", 600_000), ("positive", 200_000)),
         "positive": (("negative", 60_000), ("neutral", 120_000), ("positive", 820_000))}
VALIDATION = Rates(LABELS, np.array([[0.78, 0.14, 0.08], [0.25, 0.5, 0.25], [0.07, 0.13, 0.8]]), (500, 300, 700),
                   (0.03, 0.04, 0.02), "validation")
TOP = "/top?kind=query&window={window}&min_count=10&limit=50"


def subject(i: int) -> tuple[str, str]:
    return ("query", f"query {i // 2}") if i % 2 == 0 else ("product", f"sku-{i // 2:07d}")


def events_of(i: int, head: int) -> int:
    return max(1, round(head * (i + 1) ** -0.9))


class Loader:
    """Writes subjects [done, size) through CounterStore.apply, in event-time order within each subject."""

    def __init__(self, store: CounterStore, head: int, seed: int) -> None:
        self.store, self.head = store, head
        self.rng = random.Random(seed)
        self.done = 0
        self.offsets = [0] * PARTITIONS
        self.events = 0

    def grow(self, size: int, now_ms: int, chunk: int = 20_000) -> None:
        batch: list[Increment] = []
        for i in range(self.done, size):
            kind, name = subject(i)
            share = self.rng.uniform(0.05, 0.5)
            partition = i % PARTITIONS
            for ts in sorted(now_ms - self.rng.randrange(1000, 86_340_000) for _ in range(events_of(i, self.head))):
                label = "negative" if self.rng.random() < share else ("positive" if self.rng.random() < 0.7 else "neutral")
                self.offsets[partition] += 1
                batch.append(Increment(kind, name, "reviews", partition, self.offsets[partition], ts, label, PROBS[label],
                                       VERSIONS[ts >= now_ms - SWAP_S * 1000]))
            if len(batch) >= chunk:
                self._apply(batch, now_ms)
                batch = []
        self._apply(batch, now_ms)
        self.done = size

    def _apply(self, batch: list[Increment], now_ms: int) -> None:
        if batch:
            self.store.apply(batch, now_ms)
            self.events += len(batch)


def load_alerts(alerts: AlertStore, first: int, last: int, now_ms: int) -> int:
    """Alert state for every 200th subject of [first, last): fired 2 h ago, every other one resolved since."""
    n = 0
    for i in range(first - first % 200 + (200 if first % 200 else 0), last, 200):
        s = subject(i)
        fired = now_ms - 7_200_000
        payload = orjson.dumps({"alert_id": f"a{i}", "state": "firing", "subject": s[0], "fired_at": fired})
        alerts.fire(s, f"a{i}", fired, payload)
        if i % 400 == 0:
            alerts.resolve(s, f"a{i}", now_ms + COOLDOWN_S * 1000, now_ms - 3_600_000, payload)
        n += 1
    return n


# ---- the server and its measures --------------------------------------------------------------

@contextmanager
def private_redis():
    """A redis-server of our own on a free port, no persistence; removed on exit."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-scale-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir, "--logfile", os.path.join(workdir, "redis.log")])
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def command_calls(client: redis.Redis) -> int:
    return sum(stats["calls"] for name, stats in client.info("commandstats").items() if name.startswith("cmdstat_"))


def net_bytes(client: redis.Redis) -> int:
    info = client.info("stats")
    return info["total_net_input_bytes"] + info["total_net_output_bytes"]


def get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        return body
    finally:
        conn.close()


def measure(client: redis.Redis, port: int, paths: list[str], requests: int, seconds: float) -> dict:
    """p50/p99 over up to `requests` GETs (cycling through paths; at least 5, at most `seconds` after that),
    with the Redis commands and bytes each cost (INFO deltas; the INFO reads themselves taken out)."""
    get(port, paths[0])  # warm: connections, scripts
    calls, sent = command_calls(client), net_bytes(client)
    latencies: list[float] = []
    started = time.perf_counter()
    while len(latencies) < requests and (len(latencies) < 5 or time.perf_counter() - started < seconds):
        path = paths[len(latencies) % len(paths)]
        t = time.perf_counter()
        get(port, path)
        latencies.append((time.perf_counter() - t) * 1000)
    n = len(latencies)
    commands = command_calls(client) - calls - 2  # the two INFO calls between the readings
    latencies.sort()
    return {"requests": n, "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(latencies[min(n - 1, int(0.99 * n))], 2),
            "redis_commands": round(commands / n, 1), "redis_bytes": round((net_bytes(client) - sent) / n)}


@contextmanager
def api_server(store: CounterStore, rates: RateStore, alerts: AlertStore, cache_s: float):
    api = ReadAPI(store, rates, alerts, ALERT_WINDOW_S, BASELINE_S, cache_s=cache_s)
    server = make_server(api, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def read_measures(client, store, rates, alerts, size: int, args) -> dict:
    heads = [quote(subject(i)[1]) for i in range(0, min(size, 400), 2)]
    series = [f"/series?kind=query&name={name}&window=24h" for name in heads]
    out = {}
    for mode, cache_s in (("computed", 0.0), ("served", args.cache_s)):
        with api_server(store, rates, alerts, cache_s) as port:
            out[mode] = {
                "top_1h": measure(client, port, [TOP.format(window="1h")], args.requests, args.seconds),
                "top_24h": measure(client, port, [TOP.format(window="24h")], args.requests, args.seconds),
                "series_24h": measure(client, port, series, args.requests, args.seconds),
            }
    return out


# ---- alert scheduling on the loop thread ------------------------------------------------------

class _NoCheck:
    """The spike check stubbed out: what is timed is the scheduling around it."""

    firing: set = set()

    class alerts:  # noqa: N801 (stands in for the detector's AlertStore)
        @staticmethod
        def firing() -> list:
            return []

    def check(self, due) -> list:
        return []


class _NoOutbox:
    def add(self, events) -> None:
        pass

    def pump(self) -> None:
        pass


def scheduling(active: int, batches: int, seed: int, interval_s: float = 10.0, touched_per_batch: int = 64) -> dict:
    """Per-batch time of AlertStep.touched + tick with `active` tracked subjects (defaults as `run`)."""
    rng = random.Random(seed)
    clock = [0.0]
    schedule = EvaluationSchedule(interval_s, ALERT_WINDOW_S)
    step = AlertStep(_NoCheck(), schedule, _NoOutbox(), clock=lambda: clock[0])
    dt = interval_s * touched_per_batch / active

    def increments(names) -> list[Increment]:
        return [Increment("query", name, "reviews", 0, 0, 0, "negative") for name in names]

    for start in range(0, active, touched_per_batch):  # everyone touched once, spread over one interval
        step.touched(increments(f"s{i}" for i in range(start, min(active, start + touched_per_batch))))
        step.tick()
        clock[0] += dt
    fresh = active
    times = []
    for b in range(batches):
        names = [f"s{rng.randrange(active)}" for _ in range(touched_per_batch)] + [f"s{fresh}"]
        fresh += 1
        batch = increments(names)
        t = time.perf_counter()
        step.touched(batch)
        step.tick()
        times.append((time.perf_counter() - t) * 1e6)
        clock[0] += dt
    times.sort()
    return {"active": active, "tracked": len(schedule), "batches": batches, "mean_us": round(statistics.fmean(times), 1),
            "p50_us": round(times[len(times) // 2], 1), "p99_us": round(times[int(0.99 * len(times))], 1)}


# ---- report -----------------------------------------------------------------------------------

def table(report: dict) -> str:
    rows = [f"{'subjects':>9} {'measure':<11} {'mode':<9} {'p50 ms':>8} {'p99 ms':>8} {'cmds/req':>9} {'bytes/req':>10}"]
    for size in report["sizes"]:
        for mode, measures in size["reads"].items():
            for name, m in measures.items():
                rows.append(f"{size['subjects']:>9} {name:<11} {mode:<9} {m['p50_ms']:>8} {m['p99_ms']:>8} "
                            f"{m['redis_commands']:>9} {m['redis_bytes']:>10}")
        rows.append(f"{size['subjects']:>9} memory: {size['memory_per_subject_day']} B per subject-day "
                    f"({size['events']} events, load {size['load_s']} s)")
    for s in report["scheduling"]:
        rows.append(f"scheduling: {s['active']:>7} active ({s['tracked']} tracked): mean {s['mean_us']} us, p99 {s['p99_us']} us per batch")
    return "\n".join(rows)


def plot(report: dict, path: str, before: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s["subjects"] for s in report["sizes"]]
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    if before:  # the figures before issue 25's changes: every request computed, no shared cache
        for name, marker in (("top_1h", "s"), ("top_24h", "D")):
            ax.plot([s["subjects"] for s in before["sizes"]], [s["reads"]["computed"][name]["p99_ms"] for s in before["sizes"]], "--",
                    marker=marker, color="grey", label=f"{name} p99 (before)")
    for name, colour in (("top_1h", "tab:red"), ("top_24h", "tab:purple"), ("series_24h", "tab:blue")):
        for mode, style in (("computed", "-"), ("served", ":")):
            for q, marker in (("p50_ms", "o"), ("p99_ms", "^")):
                ax.plot(sizes, [s["reads"][mode][name][q] for s in report["sizes"]], style, marker=marker, color=colour,
                        label=f"{name} {q[:3]} ({mode})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("subjects (queries + products) in Redis")
    ax.set_ylabel("HTTP latency, ms")
    ax.set_title("read API latency against the number of subjects")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run(args, url: str) -> dict:
    client = redis.Redis.from_url(url)
    if client.dbsize():
        raise SystemExit(f"error: {url} is not empty; pass --redis-url with an empty DB (e.g. redis://127.0.0.1:6379/14)")
    layout = CounterLayout(PREFIX)
    store = CounterStore(client, layout)
    rates = RateStore(store)
    alerts = AlertStore(client, layout, BASELINE_S + ALERT_WINDOW_S + COOLDOWN_S + 3600)
    for version in VERSIONS:
        rates.publish_checkpoint(version, list(LABELS), {"validation": VALIDATION})
    try:
        empty = client.info("memory")["used_memory"]
        loader = Loader(store, args.head_events, args.seed)
        report = {"head_events": args.head_events, "sizes": [], "scheduling": []}
        for size in args.sizes:
            now_ms = int(time.time() * 1000)
            first = loader.done
            t = time.perf_counter()
            loader.grow(size, now_ms)
            load_alerts(alerts, first, size, now_ms)
            load_s = time.perf_counter() - t
            memory = client.info("memory")["used_memory"] - empty
            entry = {"subjects": size, "events": loader.events, "load_s": round(load_s, 1), "redis_memory_bytes": memory,
                     "memory_per_subject_day": round(memory / size), "keys": client.dbsize(),
                     "reads": read_measures(client, store, rates, alerts, size, args)}
            report["sizes"].append(entry)
            print(f"{size} subjects: loaded in {load_s:.0f} s", flush=True)
        for active in args.active:
            report["scheduling"].append(scheduling(active, args.batches, args.seed))
        return report
    finally:
        client.flushdb()


def main(argv: list[str] | None = None) -> int:
    def counts(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
        if not values or min(values) < 2 or values != sorted(values):
            raise argparse.ArgumentTypeError(f"{text!r}: sizes must be increasing and at least 2")
        return values

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=counts, default=[1000, 100_000, 1_000_000], help="subject counts to load and measure, increasing (default 1000,100000,1000000)")
    parser.add_argument("--active", type=counts, default=[1000, 200_000], help="active subjects the alert schedule tracks (default 1000,200000)")
    parser.add_argument("--batches", type=int, default=3000, help="batches timed per scheduling size (default 3000)")
    parser.add_argument("--head-events", type=int, default=20_000, help="events in 24 h of the busiest subject; subject i gets max(1, C·i^-0.9) (default 20000)")
    parser.add_argument("--requests", type=int, default=300, help="requests per endpoint and size, at most (default 300)")
    parser.add_argument("--seconds", type=float, default=15.0, help="stop an endpoint's requests after this long, once 5 are done (default 15)")
    parser.add_argument("--cache-s", type=float, default=2.0, help="the API's shared cache lifetime in the 'served' measure (default 2)")
    parser.add_argument("--redis-url", default="", help="use this Redis (an empty DB, flushed at the end) instead of a private redis-server")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"), help="where to write the figures")
    parser.add_argument("--plot", default=str(ROOT / "bench" / "scale.png"), help="where to draw latency against subjects ('' = no plot)")
    parser.add_argument("--before", default=str(ROOT / "bench" / "scale-before.json"),
                        help="a report from before the read side was reworked, drawn in grey when the file exists ('' = none)")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.requests < 1 or args.head_events < 1:
        parser.error("--batches, --requests and --head-events must be at least 1")
    started = time.perf_counter()
    if args.redis_url:
        report = run(args, args.redis_url)
    elif shutil.which("redis-server"):
        with private_redis() as url:
            report = run(args, url)
    else:
        parser.error("no redis-server on PATH: pass --redis-url with an empty DB")
    report["wall_s"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(table(report))
    if args.plot:
        before = Path(args.before) if args.before else None
        plot(report, args.plot, orjson.loads(before.read_bytes()) if before and before.exists() else None)
    print(f"wrote {out}{' and ' + args.plot if args.plot else ''} in {report['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
