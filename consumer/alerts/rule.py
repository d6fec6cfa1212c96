"""The spike rule: is the negative share in the short window a significant, large rise?

Baseline: the preceding `baseline_window` (default 24 h) excluding the short
window. Significance: a one-sided two-proportion z-test of short vs baseline.
A subject with too little baseline (a new query) is tested against a fixed prior
share instead (one-sample z-test), so new queries can alert but need a clear rise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.shares import ShareEstimate


@dataclass(frozen=True)
class SpikeRule:
    min_count: int = 20  # events in the short window before anything can fire
    min_increase: float = 0.15  # absolute rise of the negative share
    z_threshold: float = 2.326  # one-sided, about 1% false-alarm rate per test
    min_baseline: int = 50  # baseline events needed to trust the baseline share
    prior_share: float = 0.25  # negative share assumed for subjects without a baseline


@dataclass(frozen=True)
class Verdict:
    firing: bool
    negative_share: float
    baseline_share: float | None  # None: no usable baseline, the prior was used
    reference_share: float  # what the short window was compared with
    statistic: float
    count: int
    baseline_count: int
    estimator: str = "cc"  # how the shares were estimated (schemas/shares.py)


def evaluate(rule: SpikeRule, short: ShareEstimate, baseline: ShareEstimate) -> Verdict:
    """Is the short window's estimated negative share a significant, large rise over the baseline's?

    Size: the estimated shares (pacc where the model's validation rates are known), so a
    biased classifier neither hides nor invents a rise. Significance against a baseline:
    an adjusted estimate is a linear map of its counting statistic, π = (c − m0)/(m1 − m0)
    with the same m0, m1 in both windows, so the z of a difference of adjusted shares
    equals the z of the difference of the counted shares — whose binomial variance is
    exact. So the test is the pooled two-proportion z on the labelled-negative counts.
    Against the prior (no usable baseline) the estimate itself is tested, with the
    standard error of its interval.
    """
    share = short.share or 0.0
    if baseline.count >= rule.min_baseline and baseline.share is not None:
        reference, base_share = baseline.share, baseline.share
        counted_short = short.labelled_negative / max(short.count, 1)
        counted_base = baseline.labelled_negative / baseline.count
        pooled = (short.labelled_negative + baseline.labelled_negative) / (short.count + baseline.count)
        spread = math.sqrt(pooled * (1 - pooled) * (1 / max(short.count, 1) + 1 / baseline.count))
        difference = counted_short - counted_base
    else:
        reference, base_share = rule.prior_share, None
        spread = short.standard_error or math.sqrt(reference * (1 - reference) / max(short.count, 1))
        difference = share - reference
    statistic = difference / spread if spread > 0 else (math.inf if difference > 0 else 0.0)
    firing = (short.count >= rule.min_count and share - reference >= rule.min_increase
              and statistic >= rule.z_threshold)
    return Verdict(firing, share, base_share, reference, statistic, short.count, baseline.count, short.estimator)


def recovered(rule: SpikeRule, verdict: Verdict) -> bool:
    """A firing spike resolves once the rise is under half the minimum (hysteresis against flapping)."""
    return verdict.negative_share - verdict.reference_share < rule.min_increase / 2
