"""`make bench` (shares): how far each negative-share estimator is from the truth, and whether its interval covers it.

Streams are built from the checkpoint's held-out test split (never trained or
calibrated on), per source. Each source's test examples are split at random, every
true label evenly, into a rates half and a query half: the rates half stands in for
the rated reviews the consumer measures a version's in-domain ("stream") rates from,
and queries draw only from the query half, so rates and queries never share an example.
A query has an exact, known negative share between 2% and 60% (prevalence unlike
training) and 1,000 events; the estimators see what the counters would hold (a Tally
per model version) and run through model_runtime.stats.shares:

  before  cc               argmax counting (the decision rule's labels)
          pcc              mean calibrated P(negative)
          pacc-validation  corrected with the manifest's validation rates (the old read API)
  after   pacc-stream      corrected with the in-domain rates measured on the rates half

Two model versions: every query's events are split 50/50 between the checkpoint as
served (temperature T) and a second version that is the same checkpoint re-scaled with
temperature 2T on its raw outputs. Both have the same argmax, but a flatter probability
scale, so its rates differ and its probability sums cannot be pooled with the first's:
  before  mix-pcc  plain pcc over both versions' sums
  after   mix      each version corrected with its own in-domain rates (each measured on
                   its own random half of the rates half, as the consumer keeps rates per
                   version), combined by estimate_negative_share
Queries draw with replacement (a query half holds fewer negatives than 60% of 1,000), so
a small source's queries repeat a few examples: its figures are dominated by that pool.
Coverage: many repetitions per source, each with a fresh rates/query split, a true share
drawn from SHARES and a fresh query: how often the 95% interval contains the true share.
Writes bench/results/shares.json, prints two tables and draws bench/shares.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
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
from model_runtime.stats.rates import NEGATIVE, Rates, measure_rates  # noqa: E402
from model_runtime.stats.shares import Tally, estimate_negative_share  # noqa: E402
from trainer.data import load_examples, split_examples  # noqa: E402

SHARES = (0.02, 0.05, 0.10, 0.20, 0.35, 0.60)
EVENTS_PER_QUERY = 1000
MIN_PER_SIDE = 20  # true negatives and others a source's test split needs to be benchmarked
SECOND_VERSION_SCALE = 2.0  # the second version's temperature, as a multiple of the checkpoint's
ESTIMATES = ("cc", "pcc", "pacc-validation", "pacc-stream", "mix-pcc", "mix")
INTERVALS = ("pacc-validation", "pacc-stream", "mix")  # estimates whose 95% interval is checked


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # "binary" | "3-class": the true labels its test split has
    y: np.ndarray  # each example's true label, as an index into the model's labels
    probs: tuple[np.ndarray, np.ndarray]  # calibrated probabilities as the first and the second version score them

    @property
    def examples(self) -> np.ndarray:
        return np.arange(len(self.y))


@dataclass(frozen=True)
class Setup:
    labels: list[str]
    rule: dict
    validation: Rates | None  # the manifest's rates (the first version's scale)
    versions: tuple[str, str]

    @property
    def negative(self) -> int:
        return self.labels.index(NEGATIVE)


def test_split(manifest: dict) -> list:
    hyper = manifest["hyperparameters"]
    examples, _ = load_examples(manifest["data"]["sources"])
    return split_examples(examples, seed=hyper.get("split_seed", 13), validation_ratio=hyper.get("validation_ratio", 0.1),
                          test_ratio=hyper.get("test_ratio", 0.1))["test"]


def sources(test: list, raw: np.ndarray, labels: list[str], temperature: float) -> list[Source]:
    """The benchmarked sources: those with enough true negatives and others to build queries from."""
    scales = (apply_temperature(raw, temperature), apply_temperature(raw, SECOND_VERSION_SCALE * temperature))
    gold = np.array([e.label for e in test])
    names = np.array([e.source for e in test])
    out = []
    for name in sorted(set(names.tolist())):
        mask = names == name
        negatives = int((gold[mask] == NEGATIVE).sum())
        if min(negatives, int(mask.sum()) - negatives) < MIN_PER_SIDE:
            print(f"skipped {name}: {negatives} negatives of {int(mask.sum())} test examples")
            continue
        kind = "binary" if set(gold[mask]) <= {NEGATIVE, "positive"} else "3-class"
        y = np.array([labels.index(label) for label in gold[mask]])
        out.append(Source(name, kind, y, (scales[0][mask], scales[1][mask])))
    return out


def halves(rng: np.random.Generator, y: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves of pool, each true label split evenly (so a small source keeps every label in both)."""
    first, second = [], []
    for label in np.unique(y[pool]):
        members = rng.permutation(pool[y[pool] == label])
        cut = (len(members) + int(rng.integers(2))) // 2  # an odd member goes to either half
        first.append(members[:cut])
        second.append(members[cut:])
    return np.concatenate(first), np.concatenate(second)


