"""The two Quix Streams applications bench/bench_peers.py compares the consumer with, as a new user writes them.

Run by bench_peers.py in the bench venv (make bench-peers builds it: Quix pins an older confluent-kafka):
  per-message: sdf.apply calls a transformers text-classification pipeline on each event
  batched:     a tumbling count window collects --window events of a key; one pipeline call per window
Both read --topic from the earliest offset and produce labelled events to --output-topic. Standalone: the
project's packages are not imported, only Quix, transformers and torch (CPU).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from quixstreams import Application
from transformers import Pipeline, pipeline


def label(event: dict, result: dict) -> dict:
    return {**event, "sentiment": {"label": result["label"], "score": result["score"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["per-message", "batched"], help="one pipeline call per event, or per window")
    parser.add_argument("--bootstrap-servers", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--topic", required=True, help="input topic (the backlog)")
    parser.add_argument("--output-topic", required=True, help="where labelled events go")
    parser.add_argument("--group-id", required=True, help="Quix consumer group")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (a transformers model)")
    parser.add_argument("--max-length", type=int, required=True, help="tokens kept per text (the checkpoint's own)")
    parser.add_argument("--window", type=int, default=64, help="batched: events per tumbling count window and pipeline batch")
    args = parser.parse_args()

    classify = pipeline("text-classification", model=args.checkpoint, device="cpu")
    tokenizer_kwargs = {"truncation": True, "max_length": args.max_length}
    classify("warm-up", **tokenizer_kwargs)

    with tempfile.TemporaryDirectory(prefix="quix-state-") as state_dir:
        stream(args, classify, tokenizer_kwargs, state_dir)


def stream(args: argparse.Namespace, classify: Pipeline, tokenizer_kwargs: dict, state_dir: str) -> None:
    app = Application(broker_address=args.bootstrap_servers, consumer_group=args.group_id, auto_offset_reset="earliest",
                      state_dir=state_dir)
    sdf = app.dataframe(app.topic(args.topic))
    first: list[float] = []

    def mark_first(_event: dict) -> None:
        # The bench times from this line (first event consumed) to the last labelled event in --output-topic.
        if not first:
            first.append(time.time())
            print(json.dumps({"first_consumed_ms": int(first[0] * 1000)}), flush=True)

    sdf = sdf.update(mark_first)
    if args.mode == "per-message":
        sdf = sdf.apply(lambda event: label(event, classify(event["text"], **tokenizer_kwargs)[0]))
    else:
        def label_window(window: dict) -> list[dict]:
            events = window["value"]
            results = classify([e["text"] for e in events], batch_size=args.window, **tokenizer_kwargs)
            return [label(e, r) for e, r in zip(events, results)]

        sdf = sdf.tumbling_count_window(args.window).collect().final()
        sdf = sdf.apply(label_window, expand=True)
    sdf.to_topic(app.topic(args.output_topic))
    app.run()


if __name__ == "__main__":
    main()
