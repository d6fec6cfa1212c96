"""The spike rule on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from consumer.alerts.rule import SpikeRule, evaluate, recovered

RULE = SpikeRule()


def test_sharp_rise_over_a_baseline_fires_with_the_two_proportion_z():
    verdict = evaluate(RULE, short_negative=30, short_total=50, base_negative=100, base_total=1000)
    pooled = 130 / 1050
    z = (0.6 - 0.1) / math.sqrt(pooled * (1 - pooled) * (1 / 50 + 1 / 1000))
    assert verdict.firing and verdict.statistic == pytest.approx(z)
    assert verdict.baseline_share == pytest.approx(0.1) and verdict.count == 50


def test_steady_share_does_not_fire():
    assert not evaluate(RULE, 6, 50, 100, 1000).firing


def test_minimum_volume_guard():
    assert not evaluate(RULE, 2, 2, 100, 1000).firing  # 100% negative, but 2 events
    assert not evaluate(RULE, 19, 19, 100, 1000).firing
    assert evaluate(RULE, 20, 20, 100, 1000).firing


def test_small_rise_that_is_significant_but_not_large_does_not_fire():
    verdict = evaluate(RULE, 2200, 10000, 1000, 10000)  # 22% vs 10%: z is huge, rise is 12 points
    assert verdict.statistic > 10 and not verdict.firing


def test_new_query_is_tested_against_the_prior():
    verdict = evaluate(RULE, 18, 25, 3, 10)  # 10 baseline events: too few, the prior (25%) is the reference
    assert verdict.baseline_share is None and verdict.reference_share == 0.25
    assert verdict.firing
    assert not evaluate(RULE, 9, 25, 0, 0).firing  # 36%: +11 points over the prior


def test_hysteresis_on_recovery():
    assert not recovered(RULE, evaluate(RULE, 10, 50, 100, 1000))  # 20% vs 10%: +10 > 7.5 points
    assert recovered(RULE, evaluate(RULE, 8, 50, 100, 1000))  # 16%: +6 points
    assert recovered(RULE, evaluate(RULE, 0, 0, 100, 1000))  # traffic stopped