def draw_query(rng: np.random.Generator, y: np.ndarray, pool: np.ndarray, share: float, negative: int) -> np.ndarray:
    """EVENTS_PER_QUERY examples of pool (with replacement), exactly round(share * n) of them truly negative, in random order."""
    k = int(round(share * EVENTS_PER_QUERY))
    negatives, others = pool[y[pool] == negative], pool[y[pool] != negative]
    return rng.permutation(np.concatenate([rng.choice(negatives, k), rng.choice(others, EVENTS_PER_QUERY - k)]))


def tally(probs: np.ndarray, setup: Setup) -> Tally:
    """What one version's counters hold after labelling these events."""
    counts = Counter(setup.labels[i] for i in decide(probs, setup.labels, setup.rule))
    sums = {label: float(probs[:, j].sum()) for j, label in enumerate(setup.labels)}
    return Tally(counts, sums, float((probs[:, setup.negative] ** 2).sum()))


@dataclass(frozen=True)
class StreamRates:
    single: Rates  # the first version's, from the whole rates half
    per_version: tuple[Rates, Rates]  # each version's, from its own half of the rates half


def stream_rates(rng: np.random.Generator, source: Source, setup: Setup, pool: np.ndarray) -> StreamRates:
    """In-domain rates from the rates half, as the consumer measures them from rated reviews."""
    labels = setup.labels
    parts = halves(rng, source.y, pool)
    return StreamRates(measure_rates(source.probs[0][pool], source.y[pool], labels, "stream"),
                       tuple(measure_rates(p[part], source.y[part], labels, "stream") for p, part in zip(source.probs, parts)))


def run_query(rng: np.random.Generator, source: Source, setup: Setup, rates: StreamRates, pool: np.ndarray,
              share: float) -> dict:
    """Every estimate of one query's negative share, with the intervals and the estimator each one needed."""
    events = draw_query(rng, source.y, pool, share, setup.negative)
    first, second = setup.versions
    single = tally(source.probs[0][events], setup)
    split = EVENTS_PER_QUERY // 2  # events are in random order: the first half went to the first version
    mixed = {first: tally(source.probs[0][events[:split]], setup), second: tally(source.probs[1][events[split:]], setup)}
    corrected = {
        "pacc-validation": estimate_negative_share({first: single}, {first: setup.validation}),
        "pacc-stream": estimate_negative_share({first: single}, {first: rates.single}),
        "mix": estimate_negative_share(mixed, dict(zip(setup.versions, rates.per_version))),
    }
    query = {"true": int(round(share * EVENTS_PER_QUERY)) / EVENTS_PER_QUERY,
             "cc": single.counts.get(NEGATIVE, 0) / single.n, "pcc": single.mean_negative(),
             "mix-pcc": sum(t.prob_sums[NEGATIVE] for t in mixed.values()) / EVENTS_PER_QUERY}
    for name, estimate in corrected.items():
        query[name] = estimate.share
        query[f"{name} interval"] = [estimate.low, estimate.high]
        query[f"{name} estimator"] = estimate.estimator
    return query


