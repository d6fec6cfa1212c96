"""`make retrain-skewed`: a retrain from a review stream that is 80% 4-5 stars must not cost macro-F1.

Real review streams are mostly positive. This streams the shop's rated reviews (those of
`make retrain`: brands the deployed checkpoint never saw) into a topic with 80% of them
4-5 stars, then retrains the deployed checkpoint from the topic twice with one recipe:
as `trainer train` does by default for kafka: sources (class-balanced sampling), and with
`--balance none` for contrast. The deployed and both retrained checkpoints are scored on
held-out shop reviews that were never streamed, the same number per class, so macro-F1
there says what a shopper-facing share would see. The gate's own verdict (a paired
bootstrap on the stream's skewed test split and on the curated hold-out) is printed too.
Arguments after `--` go to `trainer train`.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo_consumer import demo_topics  # noqa: E402
from run_retrain import seed_work_dir, shop_reviews  # noqa: E402
from schemas.checkpoint import read_manifest  # noqa: E402
from trainer.cli import EvaluateArguments  # noqa: E402
from trainer.data import RatingCutoffs  # noqa: E402
from trainer.evaluate_command import run_evaluate  # noqa: E402

LABELS = ("negative", "neutral", "positive")


def skewed_stream(events: list[dict], held_out_per_class: int, positive_share: float) -> tuple[list[dict], list[dict]]:
    """(held-out reviews: the same number per class, the stream: every other positive review and as many
    negative and neutral ones as make positives `positive_share` of it)."""
    cutoffs = RatingCutoffs()
    by_label: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_label[cutoffs.label(event["rating"])].append(event)
    held_out = [event for label in LABELS for event in by_label[label][:held_out_per_class]]
    rest = {label: by_label[label][held_out_per_class:] for label in LABELS}
    others = round(len(rest["positive"]) * (1 - positive_share) / positive_share)
    stream = rest["positive"] + rest["negative"][: others // 2] + rest["neutral"][: others - others // 2]
    random.Random(5).shuffle(stream)
    return held_out, stream


def retrain(name: str, topic: str, args, deployed_dir: Path, train_args: list[str], extra: list[str]) -> tuple[int, Path | None]:
    out = Path(args.work_dir) / name
    seed_work_dir(str(deployed_dir), out)
    before = {p.name for p in out.iterdir()}
    cmd = [sys.executable, "-m", "trainer", "train", "--data", f"kafka:{topic}", "--bootstrap-servers", args.bootstrap_servers,
           "--base-model", str(deployed_dir), "--output-dir", str(out), *train_args, *extra]
    print(f"\nretrain ({name}): {' '.join(cmd[3:])}", flush=True)
    started = time.monotonic()
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    print(f"  exit {rc} after {time.monotonic() - started:.0f} s", flush=True)
    built = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink() and p.name not in before and not p.name.startswith(".")]
    return rc, max(built, key=lambda p: p.name, default=None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.environ.get("CHECKPOINT", "checkpoints/latest"), help="the deployed checkpoint [env CHECKPOINT]")
    parser.add_argument("--work-dir", default="checkpoints/shop-skewed", help="where the retrained versions are written")
    parser.add_argument("--positive-share", type=float, default=0.8, help="share of 4-5 star reviews in the stream")
    parser.add_argument("--held-out-per-class", type=int, default=200, help="held-out shop reviews per class, never streamed")
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"), help="[env KAFKA_BOOTSTRAP_SERVERS]")
    args, train_args = parser.parse_known_args()
    train_args = [a for a in train_args if a != "--"]
    if not 0.34 <= args.positive_share < 1:
        parser.error("--positive-share must be in [0.34, 1)")
    if not 10 <= args.held_out_per_class <= 1000:
        parser.error("--held-out-per-class must be 10 to 1000")

    deployed_dir = Path(args.checkpoint).resolve()
    held_out, stream = skewed_stream(shop_reviews(random.Random(11)), args.held_out_per_class, args.positive_share)
    cutoffs = RatingCutoffs()
    counts = {label: sum(cutoffs.label(e["rating"]) == label for e in stream) for label in LABELS}
    print(f"the skewed stream: {len(stream)} rated shop reviews, {counts['positive'] / len(stream):.0%} of them 4-5 stars "
          f"({', '.join(f'{n} {label}' for label, n in counts.items())}); held out: {len(held_out)} never streamed "
          f"({args.held_out_per_class} per class); deployed: {deployed_dir.name}", flush=True)
    held_out_file = Path(args.work_dir) / "held_out.jsonl"
    held_out_file.parent.mkdir(parents=True, exist_ok=True)
    held_out_file.write_bytes(b"".join(orjson.dumps({"text": e["text"], "rating": e["rating"]}) + b"\n" for e in held_out))

    topic = f"retrain-skewed-{time.strftime('%Y%m%d%H%M%S')}"
    results = {}
    with demo_topics(args.bootstrap_servers, [topic], partitions=2):
        producer = Producer({"bootstrap.servers": args.bootstrap_servers, "enable.idempotence": True, "linger.ms": 20})
        for event in stream:
            producer.produce(topic, orjson.dumps(event), key=event["query"].encode())
        if producer.flush(30):
            print("the stream could not be written to Kafka", flush=True)
            return 1
        for name, extra in (("balanced", []), ("unbalanced", ["--balance", "none"])):
            results[name] = retrain(name, topic, args, deployed_dir, train_args, extra)
    return _report(deployed_dir, results, held_out_file)


def _report(deployed_dir: Path, results: dict[str, tuple[int, Path | None]], held_out_file: Path) -> int:
    rows = [("deployed", deployed_dir, None)] + [(name, path, rc) for name, (rc, path) in results.items()]
    if any(path is None for _, path, _ in rows):
        print("a retrain wrote no checkpoint; see its output above", flush=True)
        return 1
    print(f"\nmacro-F1 on the {held_out_file} reviews (never streamed, never trained on; 3 classes from the stars)")
    print(f"  {'model':<12}{'gate':<28}{'accuracy':>9}{'macro-F1':>9}" + "".join(f"{'F1 ' + label:>13}" for label in LABELS))
    scores = {}
    for name, path, rc in rows:
        report = run_evaluate(EvaluateArguments(checkpoint=str(path), data=[str(held_out_file)]))
        scores[name] = report["macro_f1"]
        gate = "" if rc is None else _verdict(rc, read_manifest(path).get("comparison", {}))
        print(f"  {name:<12}{gate:<28}{report['accuracy']:>9.3f}{report['macro_f1']:>9.3f}"
              + "".join(f"{report['per_class'][label]['f1']:>13.3f}" for label in LABELS), flush=True)
    kept = scores["balanced"] >= scores["deployed"]
    print(f"\nthe default (balanced) retrain {'keeps' if kept else 'LOSES'} macro-F1 on held-out reviews: "
          f"{scores['deployed']:.3f} -> {scores['balanced']:.3f} (unbalanced: {scores['unbalanced']:.3f})", flush=True)
    return 0


def _verdict(rc: int, comparison: dict) -> str:
    if not comparison.get("comparable"):
        return "published" if rc == 0 else f"exit {rc}"
    low = min(comparison["delta_bounds"][0], comparison.get("holdout", {}).get("delta_bounds", [1, 1])[0])
    return f"{'published' if rc == 0 else 'refused'} (bound {low:+.3f})"


if __name__ == "__main__":
    sys.exit(main())
