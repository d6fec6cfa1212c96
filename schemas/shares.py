"""Estimating a label's share in a stream from counts and calibrated probability sums.

Counting argmax labels ("cc") is biased whenever the classifier's errors are not
symmetric: it pulls every share toward the middle. The estimators (Forman 2008;
Bella et al. 2010):

  cc    share of events labelled negative
  pcc   mean calibrated P(negative)
  pacc  pcc corrected by the validation rates: solve  q = Mᵀ π  for the label
        shares π, where q is the stream's mean probability per label and M[i][j] the
        mean P(label j) of validation examples whose true label is i; clipped to
        [0, 1] and renormalised.

Interval (95%): a Wilson score interval on the observed mean probability q (it widens
when the count is small and never collapses at 0 or 1), mapped through the same linear
correction as the estimate: for the negative share,
    π_neg = (q_neg - m0) / (m1 - m0),
m1 = M[neg][neg], m0 = the mean of M[i][neg] over the other true labels weighted by
their estimated shares. The uncertainty of M itself (from validation) is not included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

Z95 = 1.959964
NEGATIVE = "negative"


@dataclass(frozen=True)
class ShareEstimate:
    share: float | None
    low: float | None
    high: float | None
    estimator: str  # "pacc" | "pcc" | "cc" | "none"
    count: int
    labelled_negative: int = 0  # events the decision rule labelled negative (the counting statistic)

    @property
    def standard_error(self) -> float:
        """Half-width of the interval over z: the normal approximation the spike test uses."""
        if self.low is None or self.high is None:
            return 0.0
        return (self.high - self.low) / (2 * Z95)

    def as_dict(self) -> dict[str, Any]:
        def r(v):
            return None if v is None else round(v, 4)

        return {"negative_share": r(self.share), "interval_95": [r(self.low), r(self.high)] if self.share is not None else None,
                "estimator": self.estimator}


def wilson(q: float, n: float, z: float = Z95) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    q = min(1.0, max(0.0, q))
    centre = (q + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(q * (1 - q) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _usable(params: Mapping[str, Any] | None, labels: list[str]) -> bool:
    if not params or NEGATIVE not in params.get("labels", []) or set(params["labels"]) != set(labels):
        return False
    m = np.array(params["mean_probs"], dtype=float)
    i = params["labels"].index(NEGATIVE)
    others = [m[k][i] for k in range(len(m)) if k != i]
    return bool(others) and m[i][i] - max(others) > 0.05  # a classifier barely better than chance cannot be inverted


def pacc(q: np.ndarray, mean_probs: np.ndarray) -> np.ndarray:
    """Label shares π solving q = Mᵀ π (least squares), clipped to [0, 1] and renormalised."""
    shares, *_ = np.linalg.lstsq(mean_probs.T, q, rcond=None)
    shares = np.clip(shares, 0.0, 1.0)
    total = shares.sum()
    return shares / total if total > 0 else np.full(len(q), 1 / len(q))


def estimate_negative_share(counts: Mapping[str, int], prob_sums: Mapping[str, float],
                            params: Mapping[str, Any] | None) -> ShareEstimate:
    """The best available estimate of the negative share: pacc, else pcc, else cc."""
    n = sum(counts.values())
    negatives = counts.get(NEGATIVE, 0)
    if n == 0:
        return ShareEstimate(None, None, None, "none", 0)
    if not prob_sums:  # counters written before probability sums existed
        share = negatives / n
        low, high = wilson(share, n)
        return ShareEstimate(share, low, high, "cc", n, negatives)
    labels = list(params["labels"]) if params else sorted(prob_sums)
    q = np.array([prob_sums.get(label, 0.0) / n for label in labels])
    q_neg = q[labels.index(NEGATIVE)] if NEGATIVE in labels else prob_sums.get(NEGATIVE, 0.0) / n
    low_q, high_q = wilson(float(q_neg), n)
    if not _usable(params, list(prob_sums)):
        return ShareEstimate(float(q_neg), low_q, high_q, "pcc", n, negatives)
    m = np.array(params["mean_probs"], dtype=float)
    i = labels.index(NEGATIVE)
    shares = pacc(q / max(q.sum(), 1e-12), m)
    others = [k for k in range(len(labels)) if k != i]
    weights = shares[others] if shares[others].sum() > 0 else np.ones(len(others))
    m0 = float(np.average(m[others, i], weights=weights))
    m1 = float(m[i][i])

    def mapped(v: float) -> float:
        return min(1.0, max(0.0, (v - m0) / (m1 - m0)))

    share = float(shares[i])
    return ShareEstimate(share, min(share, mapped(low_q)), max(share, mapped(high_q)), "pacc", n, negatives)