def error_summary(queries: list[dict]) -> dict:
    errors = {name: [abs(q[name] - q["true"]) for q in queries] for name in ESTIMATES}
    return {"mean_abs_error": {k: float(np.mean(v)) for k, v in errors.items()},
            "max_abs_error": {k: float(np.max(v)) for k, v in errors.items()},
            "estimators": {k: sorted({q[f"{k} estimator"] for q in queries}) for k in INTERVALS}}


def fixed_split_queries(rng: np.random.Generator, source: Source, setup: Setup) -> dict:
    """One rates/query split, one query per share in SHARES."""
    rates_pool, query_pool = halves(rng, source.y, source.examples)
    rates = stream_rates(rng, source, setup, rates_pool)
    queries = [run_query(rng, source, setup, rates, query_pool, share) for share in SHARES]
    return {"rates_examples": len(rates_pool), "query_examples": len(query_pool), "queries": queries, **error_summary(queries)}


def coverage(rng: np.random.Generator, source: Source, setup: Setup, repeats: int) -> dict:
    """Per interval: the fraction containing the true share, mean width, mean error, and how often pacc was used."""
    queries = []
    for _ in range(repeats):
        rates_pool, query_pool = halves(rng, source.y, source.examples)
        rates = stream_rates(rng, source, setup, rates_pool)
        queries.append(run_query(rng, source, setup, rates, query_pool, float(rng.choice(SHARES))))
    out = {}
    for name in INTERVALS:
        bounds = np.array([q[f"{name} interval"] for q in queries])
        true = np.array([q["true"] for q in queries])
        out[name] = {"coverage": float(np.mean((bounds[:, 0] <= true) & (true <= bounds[:, 1]))),
                     "mean_width": float(np.mean(bounds[:, 1] - bounds[:, 0])),
                     "mean_abs_error": float(np.mean([abs(q[name] - q["true"]) for q in queries])),
                     "pacc_fraction": float(np.mean([q[f"{name} estimator"] == "pacc" for q in queries]))}
    return out


def print_errors(results: dict) -> None:
    print(f"\nnegative-share error, points: mean / max over {len(SHARES)} queries of {EVENTS_PER_QUERY} events "
          f"(true shares {SHARES[0]:.0%}-{SHARES[-1]:.0%}); one random rates/query split per source")
    print(f"{'':<25} {'':<7} {'':>9}  {' before '.center(47, '-')} {' after ':^15} {' two models '.center(31, '-')}")
    print(f"{'source':<25} {'kind':<7} {'rates/qry':>9}  " + " ".join(f"{name:>15}" for name in ESTIMATES)
          + f"  {'mix-stream':>11}  estimator (stream; mix)")
    for source, r in results.items():
        mean, top = r["mean_abs_error"], r["max_abs_error"]
        cells = " ".join(f"{f'{100 * mean[k]:.1f} / {100 * top[k]:.1f}':>15}" for k in ESTIMATES)
        used = f"{','.join(r['estimators']['pacc-stream'])}; {','.join(r['estimators']['mix'])}"
        sizes = f"{r['rates_examples']}/{r['query_examples']}"
        print(f"{source:<25} {r['kind']:<7} {sizes:>9}  {cells}  {100 * (mean['mix'] - mean['pacc-stream']):>+11.1f}  {used}")
    print("two models: mix-pcc = plain pcc over both versions (before), mix = per-version pacc-stream combined (after); "
          "mix-stream = mix minus pacc-stream mean error")


