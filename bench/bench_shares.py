"""`make bench` (shares): how far each estimator's negative share is from the truth.

Streams are built from the checkpoint's held-out test split (never trained or
calibrated on), one per source: several synthetic queries, each with an exact, known
negative share between 2% and 60% (prevalence unlike training), 1,000 events each.
For every query the three estimators run on what the counters would hold (argmax
counts and calibrated probability sums):
  cc    argmax counting (the decision rule's labels)
  pcc   mean calibrated P(negative)
  pacc  pcc adjusted by the manifest's validation rates (the read API's estimator)
Writes bench/results/shares.json, prints a table and draws bench/shares.png.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from model_runtime.calibration import apply_temperature, temperature_of  # noqa: E402
from model_runtime.decision import decide  # noqa: E402
from model_runtime.inference import predict_probs  # noqa: E402
from model_runtime.loading import load_checkpoint  # noqa: E402
from schemas.shares import estimate_negative_share  # noqa: E402
from trainer.data import load_examples, split_examples  # noqa: E402

SHARES = (0.02, 0.05, 0.10, 0.20, 0.35, 0.60)
EVENTS_PER_QUERY = 1000


def test_split(manifest: dict) -> list:
    hyper = manifest["hyperparameters"]
    examples, _ = load_examples(manifest["data"]["sources"])
    return split_examples(examples, seed=hyper.get("split_seed", 13), validation_ratio=hyper.get("validation_ratio", 0.1),
                          test_ratio=hyper.get("test_ratio", 0.1))["test"]


def query_estimates(rng, negatives: np.ndarray, others: np.ndarray, share: float, labels, rule, params) -> dict:
    """One synthetic query: exactly round(share * n) negatives drawn from the true negatives, the rest from the others."""
    k = int(round(share * EVENTS_PER_QUERY))
    rows = np.vstack([negatives[rng.integers(0, len(negatives), k)], others[rng.integers(0, len(others), EVENTS_PER_QUERY - k)]])
    counts = Counter(labels[i] for i in decide(rows, labels, rule))
    sums = {label: float(rows[:, j].sum()) for j, label in enumerate(labels)}
    estimate = estimate_negative_share(counts, sums, params)
    return {"true": k / EVENTS_PER_QUERY, "cc": counts.get("negative", 0) / EVENTS_PER_QUERY,
            "pcc": sums["negative"] / EVENTS_PER_QUERY, "pacc": estimate.share, "pacc_interval": [estimate.low, estimate.high],
            "estimator": estimate.estimator}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/latest", help="checkpoint to measure")
    parser.add_argument("--seed", type=int, default=7, help="sampling seed")
    parser.add_argument("--plot", default=str(ROOT / "bench" / "shares.png"), help="where to draw estimated vs true shares")
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.checkpoint, "cpu")
    manifest, labels = checkpoint.manifest, checkpoint.labels
    params = manifest.get("share_estimation")
    test = test_split(manifest)
    probs = apply_temperature(predict_probs(checkpoint.model, checkpoint.tokenizer, [e.text for e in test],
                                            max_length=manifest["max_length"], batch_size=64), temperature_of(manifest))
    rng = np.random.default_rng(args.seed)
    results = {}
    for source in sorted({e.source for e in test}):
        mask = np.array([e.source == source for e in test])
        gold = np.array([e.label for e in test])[mask]
        negatives, others = probs[mask][gold == "negative"], probs[mask][gold != "negative"]
        if len(negatives) < 20 or len(others) < 20:
            continue
        kind = "binary" if set(gold) <= {"negative", "positive"} else "3-class"
        queries = [query_estimates(rng, negatives, others, share, labels, manifest["decision"], params) for share in SHARES]
        errors = {name: [abs(q[name] - q["true"]) for q in queries] for name in ("cc", "pcc", "pacc")}
        results[source] = {"kind": kind, "test_examples": int(mask.sum()), "queries": queries,
                           "mean_abs_error": {k: round(float(np.mean(v)), 4) for k, v in errors.items()},
                           "max_abs_error": {k: round(float(np.max(v)), 4) for k, v in errors.items()}}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": manifest["version"], "temperature": temperature_of(manifest),
              "shares": list(SHARES), "events_per_query": EVENTS_PER_QUERY, "sources": results}
    (out / "shares.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"negative-share error by estimator (checkpoint {manifest['version']}, T={temperature_of(manifest)}; "
          f"{len(SHARES)} queries of {EVENTS_PER_QUERY} events per source, true shares {SHARES[0]:.0%}-{SHARES[-1]:.0%})")
    print(f"{'source':<34} {'kind':<8} {'cc mean/max':>14} {'pcc mean/max':>14} {'pacc mean/max':>14}  (points)")
    for source, r in results.items():
        cells = [f"{100 * r['mean_abs_error'][k]:.1f} / {100 * r['max_abs_error'][k]:.1f}" for k in ("cc", "pcc", "pacc")]
        print(f"{source:<34} {r['kind']:<8} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14}")
    _plot(results, Path(args.plot))
    return 0


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.2), squeeze=False)
    for ax, (source, r) in zip(axes[0], results.items()):
        true = [q["true"] for q in r["queries"]]
        ax.plot([0, 0.7], [0, 0.7], linestyle="--", color="grey", label="truth")
        for name, marker in (("cc", "s"), ("pcc", "^"), ("pacc", "o")):
            ax.plot(true, [q[name] for q in r["queries"]], marker=marker, label=f"{name} (MAE {100 * r['mean_abs_error'][name]:.1f} pt)")
        ax.set(title=f"{source.removeprefix('builtin:')} ({r['kind']})", xlabel="true negative share", ylabel="estimated",
               xlim=(0, 0.7), ylim=(0, 0.7))
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
