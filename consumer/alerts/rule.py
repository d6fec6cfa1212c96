"""The spike rule: is the negative share in the short window a significant, large rise?

Baseline: the preceding `baseline_window` (default 24 h) excluding the short
window. Significance: a one-sided two-proportion z-test of short vs baseline.
A subject with too little baseline (a new query) is tested against a fixed prior
share instead (one-sample z-test), so new queries can alert but need a clear rise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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


def evaluate(rule: SpikeRule, short_negative: int, short_total: int, base_negative: int, base_total: int) -> Verdict:
    share = short_negative / short_total if short_total else 0.0
    if base_total >= rule.min_baseline:
        base_share = base_negative / base_total
        pooled = (short_negative + base_negative) / (short_total + base_total)
        spread = math.sqrt(pooled * (1 - pooled) * (1 / max(short_total, 1) + 1 / base_total))
        reference, baseline = base_share, base_share
    else:
        reference, baseline = rule.prior_share, None
        spread = math.sqrt(reference * (1 - reference) / max(short_total, 1))
    statistic = (share - reference) / spread if spread > 0 else (math.inf if share > reference else 0.0)
    firing = (short_total >= rule.min_count and share - reference >= rule.min_increase
              and statistic >= rule.z_threshold)
    return Verdict(firing, share, baseline, reference, statistic, short_total, base_total)


def recovered(rule: SpikeRule, verdict: Verdict) -> bool:
    """A firing spike resolves once the rise is under half the minimum (hysteresis against flapping)."""
    return verdict.negative_share - verdict.reference_share < rule.min_increase / 2
