"""The spike rule on hand-computed cases: counts-only tallies (one-hot probabilities) keep the arithmetic visible."""

from __future__ import annotations

import math
from collections import Counter
from statistics import NormalDist

import numpy as np
import pytest

from model_runtime.stats.shares import Tally
from model_runtime.stats.spikes import SpikeRule, dispersion, evaluate, recovered, signed_deviance

RULE = SpikeRule()


def tally(negative: int, total: int) -> Tally:
    """One-hot probabilities: P(negative) is 1 for the negatives, 0 for the rest."""
    return Tally(Counter(negative=negative, positive=total - negative), {"negative": float(negative), "positive": float(total - negative)},
                 float(negative))


def verdict(short_negative, short_total, base_negative, base_total, rule=RULE):
    return evaluate(rule, {"en:v1": tally(short_negative, short_total)}, {"en:v1": tally(base_negative, base_total)}, {})


def test_threshold_follows_the_target_time_between_false_alarms():
    assert RULE.z_threshold == pytest.approx(4.59, abs=0.01)  # a fresh look each minute: 1440 a day, 300 days
    assert SpikeRule(false_alarm_days=10).z_threshold < RULE.z_threshold < SpikeRule(false_alarm_days=100_000).z_threshold
    assert SpikeRule(step_s=10).z_threshold > RULE.z_threshold  # more looks a day need a stricter test
    with pytest.raises(ValueError):
        SpikeRule(false_alarm_days=0)


def test_size_and_significance_come_from_one_statistic():
    v = verdict(30, 50, 100, 1000)
    sigma2 = (1000 * 0.1 * 0.9 + 0.5) / 1002  # the baseline's per-event variance, two pseudo-events
    smoothed = 101 / 1002  # its share with the same pseudo-events
    pooled = (29.5 + 100) / 1050  # the short window's 30 negatives less half an event (continuity)

    def kl(q, p):
        return q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))

    z = math.sqrt(2 * (50 * kl(0.59, pooled) + 1000 * kl(0.1, pooled)) / (sigma2 / (smoothed * (1 - smoothed))))  # the signed-root deviance
    assert v.firing and v.statistic == pytest.approx(z) and v.rise == pytest.approx(0.5)
    assert v.baseline_share == pytest.approx(0.1) and v.count == 50


def test_the_deviance_keeps_the_false_alarm_rate_of_small_counts_at_low_shares():
    """30 events at a true 5%: the exact binomial chance of reaching z >= 4, against the normal tail's."""
    n, p = 30, 0.05
    pmf = [math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(n + 1)]
    wald = sum(pmf[k] for k in range(n + 1) if (k / n - p) / math.sqrt(p * (1 - p) / n) >= 4)
    deviance = sum(pmf[k] for k in range(n + 1) if signed_deviance(k / n, n, p, 10**9, 1.0) >= 4)
    normal = 1 - NormalDist().cdf(4)
    assert wald > 5 * normal  # a Wald z pages far more often than it says
    assert deviance < 3 * normal


def test_steady_share_and_small_windows_do_not_fire():
    assert not verdict(6, 50, 100, 1000).firing
    assert not verdict(2, 2, 100, 1000).firing  # 100% negative, but 2 events
    assert not verdict(19, 19, 100, 1000).firing
    assert verdict(20, 20, 100, 1000).firing


def test_a_significant_rise_that_is_not_large_does_not_fire():
    v = verdict(2200, 10000, 1000, 10000)  # 22% vs 10%: z is huge, the rise is 12 points
    assert v.statistic > 10 and not v.firing


def test_a_baseline_without_negatives_still_lets_a_spike_fire():
    v = verdict(25, 50, 0, 1000)
    assert v.firing and v.statistic > 10


def test_a_rise_that_the_per_test_rule_would_page_for_is_not_enough_per_subject_day():
    v = verdict(17, 40, 200, 1000)  # 42% vs 20% over 40 events: z = 3.0, past 2.33 but not the 4.59 a day needs
    assert 2.33 < v.statistic < RULE.z_threshold and not v.firing
    assert verdict(17, 40, 200, 1000, SpikeRule(false_alarm_days=0.2)).firing


def test_a_swap_is_compared_like_with_like():
    base = {"en:v1": tally(100, 1000)}
    # v2 counts far more negatives for the same traffic (another decision rule): only v2 events in the window,
    # and v2 has no baseline of its own yet, so the subject is re-baselining, not tested.
    v = evaluate(RULE, {"en:v2": tally(30, 50)}, base, {})
    assert not v.tested and not v.firing
    assert not recovered(RULE, v)  # a firing alert stays as it is until the version can be compared
    # Both versions in the window: only v1's events are compared with v1's baseline.
    v = evaluate(RULE, {"en:v1": tally(5, 50), "en:v2": tally(40, 50)}, base, {})
    assert v.tested and not v.firing and v.count == 50 and v.negative_share == pytest.approx(0.1)
    # Once v2 has a baseline of its own, it is compared with it.
    v = evaluate(RULE, {"en:v2": tally(50, 60)}, {"en:v1": tally(100, 1000), "en:v2": tally(60, 200)}, {})
    assert v.tested and v.firing and v.baseline_share == pytest.approx(0.3)


def test_over_dispersed_baselines_widen_the_test():
    rng = np.random.default_rng(5)
    independent = [tally(int(rng.binomial(60, 0.2)), 60) for _ in range(24)]
    drifting = [tally(int(rng.binomial(60, p)), 60) for p in rng.uniform(0.05, 0.5, 24)]
    assert dispersion(independent) < 2.0
    assert dispersion(drifting) > 4.0
    assert dispersion(drifting[:5]) is None  # too few buckets to tell
    young = evaluate(RULE, {"v2": tally(28, 50)}, {"v1": tally(200, 1000), "v2": tally(200, 1000)}, {},
                     {"v1": dispersion(drifting), "v2": None})
    assert young.dispersion == pytest.approx(dispersion(drifting))  # a version just swapped in inherits the subject's
    assert dispersion([*independent[:22], tally(54, 60)]) < 2.0  # one hour holding a spike does not widen later tests
    plain = verdict(28, 50, 200, 1000)
    wide = evaluate(RULE, {"v": tally(28, 50)}, {"v": tally(200, 1000)}, {}, {"v": dispersion(drifting)})
    assert wide.statistic < plain.statistic / 2 and plain.firing and not wide.firing


def test_a_new_subject_is_tested_against_the_prior():
    v = evaluate(RULE, {"v": tally(120, 150)}, {"v": tally(3, 10)}, {})  # 10 baseline events: too few
    assert v.baseline_share is None and v.reference_share == 0.25 and v.firing
    assert not evaluate(RULE, {"v": tally(9, 25)}, {}, {}).firing  # 36%: +11 points over the prior


def test_hysteresis_on_recovery():
    assert not recovered(RULE, verdict(10, 50, 100, 1000))  # 20% vs 10%: +10 > 7.5 points
    assert recovered(RULE, verdict(8, 50, 100, 1000))  # 16%: +6 points
    assert recovered(RULE, evaluate(RULE, {}, {"v": tally(100, 1000)}, {}))  # traffic stopped
