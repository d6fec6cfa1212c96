"""`make bench`, last step: every performance target next to what this run measured.

Reads the result files the benchmarks of this run wrote (bench/results/*.json) and prints
one table: target, measured figure, met or not. A result file that is missing (its bench
not run) shows as "not run" and fails the table. Writes bench/results/summary.json.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import orjson

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Target:
    name: str
    wanted: str
    measured: str = "not run"
    met: bool = False


def _read(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return orjson.loads(path.read_bytes()) if path.is_file() else None


def _check(targets: list[Target], name: str, wanted: str, source: dict | None, figure: Callable[[dict], tuple[str, bool]]) -> None:
    target = Target(name, wanted)
    if source is not None:
        try:
            target.measured, target.met = figure(source)
        except (KeyError, IndexError, StopIteration, TypeError) as exc:
            target.measured = f"missing from the results ({exc!r})"
    targets.append(target)


def _row(backends: dict, name: str) -> dict:
    return next(row for row in backends["rows"] if row["row"] == name)


def _graphs(backends: dict) -> tuple[str, bool]:
    counts = {file: ops.get("Attention", 0) + ops.get("QAttention", 0) for file, ops in backends["graphs"].items()}
    return ", ".join(f"{file}: {n}" for file, n in counts.items()), bool(counts) and all(n > 0 for n in counts.values())


def _int8_speed(backends: dict) -> tuple[str, bool]:
    ratio = _row(backends, "onnxruntime int8")["end_to_end_vs_torch_fp32"]
    return f"{ratio:.2f}x", ratio >= 2.5


def _int8_accuracy(backends: dict) -> tuple[str, bool]:
    points = _row(backends, "onnxruntime int8")["accuracy_points_vs_torch_fp32"]
    return ", ".join(f"{split} {p:+.1f}" for split, p in points.items()), min(points.values()) >= -1.0


def _pipeline_ratio(pipeline: dict) -> tuple[str, bool]:
    ratio = pipeline["ratio_e2e_vs_model_only"]
    return f"{ratio:.3f} ({pipeline['end_to_end_eps']:.0f} / {pipeline['model_only_eps']:.0f} ev/s)", ratio >= 0.95


def _pipeline_p99(pipeline: dict) -> tuple[str, bool]:
    p99, bound = pipeline["latency_ms_90pct_load"]["p99"], pipeline["latency_bound_ms"]
    return f"{p99:.0f} ms (bound {bound:.0f} ms)", p99 <= bound


def _rss(pipeline: dict) -> tuple[str, bool]:
    return f"{pipeline['consumer_rss_mb']:.0f} MB", pipeline["consumer_rss_mb"] <= 300


def _peer(mode: str) -> Callable[[dict], tuple[str, bool]]:
    def figure(peers: dict) -> tuple[str, bool]:
        ratio = peers["ratios"][mode]
        return f"{ratio['throughput']:.2f}x at {ratio['memory']:.2f}x the memory", ratio["met"]
    return figure


def _scale_read(measure: str, bound_ms: float) -> Callable[[dict], tuple[str, bool]]:
    def figure(scale: dict) -> tuple[str, bool]:
        largest = max(scale["sizes"], key=lambda size: size["subjects"])
        computed = largest["reads"]["computed"][measure]["p99_ms"]
        served = largest["reads"]["served"][measure]["p99_ms"]
        return (f"{computed:.1f} ms computed per request, {served:.1f} ms served to the dashboards "
                f"({largest['subjects']:,} subjects)", computed <= bound_ms)
    return figure


def _scheduling(scale: dict) -> tuple[str, bool]:
    runs = sorted(scale["scheduling"], key=lambda run: run["active"])
    small, large = runs[0], runs[-1]
    ratio = large["mean_us"] / small["mean_us"]
    return (f"{ratio:.2f}x ({large['mean_us']:.0f} us at {large['active']:,} active, {small['mean_us']:.0f} us at "
            f"{small['active']:,})", ratio <= 2.0)


def summarize() -> list[Target]:
    pipeline, backends, peers, scale = (_read(name) for name in ("latest.json", "backends.json", "peers.json", "scale.json"))
    targets: list[Target] = []
    _check(targets, "attention fused in the ONNX graphs", "Attention / QAttention nodes > 0", backends, _graphs)
    _check(targets, "ORT int8 end-to-end vs torch fp32", ">= 2.5x", backends, _int8_speed)
    _check(targets, "ORT int8 accuracy vs torch fp32, per test split", ">= -1 point each", backends, _int8_accuracy)
    _check(targets, "end-to-end vs model-only (default backend)", ">= 0.95", pipeline, _pipeline_ratio)
    _check(targets, "p99 latency at 90% load", "<= max wait + 3 forward passes", pipeline, _pipeline_p99)
    _check(targets, "consumer peak RSS (CPU)", "<= 300 MB", pipeline, _rss)
    _check(targets, "vs Quix Streams per-message", ">= 4x, <= their memory", peers, _peer("per-message"))
    _check(targets, "vs Quix Streams batched", ">= 2x, <= their memory", peers, _peer("batched"))
    _check(targets, "/top 1h p99 at 1M subjects", "<= 50 ms", scale, _scale_read("top_1h", 50.0))
    _check(targets, "/series p99 at 1M subjects", "<= 20 ms", scale, _scale_read("series_24h", 20.0))
    _check(targets, "alert scheduling per batch, 200k vs 1k active", "<= 2x", scale, _scheduling)
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="how long the whole `make bench` took, to print with the table")
    args = parser.parse_args(argv)
    targets = summarize()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_bytes(orjson.dumps({"targets": [asdict(t) for t in targets], "bench_seconds": args.seconds},
                                                        option=orjson.OPT_INDENT_2))
    width = max(len(t.name) for t in targets)
    print(f"\n{'target':<{width}}  {'wanted':<32}  {'met':<4} measured")
    for t in targets:
        print(f"{t.name:<{width}}  {t.wanted:<32}  {'yes' if t.met else 'NO':<4} {t.measured}")
    met = sum(t.met for t in targets)
    took = f"; make bench took {args.seconds / 60:.1f} min" if args.seconds is not None else ""
    print(f"\n{met} of {len(targets)} targets met{took}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
