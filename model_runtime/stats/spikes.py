"""The spike rule: is the short window's negative share a large rise over the subject's baseline?

Compared like with like. Each model version's short-window events are compared with the
baseline that version labelled, corrected with the same rates, so a version's rates cancel
and a swap cannot move the comparison. A version without a baseline of its own (just swapped
in) is left out until it has one (re-baselining); a subject whose whole short window is such
is not tested.

Size: the rise D = Σ w_v (π_short,v − π_base,v) of the estimated shares (shares.py), w_v the
version's share of the compared short-window events. It fires when D ≥ min_increase.

Significance, of the same rise: per version, the signed root of the two-sample quasi-binomial
deviance of the short window's mean P(negative) q_s (moved half an event toward q_0, a continuity
correction) and the baseline's q_0 against their pooled mean p (a likelihood-ratio test of
"no change"),

  z_v = sign(q_s − q_0) √( 2 [n_s KL(q_s ‖ p) + n_b KL(q_0 ‖ p)] / (φ σ² / q_0(1 − q_0)) )

(within a version the size is a linear map of q: exactly so for two labels, π = (q − m0)/(m1 − m0);
with three, m0 also weighs the other labels' estimated shares, so the test is that of the binary
reduction). σ² is the per-event
variance of P(negative) in the baseline; φ ≥ 1 the over-dispersion of the baseline's hourly
buckets (repeated snippets and hour-to-hour drift spread buckets more than independent events
would). Unlike a Wald z, the deviance keeps the skewed tail of a small count at a low share,
where a normal tail at 4.5σ is tens of times too thin. Versions combine by Stouffer's method,
z = Σ √n_v z_v / √Σ n_v. It fires when z ≥ z*.

False alarms are sized per subject-day, not per test. The window moves one fine bucket at a
time (step_s, a minute) and each step is a fresh look, so a day holds 86400 / step_s looks;
for a target mean time between false alarms of T days per subject,
  z* = Φ⁻¹(1 − step_s / (86400 T))    (T = 300 days, one-minute steps: z* = 4.59).
Consecutive looks share most of their events, so this over-counts fresh looks: bench_alerts
measured 0.1 false alarms per 1,000 subject-days at T = 300, well inside the target.
(A Shewhart chart sized by its in-control run length; Montgomery, Introduction to Statistical
Quality Control, ch. 6; quasi-likelihood deviance: McCullagh & Nelder, ch. 9.)
bench/bench_alerts.py measures the resulting rate, power and delay on a simulated day.

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
    false_alarm_days: float = 300.0  # target mean time between false alarms, per subject, in days
    window_s: int = 300  # the short window's length
    step_s: int = 60  # how far the window moves between fresh looks: the fine counter bucket
    min_baseline: int = 200  # baseline events (of a version) needed to compare with it: a young one is noisy
    prior_share: float = 0.25  # negative share assumed for subjects without any baseline
    max_dispersion: float = 20.0

    def __post_init__(self) -> None:
        if self.false_alarm_days <= 0 or self.window_s <= 0 or self.step_s <= 0:
            raise ValueError("false_alarm_days, window_s and step_s must be > 0")
        if self.min_baseline < 1:
            raise ValueError(f"min_baseline must be >= 1, got {self.min_baseline}")

    @property
    def z_threshold(self) -> float:
        looks_per_day = DAY_S / min(self.step_s, self.window_s)
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


MEDIAN_CHI2_1 = 0.4549  # the median of a χ² variable with one degree of freedom


def dispersion(buckets: Sequence[Tally], min_buckets: int = 6) -> float | None:
    """How much more the buckets' mean P(negative) spreads than independent events would: the median
    of the squared standardized residuals over the median of χ²₁. 1 for independent events. The
    median, not Pearson's mean, so one hour holding a spike does not widen every later test; None
    with fewer than min_buckets filled buckets, too few to tell."""
    filled = [b for b in buckets if b.n]
    if len(filled) < min_buckets:
        return None
    pooled = Tally()
    for b in filled:
        pooled.add(b)
    q, variance = pooled.mean_negative(), pooled.negative_variance()
    if variance <= 0:
        return 1.0
    residuals = sorted(b.n * (b.mean_negative() - q) ** 2 / variance for b in filled)
    middle = len(residuals) // 2
    median = residuals[middle] if len(residuals) % 2 else (residuals[middle - 1] + residuals[middle]) / 2
    return max(1.0, median / MEDIAN_CHI2_1)


def _kl(q: float, p: float) -> float:
    q, p = min(1 - 1e-9, max(1e-9, q)), min(1 - 1e-9, max(1e-9, p))
    return q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))


def signed_deviance(q_short: float, n_short: float, q_base: float, n_base: float, scale: float) -> float:
    """Signed root of the two-sample quasi-binomial deviance: the short window's and the baseline's mean
    P(negative) against their pooled mean (both samples' own noise, so a young baseline is no sharper
    than it is), divided by the quasi-likelihood scale. The short mean moves half an event toward the
    baseline first (a continuity correction): a small count at the edge, 21 negatives of 21, is a
    discrete event whose exact tail is several times the likelihood ratio's."""
    q_short -= math.copysign(min(abs(q_short - q_base), 0.5 / n_short), q_short - q_base)
    pooled = (n_short * q_short + n_base * q_base) / (n_short + n_base)
    deviance = 2 * (n_short * _kl(q_short, pooled) + n_base * _kl(q_base, pooled)) / scale
    return math.copysign(math.sqrt(max(0.0, deviance)), q_short - q_base)


def evaluate(rule: SpikeRule, short: Mapping[str, Tally], baseline: Mapping[str, Tally],
             rates: Mapping[str, Rates | None], dispersions: Mapping[str, float | None] | None = None) -> Verdict:
    """The verdict on one subject: short and baseline tallies per model version (the baseline
    excludes the short window), each version's rates and the baseline's over-dispersion. A version
    too young to measure its own dispersion takes the subject's largest measured one: repeated
    snippets and drift belong to the subject's traffic, not to the model that labels it."""
    dispersions = dispersions or {}
    subject_phi = max((phi for phi in dispersions.values() if phi is not None), default=1.0)
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
    rise = short_share = base_share = phi_weighted = stouffer = 0.0
    short_parts = []
    for v in compared:
        s, b, r = short[v], baseline[v], rates.get(v)
        now, before = estimate_version(s, r), estimate_version(b, r)
        w = s.n / n_short
        phi = min(rule.max_dispersion, dispersions.get(v) or subject_phi)
        q0 = b.mean_negative()
        # Two pseudo-events (one negative, one not) keep a baseline without negatives from a zero variance.
        sigma2 = (b.n * b.negative_variance() + 2 * 0.25) / (b.n + 2)
        smoothed = (b.n * q0 + 1) / (b.n + 2)
        scale = phi * min(1.0, sigma2 / (smoothed * (1 - smoothed)))
        stouffer += math.sqrt(s.n) * signed_deviance(s.mean_negative(), s.n, q0, b.n, scale)
        rise += w * (now.share - before.share)
        short_share += w * now.share
        base_share += w * before.share
        phi_weighted += w * phi
        short_parts.append((v, now, r))
    statistic = stouffer / math.sqrt(n_short)
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