def print_coverage(results: dict, repeats: int) -> None:
    print(f"\n95% interval coverage over {repeats} repetitions per source (fresh split, true share from SHARES, fresh query); "
          "width and error in points; pacc = share of repetitions the estimator could correct")
    print(f"{'source':<26} " + "   ".join(f"{name + ': cover  width  err  pacc':>38}" for name in INTERVALS))
    for source, r in results.items():
        cells = [f"{c['coverage']:.3f} {100 * c['mean_width']:>6.1f} {100 * c['mean_abs_error']:>4.1f} {c['pacc_fraction']:>5.2f}"
                 for c in (r["coverage"][name] for name in INTERVALS)]
        print(f"{source:<26} " + "   ".join(f"{cell:>38}" for cell in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/latest", help="checkpoint to measure")
    parser.add_argument("--seed", type=int, default=7, help="sampling seed (splits, queries)")
    parser.add_argument("--repeats", type=int, default=1000,
                        help="repetitions per source for interval coverage (each a fresh split and query; >= 200)")
    parser.add_argument("--plot", default=str(ROOT / "bench" / "shares.png"), help="where to draw estimated vs true shares")
    args = parser.parse_args()
    if args.repeats < 200:
        parser.error("--repeats must be at least 200: fewer cannot tell 0.93 from 0.97")
    started = time.monotonic()
    checkpoint = load_checkpoint(args.checkpoint, "cpu")
    manifest, labels = checkpoint.manifest, list(checkpoint.labels)
    temperature = temperature_of(manifest)
    params = manifest.get("share_estimation")
    setup = Setup(labels, manifest["decision"], Rates.from_dict(params, "validation") if params else None,
                  (manifest["version"], f"{manifest['version']}-T{SECOND_VERSION_SCALE:g}x"))
    test = test_split(manifest)
    # Inference once, uncalibrated: both versions' probabilities are re-scalings of these.
    raw = predict_probs(checkpoint.model, checkpoint.tokenizer, [e.text for e in test], max_length=manifest["max_length"],
                        batch_size=64)
    inference_s = time.monotonic() - started
    results = {}
    for index, source in enumerate(sources(test, raw, labels, temperature)):
        # Own streams per source and phase: one source's figures do not move with --repeats or the others.
        queries_rng, coverage_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([args.seed, index]).spawn(2))
        results[source.name] = {"kind": source.kind, "test_examples": len(source.y),
                                "test_labels": {labels[k]: int(v) for k, v in sorted(Counter(source.y.tolist()).items())},
                                **fixed_split_queries(queries_rng, source, setup),
                                "coverage": coverage(coverage_rng, source, setup, args.repeats)}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": manifest["version"], "temperature": temperature,
              "second_version_temperature": SECOND_VERSION_SCALE * temperature, "seed": args.seed, "repeats": args.repeats,
              "shares": list(SHARES), "events_per_query": EVENTS_PER_QUERY, "sources": results}
    (out / "shares.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"negative-share estimators (checkpoint {manifest['version']}, T={temperature}; "
          f"second version T={SECOND_VERSION_SCALE * temperature:g})")
    print_errors(results)
    print_coverage(results, args.repeats)
    _plot(results, Path(args.plot))
    print(f"\ninference {inference_s:.0f} s, total {time.monotonic() - started:.0f} s")
    return 0


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.4 * len(results), 4.4), squeeze=False)
    for ax, (source, r) in zip(axes[0], results.items()):
        queries = r["queries"]
        true = np.array([q["true"] for q in queries])
        top = max(0.7, max(max(q["cc"], q["pacc-validation"], q["pacc-stream interval"][1]) for q in queries) + 0.05)
        ax.plot([0, top], [0, top], linestyle="--", color="grey", label="truth")
        for name, marker in (("cc", "s"), ("pacc-validation", "^")):
            ax.plot(true, [q[name] for q in queries], marker=marker, label=f"{name} (MAE {100 * r['mean_abs_error'][name]:.1f} pt)")
        stream = np.array([q["pacc-stream"] for q in queries])
        bounds = np.array([q["pacc-stream interval"] for q in queries])
        used = "/".join(r["estimators"]["pacc-stream"])  # "pcc" where the in-domain rates were not usable
        ax.errorbar(true, stream, yerr=[stream - bounds[:, 0], bounds[:, 1] - stream], marker="o", capsize=3,
                    label=f"pacc-stream ({used}), 95% interval (MAE {100 * r['mean_abs_error']['pacc-stream']:.1f} pt)")
        ax.set(title=f"{source} ({r['kind']})", xlabel="true negative share", ylabel="estimated",
               xlim=(0, top), ylim=(0, top))
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
