"""A subject's negative share from counters, per model version, with an interval that covers.

Counting argmax labels ("cc") is biased whenever the classifier's errors are not
symmetric: it pulls every share toward the middle. The estimators (Forman 2008;
Bella et al. 2010), per model version v with n_v events:

  cc    share of events labelled negative (counters written before probabilities were kept)
  pcc   q = mean calibrated P(negative)
  pacc  q corrected by the version's own rates M (rates.py): the label shares π solving
        q⃗ = Mᵀ π (least squares, over the true labels M has examples of), clipped to [0, 1]
        and renormalised

Counts and sums are only comparable within one version, so each version is estimated
alone, with its own rates, and the window's share is the count-weighted mean
π = Σ (n_v / n) π_v, with variance Σ (n_v / n)² Var(π_v).

Variance of one version's pacc share, by the delta method on its binary reduction
π = (q − m0) / (m1 − m0), m1 = M[neg][neg], m0 = the mean of M[other][neg] weighted by
the other labels' estimated shares:

  Var(π) = [ Var(q) + π² Var(m1) + (1 − π)² Var(m0) ] / (m1 − m0)²

Var(q) = σ² / n + 1 / (4 n²): σ² the per-event variance of P(negative) (from the sum of
squares the counters keep; the second term keeps tiny windows from collapsing). Var(m)
is the rates' own sampling error (each row's variance over its support): the part a
window-only interval misses, and why validation-rate intervals under-covered.
The 95% interval is π ± 1.96 √Var(π), clipped to [0, 1].
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .rates import NEGATIVE, Rates

Z95 = 1.959964


@dataclass
class Tally:
    """One model version's sufficient statistics over a window: argmax counts per label, sums of
    calibrated probability per label, and the sum of P(negative)² (for the per-event variance)."""

    counts: Counter = field(default_factory=Counter)
    prob_sums: dict[str, float] = field(default_factory=dict)
    negative_squares: float = 0.0

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def add(self, other: "Tally") -> None:
        self.counts.update(other.counts)
        for label, value in other.prob_sums.items():
            self.prob_sums[label] = self.prob_sums.get(label, 0.0) + value
        self.negative_squares += other.negative_squares

    def minus(self, other: "Tally") -> "Tally":
        counts = Counter({k: max(0, v - other.counts.get(k, 0)) for k, v in self.counts.items()})
        sums = {k: max(0.0, v - other.prob_sums.get(k, 0.0)) for k, v in self.prob_sums.items()}
        return Tally(counts, sums, max(0.0, self.negative_squares - other.negative_squares))

    def mean_negative(self) -> float:
        """q: mean calibrated P(negative), or the counted share where no probabilities were kept."""
        n = self.n
        if not n:
            return 0.0
        if not self.prob_sums:
            return self.counts.get(NEGATIVE, 0) / n
        return min(1.0, max(0.0, self.prob_sums.get(NEGATIVE, 0.0) / n))

    def negative_variance(self) -> float:
        """Per-event variance of P(negative) (of the negative indicator for counts-only tallies)."""
        q = self.mean_negative()
        if not self.prob_sums or self.negative_squares <= 0:
            return q * (1 - q)
        return max(0.0, self.negative_squares / self.n - q * q)


@dataclass(frozen=True)
class VersionEstimate:
    share: float
    sampling_variance: float  # from the window's events
    rate_variance: float  # from the rates' own sampling error
    estimator: str  # "pacc" | "pcc" | "cc"
    count: int


@dataclass(frozen=True)
class ShareEstimate:
    share: float | None
    low: float | None
    high: float | None
    estimator: str  # "pacc" | "pcc" | "cc" | "none": the weakest any version needed
    count: int
    variance: float = 0.0  # of the share: the window's sampling error and the rates' own
    versions: tuple[tuple[str, VersionEstimate, Rates | None], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        def r(v):
            return None if v is None else round(v, 4)

        return {"negative_share": r(self.share), "interval_95": [r(self.low), r(self.high)] if self.share is not None else None,
                "estimator": self.estimator,
                "models": [{"model": model, "events": e.count, "estimator": e.estimator, "negative_share": r(e.share),
                            "rates": rates.source if rates and e.estimator == "pacc" else None,
                            "rate_examples": rates.examples if rates and e.estimator == "pacc" else 0}
                           for model, e, rates in self.versions]}


def pacc(q: np.ndarray, solver: np.ndarray) -> np.ndarray:
    """Label shares π solving q = Mᵀ π (least squares: `solver` is Mᵀ's pseudo-inverse, Rates.solver),
    clipped to [0, 1] and renormalised."""
    shares = np.clip(solver @ q, 0.0, 1.0)
    total = shares.sum()
    return shares / total if total > 0 else np.full(len(shares), 1 / len(shares))


def estimate_version(tally: Tally, rates: Rates | None) -> VersionEstimate:
    """One version's negative share: pacc with usable rates over matching labels, else pcc, else cc."""
    n = tally.n
    q = tally.mean_negative()
    sampling = tally.negative_variance() / n + 1 / (4 * n * n)
    if not tally.prob_sums:
        return VersionEstimate(q, sampling, 0.0, "cc", n)
    # A label missing from the sums had no probability above a micro-unit: it counts as 0.
    if rates is None or not tally.prob_sums.keys() <= set(rates.labels) or not rates.usable():
        return VersionEstimate(q, sampling, 0.0, "pcc", n)
    labels = list(rates.labels)
    means = np.array([tally.prob_sums.get(label, 0.0) / n for label in labels])
    rows = rates.present  # true labels with examples: only those can be solved for
    m = rates.mean_probs[rows]
    shares = pacc(means / max(means.sum(), 1e-12), rates.solver)
    i, neg = rows.index(labels.index(NEGATIVE)), labels.index(NEGATIVE)
    others = [k for k in range(len(rows)) if k != i]
    weights = shares[others] if shares[others].sum() > 0 else np.ones(len(others))
    weights = weights / weights.sum()
    spread = float(m[i][neg] - np.dot(weights, m[others, neg]))
    share = float(shares[i])
    variance = [rates.negative_variance[k] / rates.support[k] for k in rows]
    var_m1 = variance[i]
    var_m0 = float(sum(w * w * variance[k] for w, k in zip(weights, others)))
    rate_variance = (share * share * var_m1 + (1 - share) ** 2 * var_m0) / (spread * spread)
    return VersionEstimate(share, sampling / (spread * spread), rate_variance, "pacc", n)


WEAKEST = ("cc", "pcc", "pacc")


def combine(estimates: list[tuple[str, VersionEstimate, Rates | None]]) -> ShareEstimate:
    """The count-weighted mean of per-version shares, variances added with squared weights."""
    total = sum(e.count for _, e, _ in estimates)
    if not total:
        return ShareEstimate(None, None, None, "none", 0)
    share = sum(e.count * e.share for _, e, _ in estimates) / total
    variance = sum((e.count / total) ** 2 * (e.sampling_variance + e.rate_variance) for _, e, _ in estimates)
    half = Z95 * math.sqrt(variance)
    estimator = min((e.estimator for _, e, _ in estimates), key=WEAKEST.index)
    return ShareEstimate(share, max(0.0, share - half), min(1.0, share + half), estimator, total, variance, tuple(estimates))


def estimate_negative_share(tallies: Mapping[str, Tally], rates: Mapping[str, Rates | None]) -> ShareEstimate:
    """The negative share of a window whose events were labelled by the versions in `tallies`,
    each corrected with its own rates (rates[version]; missing: pcc)."""
    estimates = [(version, estimate_version(t, rates.get(version)), rates.get(version))
                 for version, t in sorted(tallies.items()) if t.n]
    return combine(estimates)
