"""The spike rule on hand-computed cases (shares estimated from counts, as for counters without probabilities)."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from consumer.alerts.rule import SpikeRule, evaluate, recovered
from schemas.shares import ShareEstimate, estimate_negative_share

RULE = SpikeRule()


def share(negative: int, total: int) -> ShareEstimate:
    return estimate_negative_share(Counter(negative=negative, positive=total - negative), {}, None)


def verdict(short_negative, short_total, base_negative, base_total):
    return evaluate(RULE, share(short_negative, short_total), share(base_negative, base_total))


def test_sharp_rise_over_a_baseline_fires_with_the_two_proportion_z():
    v = verdict(30, 50, 100, 1000)
    pooled = 130 / 1050
    z = (0.6 - 0.1) / math.sqrt(pooled * (1 - pooled) * (1 / 50 + 1 / 1000))
    assert v.firing and v.statistic == pytest.approx(z)
    assert v.baseline_share == pytest.approx(0.1) and v.count == 50


def test_the_size_of_the_rise_is_judged_on_the_estimated_shares():
    # Counted shares rise 10% -> 30% (+20 points), but the adjusted estimates say 12% -> 22%: no alert.
    base = ShareEstimate(0.12, 0.10, 0.14, "pacc", 1000, 100)
    short = ShareEstimate(0.22, 0.12, 0.35, "pacc", 50, 15)
    v = evaluate(RULE, short, base)
    assert v.statistic > RULE.z_threshold and not v.firing and v.estimator == "pacc"
    assert evaluate(RULE, ShareEstimate(0.40, 0.3, 0.5, "pacc", 50, 15), base).firing


def test_steady_share_does_not_fire():
    assert not verdict(6, 50, 100, 1000).firing


def test_minimum_volume_guard():
    assert not verdict(2, 2, 100, 1000).firing  # 100% negative, but 2 events
    assert not verdict(19, 19, 100, 1000).firing
    assert verdict(20, 20, 100, 1000).firing


def test_small_rise_that_is_significant_but_not_large_does_not_fire():
    v = verdict(2200, 10000, 1000, 10000)  # 22% vs 10%: z is huge, rise is 12 points
    assert v.statistic > 10 and not v.firing


def test_new_query_is_tested_against_the_prior():
    v = verdict(18, 25, 3, 10)  # 10 baseline events: too few, the prior (25%) is the reference
    assert v.baseline_share is None and v.reference_share == 0.25
    assert v.firing
    assert not verdict(9, 25, 0, 0).firing  # 36%: +11 points over the prior


def test_hysteresis_on_recovery():
    assert not recovered(RULE, verdict(10, 50, 100, 1000))  # 20% vs 10%: +10 > 7.5 points
    assert recovered(RULE, verdict(8, 50, 100, 1000))  # 16%: +6 points
    assert recovered(RULE, verdict(0, 0, 100, 1000))  # traffic stopped


def test_small_counts_need_a_larger_rise_against_the_prior():
    # The same 80% share: the estimate's interval is much wider over 5 events than over 25.
    assert share(4, 5).standard_error > 1.8 * share(20, 25).standard_error
    assert verdict(20, 25, 0, 0).statistic > verdict(4, 5, 0, 0).statistic
