"""The spike rule: is the short window's negative share a large rise over the subject's baseline?

One statistic decides size and significance: the rise D = π_short − π_baseline of the
estimated shares (shares.py), compared like with like. Each model version's short-window
events are compared with the baseline that version labelled, corrected with the same
rates, so a version's rates cancel and a swap cannot move D. A version without a baseline
of its own (just swapped in) is left out until it has one (re-baselining); a subject whose
whole short window is such is not tested. D and its variance are count-weighted over the
compared versions:

  D = Σ w_v (π_short,v − π_base,v),   Var(D) = Σ w_v² φ_v σ_v² s_v² (1/n_short,v + 1/n_base,v)

σ_v² is the per-event variance of P(negative) in the baseline (the null hypothesis: no
change), s_v = dπ/dq the correction's slope, and φ_v ≥ 1 the over-dispersion measured on
the baseline's hourly buckets (Pearson χ² / degrees of freedom): repeated snippets and
hour-to-hour drift make buckets spread more than independent events would, and φ widens
the test by exactly that much.

It fires when D ≥ min_increase (the smallest rise anyone acts on) and z = D / √Var(D) ≥ z*.
False alarms are sized per subject-day, not per test: the rule runs on every subject each
minute, and a window of w seconds gives 86400 / w nearly independent looks a day, so for a
target mean time between false alarms of T days per subject,
  z* = Φ⁻¹(1 − w / (86400 T))    (T = 1000 days, w = 5 min: z* = 4.50).
(A Shewhart chart sized by its in-control run length; Montgomery, Introduction to Statistical
Quality Control, ch. 6.) bench/bench_alerts.py measures the resulting rate, power and delay.

A subject with no baseline at all (a new query) is tested against a prior share instead,
with the short estimate's own variance: new queries can alert, but need a clear rise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Mapping, Sequence

from .rates import Rates
from .shares import ShareEstimate, Tally, combine, estimate_negative_share, estimate_version

DAY_S = 86400


@dataclass(frozen=True)
class SpikeRule:
    min_count: int = 20  # events in the short window before anything can fire
    min_increase: float = 0.15  # absolute rise of the negative share
    false_alarm_days: float = 1000.0  # target mean time between false alarms, per subject, in days
    window_s: int = 300  # the short window's length
    min_baseline: int = 50  # baseline events (of a version) needed to compare with it
    prior_share: float = 0.25  # negative share assumed for subjects without any baseline
    max_dispersion: float = 20.0

    def __post_init__(self) -> None:
        if self.false_alarm_days <= 0 or self.window_s <= 0:
            raise ValueError("false_alarm_days and window_s must be > 0")

    @property
    def z_threshold(self) -> float:
        looks_per_day = DAY_S / self.window_s
        return NormalDist().inv_cdf(1 - 1 / (looks_per_day * self.false_alarm_days))


@dataclass(frozen=True)
class Verdict:
    firing: bool
    tested: bool  # False: every version in the short window is still building its own baseline
    negative_share: float  # short window, over the compared versions
    baseline_share: float | None  # None: no baseline, the prior was used
    reference_share: float  # what the short window was compared with
    statistic: float  # z of the rise
    count: int  # short-window events compared
    baseline_count: int
    estimator: str = "cc"
    dispersion: float = 1.0

    @property
    def rise(self) -> float:
        return self.negative_share - self.reference_share


def dispersion(buckets: Sequence[Tally], min_buckets: int = 3) -> float:
    """Pearson χ²/df of the buckets' mean P(negative) around their pooled mean: 1 for independent
    events, more when buckets spread more than that (repeated texts, drift). 1 with too few buckets."""
    filled = [b for b in buckets if b.n]
    if len(filled) < min_buckets:
        return 1.0
    pooled = Tally()
    for b in filled:
        pooled.add(b)
    q, variance = pooled.mean_negative(), pooled.negative_variance()
    if variance <= 0:
        return 1.0
    chi2 = sum(b.n * (b.mean_negative() - q) ** 2 / variance for b in filled)
    return max(1.0, chi2 / (len(filled) - 1))


def evaluate(rule: SpikeRule, short: Mapping[str, Tally], baseline: Mapping[str, Tally],
             rates: Mapping[str, Rates | None], dispersions: Mapping[str, float] | None = None) -> Verdict:
    """The verdict on one subject: short and baseline tallies per model version (the baseline
    excludes the short window), each version's rates and the baseline's over-dispersion."""
    dispersions = dispersions or {}
    baseline_count = sum(t.n for t in baseline.values())
    if not any(t.n for t in short.values()):  # no traffic in the window: nothing is rising
        return Verdict(False, True, 0.0, None, 0.0, 0.0, 0, baseline_count)
    compared = [v for v, t in short.items() if t.n and baseline.get(v, Tally()).n >= rule.min_baseline]
    if not compared:
        if baseline_count >= rule.min_baseline:
            estimate = estimate_negative_share(short, rates)
            return Verdict(False, False, estimate.share or 0.0, None, estimate.share or 0.0, 0.0, estimate.count,
                           baseline_count, estimate.estimator)
        return _against_prior(rule, estimate_negative_share(short, rates), baseline)
    n_short = sum(short[v].n for v in compared)
    rise = variance = short_share = base_share = 0.0
    phi_weighted = 0.0
    short_parts = []
    for v in compared:
        s, b, r = short[v], baseline[v], rates.get(v)
        now, before = estimate_version(s, r), estimate_version(b, r)
        w = s.n / n_short
        phi = min(rule.max_dispersion, max(1.0, dispersions.get(v, 1.0)))
        sigma2 = (b.n * b.negative_variance() + 2 * 0.25) / (b.n + 2)  # two pseudo-events keep a uniform baseline from a zero variance
        variance += w * w * phi * sigma2 * before.slope ** 2 * (1 / s.n + 1 / b.n)
        rise += w * (now.share - before.share)
        short_share += w * now.share
        base_share += w * before.share
        phi_weighted += w * phi
        short_parts.append((v, now, r))
    statistic = rise / math.sqrt(variance) if variance > 0 else (math.inf if rise > 0 else 0.0)
    estimator = combine(short_parts).estimator
    firing = n_short >= rule.min_count and rise >= rule.min_increase and statistic >= rule.z_threshold
    return Verdict(firing, True, short_share, base_share, base_share, statistic, n_short,
                   sum(baseline[v].n for v in compared), estimator, phi_weighted)


def _against_prior(rule: SpikeRule, short: ShareEstimate, baseline: Mapping[str, Tally]) -> Verdict:
    share = short.share or 0.0
    rise = share - rule.prior_share
    sd = math.sqrt(short.variance)
    statistic = rise / sd if sd > 0 else (math.inf if rise > 0 else 0.0)
    firing = short.count >= rule.min_count and rise >= rule.min_increase and statistic >= rule.z_threshold
    return Verdict(firing, True, share, None, rule.prior_share, statistic, short.count,
                   sum(t.n for t in baseline.values()), short.estimator)


def recovered(rule: SpikeRule, verdict: Verdict) -> bool:
    """A firing spike resolves once the rise is under half the minimum (hysteresis against flapping);
    an untested verdict (re-baselining after a swap) keeps it as it is."""
    return verdict.tested and verdict.rise < rule.min_increase / 2
