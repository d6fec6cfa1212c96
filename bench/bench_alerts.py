"""`make bench-alerts`: the negative-spike alert rule over a simulated day: false alarms, power, delay, swap alerts.

No Kafka, no Redis: per-minute counters of a population of subjects are simulated with
numpy, and the real rule (model_runtime/stats/spikes.py, with estimate_negative_share
and dispersion) decides, fed as consumer/alerts/detector.py feeds it. The previous
rule (round 2, frozen below) runs on the same draws, so one run compares both.

Population (per subject):
  volume       events an hour from a Zipf law on 1..2,000 (P(k) ∝ k^-s, s = --zipf-exponent)
  true share   of negative events, constant, uniform on 2-60%
  spike        on --spike-fraction of the subjects: +10, +20, +30 or +50 points (capped at
               98%) for 10-60 minutes, starting at a random minute of the measured day
Labels: each minute's events are drawn per true label (Poisson; non-negative events split
evenly between neutral and positive) and labelled through the confusion matrix of the
checkpoint's test split (manifest metrics.test.confusion_matrix, rows normalised). The
probabilities are one-hot, so a tally's probability sums are its label counts.

Model swap: at midday of the measured day v2 replaces v1. Its decision rule calls 40% of
each true label's non-negative predictions negative (drawn by thinning v1's labels, so
both streams share every other draw): the counted negative rate jumps at the swap while
the true shares do not move. The consumer keeps counters per version; so does the sim
(versions are split by the swap minute). The current rule gets each version's own rates
(its confusion rows, support the manifest's per-class counts); the round-2 rule pools
the versions and corrects everything with v1's rates, as it did.

Per-minute counts for 25 hours of history (the baseline's reach, 24 h 5 min, in whole
hours) and the measured day. On the measured day every subject is evaluated every minute t (the consumer: every 10 s to 1 min), with the short window
[t - 5 min, t), the baseline [t - 24 h - 5 min, t - 5 min) per version, and the
dispersion of each version's hourly buckets lying wholly in the baseline. (The consumer
sums whole clock hours, up to 25 of them; the exact 24 h changes nothing for constant
shares.) As in the detector, a subject is a candidate when firing or when its short
estimate has >= min_count events and a share >= min_increase; a candidate fires unless
firing or cooling down, and resolves when recovered(); 15 minutes of cooldown follow.

Speed: a real evaluation costs ~0.2 ms and candidates number millions a day, so a
vectorised screen first drops the subject-minutes where the verdict cannot change the
state: it computes each window's pacc shares (numpy, same formula) and skips a
non-firing subject whose largest per-version rise is below min_increase, and a firing
one whose smallest per-version rise is at least min_increase / 2 (a count-weighted rise
lies between the two), with a slack of 0.01 for float rounding; every other case (a
version without a baseline, an empty window) goes to the real rule. The run re-checks a
sample of skipped subject-minutes with the real rule and prints any disagreement.

Metrics (measured day):
  false alarms    alerts on subjects without a spike, and spike subjects' alerts outside
                  (spike start, spike end + 5 min], per 1,000 subject-days
  power, delay    share of spikes with an alert in (start, end + 5 min]; median minutes
                  from the start to that alert; by spike size and by the subject's
                  expected events per 5-minute window (<10, 10-40, >= 40; the last split
                  at 80), and by the model that labelled the spike (v1: it ended 5 minutes
                  before the swap, v2: it started after; v2 is the weaker classifier)
  swap alerts     the subjects without a spike are replayed for the 2 hours after the swap
                  without it: same draws, v1 labels throughout, from the alert state each
                  subject had at the swap. Alerts in those 2 hours with the swap minus
                  alerts without it are the alerts the swap caused. Both counts hold chance
                  alerts (v2's labels differ, so its chance alerts fall elsewhere): a
                  difference of zero or less means no excess.
"before" is the round-2 rule, "after" the rule now.
Writes bench/results/alerts.json, prints the tables and draws bench/alerts.png.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_runtime.stats.rates import Rates  # noqa: E402
from model_runtime.stats.shares import Tally, estimate_negative_share  # noqa: E402
from model_runtime.stats.spikes import SpikeRule, Verdict, dispersion, evaluate, recovered  # noqa: E402

LABELS = ("negative", "neutral", "positive")  # the confusion matrix is reordered to this; negative first
DAY = 1440  # minutes
MEASURED = DAY + 60  # the measured day's first minute: an hour more history than the 24 h 5 min baseline
HORIZON = MEASURED + DAY
SWAP = MEASURED + DAY // 2  # midday of the measured day, on an hour boundary
WINDOW = SpikeRule().window_s // 60  # the short window, minutes
COOLDOWN = 15  # minutes after a resolve (the consumer's --alert-cooldown)
SWAP_SHIFT = 0.4  # share of non-negative predictions v2 calls negative
SWAP_REPLAY = 120  # minutes after the swap replayed without it
SPIKE_SIZES = (0.10, 0.20, 0.30, 0.50)
SPIKE_MINUTES = (10, 60)
MAX_SHARE = 0.98
MAX_VOLUME = 2000  # events an hour
BANDS = (("<10", 0, 10), ("10-40", 10, 40), (">=40", 40, math.inf))  # expected events per 5-minute window
# Power is reported per group: (name, events per window from, to, the model labelling the spike: None = either).
POWER_GROUPS = (*((name, low, high, None) for name, low, high in BANDS),
                ("40-80", 40, 80, None), (">=80", 80, math.inf, None),
                (">=40 v1", 40, math.inf, "v1"), (">=40 v2", 40, math.inf, "v2"),
                ("40-80 v1", 40, 80, "v1"), (">=80 v1", 80, math.inf, "v1"))
SLACK = 0.01  # the screen's margin over the rule's own thresholds
CHECKS = 40  # skipped subject-minutes re-checked per chunk, rule and kind
CHUNK = 500  # subjects per worker task (fixes the random streams, whatever --workers)


# --- The round-2 rule: consumer/alerts/rule.py and schemas/shares.py before model_runtime/stats, frozen
# for comparison (the pacc path only: the sim always has probability sums and usable rates). One set of
# validation rates for every model version; significance from the counted labels' two-proportion z.

@dataclass(frozen=True)
class Round2Rule:
    min_count: int = 20
    min_increase: float = 0.15
    z_threshold: float = 2.326  # one-sided, about 1% false-alarm rate per test
    min_baseline: int = 50
    prior_share: float = 0.25


@dataclass(frozen=True)
class Round2Estimate:
    share: float | None
    low: float | None
    high: float | None
    count: int
    labelled_negative: int

    @property
    def standard_error(self) -> float:
        return 0.0 if self.low is None or self.high is None else (self.high - self.low) / (2 * 1.959964)


@dataclass(frozen=True)
class Round2Verdict:
    firing: bool
    negative_share: float
    reference_share: float


def round2_wilson(q: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    q = min(1.0, max(0.0, q))
    centre = (q + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(q * (1 - q) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def round2_pacc(q: np.ndarray, mean_probs: np.ndarray) -> np.ndarray:
    shares, *_ = np.linalg.lstsq(mean_probs.T, q, rcond=None)
    shares = np.clip(shares, 0.0, 1.0)
    total = shares.sum()
    return shares / total if total > 0 else np.full(len(q), 1 / len(q))


def round2_estimate(counts: Mapping[str, int], prob_sums: Mapping[str, float], params: Mapping[str, Any]) -> Round2Estimate:
    n = sum(counts.values())
    negatives = counts.get("negative", 0)
    if n == 0:
        return Round2Estimate(None, None, None, 0, 0)
    labels = list(params["labels"])
    q = np.array([prob_sums.get(label, 0.0) / n for label in labels])
    i = labels.index("negative")
    low_q, high_q = round2_wilson(float(q[i]), n)
    m = np.array(params["mean_probs"], dtype=float)
    shares = round2_pacc(q / max(q.sum(), 1e-12), m)
    others = [k for k in range(len(labels)) if k != i]
    weights = shares[others] if shares[others].sum() > 0 else np.ones(len(others))
    m0, m1 = float(np.average(m[others, i], weights=weights)), float(m[i][i])

    def mapped(v: float) -> float:
        return min(1.0, max(0.0, (v - m0) / (m1 - m0)))

    share = float(shares[i])
    return Round2Estimate(share, min(share, mapped(low_q)), max(share, mapped(high_q)), n, negatives)


def round2_evaluate(rule: Round2Rule, short: Round2Estimate, baseline: Round2Estimate) -> Round2Verdict:
    share = short.share or 0.0
    if baseline.count >= rule.min_baseline and baseline.share is not None:
        reference = baseline.share
        counted_short = short.labelled_negative / max(short.count, 1)
        counted_base = baseline.labelled_negative / baseline.count
        pooled = (short.labelled_negative + baseline.labelled_negative) / (short.count + baseline.count)
        spread = math.sqrt(pooled * (1 - pooled) * (1 / max(short.count, 1) + 1 / baseline.count))
        difference = counted_short - counted_base
    else:
        reference = rule.prior_share
        spread = short.standard_error or math.sqrt(reference * (1 - reference) / max(short.count, 1))
        difference = share - reference
    statistic = difference / spread if spread > 0 else (math.inf if difference > 0 else 0.0)
    firing = short.count >= rule.min_count and share - reference >= rule.min_increase and statistic >= rule.z_threshold
    return Round2Verdict(firing, share, reference)


def round2_recovered(rule: Round2Rule, verdict: Round2Verdict) -> bool:
    return verdict.negative_share - verdict.reference_share < rule.min_increase / 2


# --- Counters ---

class Stream:
    """A chunk's per-minute predicted-label counts as the counters keep them: version v1 before `swap`,
    v2 from it (swap = HORIZON: no swap). Windows are differences of cumulative sums."""

    def __init__(self, counts: np.ndarray, swap: int, name: str) -> None:
        self.cum = np.zeros((counts.shape[0], counts.shape[1] + 1, counts.shape[2]), dtype=np.int64)
        np.cumsum(counts, axis=1, out=self.cum[:, 1:])
        self.swap, self.name = swap, name

    def _spans(self, start, end):
        return {"v1": (np.minimum(start, self.swap), np.minimum(end, self.swap)),
                "v2": (np.maximum(start, self.swap), np.maximum(end, self.swap))}

    def windows(self, start: np.ndarray, end: np.ndarray) -> dict[str, np.ndarray]:
        """Counts per version of every subject over [start, end) for arrays of bounds: (subjects, len, labels)."""
        return {v: self.cum[:, hi] - self.cum[:, lo] for v, (lo, hi) in self._spans(start, end).items()}

    def counts(self, s: int, start: int, end: int) -> dict[str, np.ndarray]:
        """One subject's counts per version over [start, end), versions without events left out (as in Redis)."""
        spans = {v: self.cum[s, hi] - self.cum[s, lo] for v, (lo, hi) in self._spans(start, end).items()}
        return {v: c for v, c in spans.items() if c.sum()}

    def hours(self, s: int, version: str, start: int, end: int) -> np.ndarray:
        """Counts of the clock hours of `version` lying wholly in [start, end): (hours, labels)."""
        lo, hi = self._spans(start, end)[version]
        first, last = -(-int(lo) // 60), int(hi) // 60
        if last <= first:
            return np.zeros((0, len(LABELS)), dtype=np.int64)
        return np.diff(self.cum[s, 60 * np.arange(first, last + 1)], axis=0)


def tally(counts: np.ndarray) -> Tally:
    """One-hot probabilities: the probability sums are the label counts, P(negative)² sums to the negatives."""
    return Tally(Counter(dict(zip(LABELS, counts.tolist()))), {label: float(c) for label, c in zip(LABELS, counts)},
                 float(counts[0]))


def pacc_negative(counts: np.ndarray, mean_probs: np.ndarray) -> np.ndarray:
    """The negative share pacc (shares.py) gives one-hot windows, for many windows at once."""
    q = counts / np.maximum(counts.sum(-1, keepdims=True), 1)
    shares = np.clip(q @ np.linalg.pinv(mean_probs.T).T, 0.0, 1.0)
    total = shares.sum(-1)
    return np.where(total > 0, shares[..., 0] / np.where(total > 0, total, 1), 1 / len(LABELS))


@dataclass
class Screen:
    may_fire: np.ndarray  # (subjects, times): the rule could fire here
    may_resolve: np.ndarray  # (subjects, times): the rule could resolve here
    busy: np.ndarray  # (subjects, times): min_count events in the short window (where skipping fires is not trivial)


def short_and_baseline(stream: Stream, times: np.ndarray) -> tuple[dict, dict]:
    return stream.windows(times - WINDOW, times), stream.windows(times - WINDOW - DAY, times - WINDOW)


# --- The two rules, fed as the detector feeds them ---

class Detector:
    """The rule now (model_runtime/stats/spikes.py): per-version tallies, each version's own rates, dispersion."""

    name = "after"

    def __init__(self, rates: dict[str, Rates], rule: SpikeRule) -> None:
        self.rule, self.rates = rule, rates
        self.calls = 0
        self._dispersions: dict[tuple, float] = {}  # a version's hours change once an hour

    def screen(self, stream: Stream, times: np.ndarray) -> Screen:
        rule = self.rule
        short, base = short_and_baseline(stream, times)
        n_short = sum(c.sum(-1) for c in short.values())
        weighted = np.zeros(n_short.shape)
        largest, smallest = np.full(n_short.shape, -np.inf), np.full(n_short.shape, np.inf)
        unbased = np.zeros(n_short.shape, dtype=bool)
        for v, counts in short.items():
            n, n_base = counts.sum(-1), base[v].sum(-1)
            now = pacc_negative(counts, self.rates[v].mean_probs)
            rise = now - pacc_negative(base[v], self.rates[v].mean_probs)
            weighted += n * now
            unbased |= (n > 0) & (n_base < rule.min_baseline)
            compared = (n > 0) & (n_base >= rule.min_baseline)
            largest = np.where(compared, np.maximum(largest, rise), largest)
            smallest = np.where(compared, np.minimum(smallest, rise), smallest)
        busy = n_short >= rule.min_count
        share = weighted / np.maximum(n_short, 1)
        may_fire = busy & (share >= rule.min_increase - SLACK) & (unbased | (largest >= rule.min_increase - SLACK))
        may_resolve = (n_short == 0) | unbased | (smallest < rule.min_increase / 2 + SLACK)
        return Screen(may_fire, may_resolve, busy)

    def _verdict(self, stream: Stream, s: int, t: int, firing: bool) -> Verdict | None:
        self.calls += 1
        short = {v: tally(c) for v, c in stream.counts(s, t - WINDOW, t).items()}
        if not firing:
            estimate = estimate_negative_share(short, self.rates)
            if estimate.count < self.rule.min_count or (estimate.share or 0.0) < self.rule.min_increase:
                return None  # not a candidate: the detector does not evaluate it
        start, end = t - WINDOW - DAY, t - WINDOW
        baseline = {v: tally(c) for v, c in stream.counts(s, start, end).items()}
        return evaluate(self.rule, short, baseline, self.rates, {v: self._dispersion(stream, s, v, start, end) for v in baseline})

    def _dispersion(self, stream: Stream, s: int, version: str, start: int, end: int) -> float:
        key = (stream.name, s, version, -(-start // 60), end // 60)
        if key not in self._dispersions:
            self._dispersions[key] = dispersion([tally(c) for c in stream.hours(s, version, start, end)])
        return self._dispersions[key]

    def fires(self, stream: Stream, s: int, t: int) -> bool:
        verdict = self._verdict(stream, s, t, firing=False)
        return verdict is not None and verdict.firing

    def recovers(self, stream: Stream, s: int, t: int) -> bool:
        return recovered(self.rule, self._verdict(stream, s, t, firing=True))


class Round2Detector:
    """The round-2 rule: versions pooled, v1's validation rates for everything, no dispersion."""

    name = "before"

    def __init__(self, v1_rates: Rates) -> None:
        self.rule = Round2Rule()
        self.params = {"labels": list(LABELS), "mean_probs": v1_rates.mean_probs.tolist()}
        self.mean_probs = v1_rates.mean_probs
        self.calls = 0

    def screen(self, stream: Stream, times: np.ndarray) -> Screen:
        rule = self.rule
        short, base = (sum(w.values()) for w in short_and_baseline(stream, times))
        n_short, n_base = short.sum(-1), base.sum(-1)
        now = pacc_negative(short, self.mean_probs)
        rise = now - pacc_negative(base, self.mean_probs)
        unbased = n_base < rule.min_baseline  # tested against the prior instead
        busy = n_short >= rule.min_count
        may_fire = busy & (now >= rule.min_increase - SLACK) & (unbased | (rise >= rule.min_increase - SLACK))
        may_resolve = (n_short == 0) | unbased | (rise < rule.min_increase / 2 + SLACK)
        return Screen(may_fire, may_resolve, busy)

    def _estimate(self, stream: Stream, s: int, start: int, end: int) -> Round2Estimate:
        pooled = sum(stream.counts(s, start, end).values(), np.zeros(len(LABELS), dtype=np.int64))
        counts = dict(zip(LABELS, pooled.tolist()))
        return round2_estimate(counts, {k: float(v) for k, v in counts.items()}, self.params)

    def _verdict(self, stream: Stream, s: int, t: int, firing: bool) -> Round2Verdict | None:
        self.calls += 1
        short = self._estimate(stream, s, t - WINDOW, t)
        if not firing and (short.count < self.rule.min_count or (short.share or 0.0) < self.rule.min_increase):
            return None
        return round2_evaluate(self.rule, short, self._estimate(stream, s, t - WINDOW - DAY, t - WINDOW))

    def fires(self, stream: Stream, s: int, t: int) -> bool:
        verdict = self._verdict(stream, s, t, firing=False)
        return verdict is not None and verdict.firing

    def recovers(self, stream: Stream, s: int, t: int) -> bool:
        return round2_recovered(self.rule, self._verdict(stream, s, t, firing=True))


# --- Simulation ---

@dataclass
class AlertState:
    firing: bool = False
    cooldown_until: int = 0  # first minute it may fire again


@dataclass
class Chunk:
    seed: np.random.SeedSequence
    volume: np.ndarray  # events an hour
    share: np.ndarray  # true negative share outside spikes
    spike_size: np.ndarray  # 0: no spike
    spike_start: np.ndarray  # absolute minute
    spike_minutes: np.ndarray
    v1_rows: np.ndarray  # confusion rows (true x predicted), normalised
    rates: dict[str, Rates]
    rule: SpikeRule  # the rule now, as configured


def minute_shares(chunk: Chunk) -> np.ndarray:
    shares = np.repeat(chunk.share[:, None], HORIZON, axis=1)
    minutes = np.arange(HORIZON)
    spiking = (minutes >= chunk.spike_start[:, None]) & (minutes < (chunk.spike_start + chunk.spike_minutes)[:, None])
    spiking &= chunk.spike_size[:, None] > 0
    return np.where(spiking, np.minimum(shares + chunk.spike_size[:, None], MAX_SHARE), shares)


def confuse(rng: np.random.Generator, events: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Predicted-label counts of `events` true-label events through one confusion row (a multinomial by binomials)."""
    negative = rng.binomial(events, row[0])
    neutral = rng.binomial(events - negative, row[1] / (1 - row[0]))
    return np.stack([negative, neutral, events - negative - neutral], axis=-1)


def draw_counts(rng: np.random.Generator, chunk: Chunk) -> np.ndarray:
    """Per-minute predicted-label counts under v1: (subjects, minutes, labels)."""
    rate = chunk.volume[:, None] / 60.0
    shares = minute_shares(chunk)
    negative = rng.poisson(rate * shares)
    other = rng.poisson(rate * (1 - shares))
    neutral = rng.binomial(other, 0.5)
    rows = chunk.v1_rows
    return (confuse(rng, negative, rows[0]) + confuse(rng, neutral, rows[1]) + confuse(rng, other - neutral, rows[2])).astype(np.int32)


def swap_labels(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """v2 from the swap on: SWAP_SHIFT of v1's neutral and positive labels become negative (thinning keeps
    every other draw shared with the no-swap stream)."""
    swapped = counts.copy()
    after = swapped[:, SWAP:]
    moved = rng.binomial(after[..., 1:], SWAP_SHIFT)
    after[..., 1:] -= moved
    after[..., 0] += moved.sum(-1)
    return swapped


def walk(rule, stream: Stream, s: int, times: np.ndarray, screen_row: tuple[np.ndarray, np.ndarray],
         state: AlertState) -> list[int]:
    """Subject s's alert times over the contiguous `times`, advancing `state`; the real rule decides at
    every minute the screen passes (fire when not firing and not cooling down, resolve when firing)."""
    may_fire, may_resolve = (np.flatnonzero(row) for row in screen_row)
    first, fired, i = int(times[0]), [], 0
    while True:
        if state.firing:
            k = np.searchsorted(may_resolve, i)
            if k == len(may_resolve):
                return fired
            i = int(may_resolve[k])
            if rule.recovers(stream, s, first + i):
                state.firing, state.cooldown_until = False, first + i + COOLDOWN
        else:
            k = np.searchsorted(may_fire, max(i, state.cooldown_until - first))
            if k == len(may_fire):
                return fired
            i = int(may_fire[k])
            if rule.fires(stream, s, first + i):
                state.firing = True
                fired.append(first + i)
        i += 1


def check_screen(rule, stream: Stream, times: np.ndarray, screen: Screen, rng: np.random.Generator) -> tuple[int, int]:
    """(checked, wrong): skipped subject-minutes where the real rule would have fired or resolved."""
    checked = wrong = 0
    for mask, decide in ((screen.busy & ~screen.may_fire, rule.fires), (~screen.may_resolve, rule.recovers)):
        cells = np.flatnonzero(mask)
        for cell in rng.choice(cells, min(CHECKS, len(cells)), replace=False):
            s, j = np.unravel_index(cell, mask.shape)
            checked += 1
            wrong += decide(stream, int(s), int(times[j]))
    return checked, wrong


def run_rule(rule, swapped: Stream, unswapped: Stream, null: np.ndarray, rng: np.random.Generator) -> dict:
    times = np.arange(MEASURED + 1, HORIZON + 1)  # evaluations at the end of each measured minute
    replay = np.arange(SWAP + 1, SWAP + SWAP_REPLAY + 1)
    screen, replay_screen = rule.screen(swapped, times), rule.screen(unswapped, replay)
    split = SWAP - MEASURED  # evaluations up to the swap minute see no v2 event
    alerts, unswapped_alerts = [], []
    for s in range(len(null)):
        state = AlertState()
        alerts.append(walk(rule, swapped, s, times[:split], (screen.may_fire[s, :split], screen.may_resolve[s, :split]), state))
        at_swap = replace(state)
        alerts[-1] += walk(rule, swapped, s, times[split:], (screen.may_fire[s, split:], screen.may_resolve[s, split:]), state)
        if null[s]:
            unswapped_alerts.append(walk(rule, unswapped, s, replay, (replay_screen.may_fire[s], replay_screen.may_resolve[s]), at_swap))
        else:
            unswapped_alerts.append([])
    checked, wrong = check_screen(rule, swapped, times, screen, rng)
    return {"alerts": alerts, "unswapped_alerts": unswapped_alerts, "evaluations": rule.calls, "checked": checked, "wrong": wrong}


def run_chunk(chunk: Chunk) -> dict[str, dict]:
    rng = np.random.default_rng(chunk.seed)
    counts = draw_counts(rng, chunk)
    swapped, unswapped = Stream(swap_labels(rng, counts), SWAP, "swap"), Stream(counts, HORIZON, "no swap")
    null = chunk.spike_size == 0
    rules = (Round2Detector(chunk.rates["v1"]), Detector(chunk.rates, chunk.rule))
    return {rule.name: run_rule(rule, swapped, unswapped, null, rng) for rule in rules}


# --- Setup, scoring, report ---

def confusion(checkpoint: Path) -> tuple[np.ndarray, np.ndarray]:
    """(normalised rows, row sums) of the checkpoint's test confusion matrix, rows and columns in LABELS order."""
    test = orjson.loads((checkpoint / "manifest.json").read_bytes())["metrics"]["test"]
    order = [test["labels"].index(label) for label in LABELS]
    matrix = np.array(test["confusion_matrix"], dtype=float)[np.ix_(order, order)]
    return matrix / matrix.sum(1, keepdims=True), matrix.sum(1)


def version_rates(rows: np.ndarray, support: np.ndarray) -> dict[str, Rates]:
    """v1's rates are its confusion rows; v2's move SWAP_SHIFT of each row's non-negative mass to negative."""
    v2 = rows * np.array([1.0, 1 - SWAP_SHIFT, 1 - SWAP_SHIFT])
    v2[:, 0] += SWAP_SHIFT * rows[:, 1:].sum(1)
    return {v: Rates.from_dict({"labels": list(LABELS), "mean_probs": m.tolist(), "support": support.astype(int).tolist()}, "validation")
            for v, m in (("v1", rows), ("v2", v2))}


def draw_subjects(rng: np.random.Generator, n: int, exponent: float, spike_fraction: float) -> dict[str, np.ndarray]:
    k = np.arange(1, MAX_VOLUME + 1)
    p = k ** -exponent
    minutes = rng.integers(SPIKE_MINUTES[0], SPIKE_MINUTES[1] + 1, n)
    spiked = rng.random(n) < spike_fraction
    return {"volume": rng.choice(k, n, p=p / p.sum()).astype(float), "share": rng.uniform(0.02, 0.60, n),
            "spike_size": np.where(spiked, rng.choice(SPIKE_SIZES, n), 0.0), "spike_minutes": minutes,
            # the whole spike and the 5 minutes after it fall in the measured day
            "spike_start": MEASURED + (rng.random(n) * (DAY - minutes - WINDOW + 1)).astype(int)}


def spike_model(start: int, end: int) -> str:
    """The version that labelled the spike and the 5 minutes after it ("both": it straddles the swap)."""
    return "v1" if end + WINDOW <= SWAP else "v2" if start >= SWAP else "both"


def score(subjects: dict[str, np.ndarray], result: dict) -> dict:
    """False alarms, detections and swap-caused alerts of one rule."""
    per_window = subjects["volume"] * WINDOW / 60
    spikes, false_alarms = [], np.zeros(len(per_window), dtype=int)
    for s, alerts in enumerate(result["alerts"]):
        if subjects["spike_size"][s] == 0:
            false_alarms[s] = len(alerts)
            continue
        start, end = int(subjects["spike_start"][s]), int(subjects["spike_start"][s] + subjects["spike_minutes"][s])
        hits = [t for t in alerts if start < t <= end + WINDOW]
        false_alarms[s] = len(alerts) - len(hits)
        spikes.append({"size": float(subjects["spike_size"][s]), "per_window": per_window[s],
                       "model": spike_model(start, end), "delay": hits[0] - start if hits else None})
    null = np.flatnonzero(subjects["spike_size"] == 0)
    replay = range(SWAP + 1, SWAP + SWAP_REPLAY + 1)
    with_swap = sum(t in replay for s in null for t in result["alerts"][s])
    without_swap = sum(len(result["unswapped_alerts"][s]) for s in null)
    by_band = {}
    for name, low, high in BANDS:
        members = (per_window >= low) & (per_window < high)
        by_band[name] = {"subjects": int(members.sum()), "false_alarms": int(false_alarms[members].sum()),
                         "per_1000_subject_days": 1000 * false_alarms[members].sum() / max(1, members.sum())}
    return {"false_alarms": int(false_alarms.sum()), "false_alarms_per_1000_subject_days": 1000 * false_alarms.sum() / len(per_window),
            "false_alarms_by_band": by_band,
            "swap": {"alerts_with_swap": with_swap, "alerts_without_swap": without_swap, "caused_by_swap": with_swap - without_swap},
            "power": {name: power_row([sp for sp in spikes if low <= sp["per_window"] < high and model in (None, sp["model"])])
                      for name, low, high, model in POWER_GROUPS},
            "evaluations": result["evaluations"], "screen_checked": result["checked"], "screen_wrong": result["wrong"]}


def power_row(spikes: list[dict]) -> dict[str, dict]:
    row = {}
    for size in SPIKE_SIZES:
        cell = [sp for sp in spikes if sp["size"] == size]
        delays = [sp["delay"] for sp in cell if sp["delay"] is not None]
        row[f"+{round(100 * size)}"] = {"spikes": len(cell), "detected": len(delays), "power": len(delays) / len(cell) if cell else None,
                                        "median_delay_min": float(np.median(delays)) if delays else None}
    return row


def merge(parts: list[dict[str, dict]]) -> dict[str, dict]:
    merged = {}
    for name in parts[0]:
        merged[name] = {"alerts": [a for p in parts for a in p[name]["alerts"]],
                        "unswapped_alerts": [a for p in parts for a in p[name]["unswapped_alerts"]],
                        **{k: sum(p[name][k] for p in parts) for k in ("evaluations", "checked", "wrong")}}
    return merged


def cell_text(cell: dict) -> str:
    if not cell["spikes"]:
        return "-"
    delay = "-" if cell["median_delay_min"] is None else f"{cell['median_delay_min']:g}"
    return f"{cell['power']:.2f} ({delay})"


def print_report(report: dict) -> None:
    before, after = report["rules"]["before"], report["rules"]["after"]
    setup = report["setup"]
    print(f"alert rule over a simulated day: {setup['subjects']} subjects (Zipf volumes 1-{MAX_VOLUME}/h, s={setup['zipf_exponent']}), "
          f"{setup['spikes']} spikes, v1 -> v2 swap at 12:00 (seed {setup['seed']}, {report['wall_s']:.0f} s)")
    print(f"{'':50} {'before (round 2)':>17} {'after':>10}   target")

    def line(text: str, before_value, after_value, target: str = "") -> None:
        print(f"{text:50} {before_value:>17} {after_value:>10}   {target}")

    line("false alarms / 1,000 subject-days", f"{before['false_alarms_per_1000_subject_days']:.1f}",
         f"{after['false_alarms_per_1000_subject_days']:.1f}", "<= 1")
    line("  false alarms (alerts)", before["false_alarms"], after["false_alarms"])
    for band, cell in after["false_alarms_by_band"].items():
        line(f"  per 1,000 subject-days at {band} events/window ({cell['subjects']})",
             f"{before['false_alarms_by_band'][band]['per_1000_subject_days']:.1f}", f"{cell['per_1000_subject_days']:.1f}")
    for text, key, target in (("alerts in the 2 h after the swap (no-spike subjects)", "alerts_with_swap", ""),
                              ("  the same subjects and draws without the swap", "alerts_without_swap", ""),
                              ("  alerts caused by the swap (the difference)", "caused_by_swap", "0")):
        line(text, before["swap"][key], after["swap"][key], target)

    print("\npower (median delay, min): spikes with an alert in (start, end + 5 min]; n spikes per cell. Rows: expected")
    print("events per 5-minute window, and the model that labelled the spike (v1: before the swap, v2: after it)")
    print(f"{'events/window':14} {'':7}" + "".join(f"{size:>13}" for size in after["power"][">=40"]))
    for group, row in after["power"].items():
        print(f"{group:14} {'n':7}" + "".join(f"{cell['spikes']:>13}" for cell in row.values()))
        for name, label in (("before", "before"), ("after", "after")):
            print(f"{'':14} {label:7}" + "".join(f"{cell_text(cell):>13}" for cell in report["rules"][name]["power"][group].values()))
    print("\ntargets (issue), for the rule after:")
    for text, met in report["targets"].items():
        print(f"  {'met    ' if met else 'NOT met'}  {text}")
    for name, r in (("before", before), ("after", after)):
        print(f"{name}: {r['evaluations']} real evaluations; {r['screen_checked']} skipped subject-minutes re-checked, "
              f"{r['screen_wrong']} where the rule would have changed the state")


def targets(after: dict) -> dict[str, bool]:
    cell = after["power"][">=40"]["+30"]
    return {f"<= 1 false alarm per 1,000 subject-days: {after['false_alarms_per_1000_subject_days']:.2f}":
            after["false_alarms_per_1000_subject_days"] <= 1,
            f"power >= 0.9 for +30 points at >= 40 events per window: {cell['power']:.2f}": cell["power"] >= 0.9,
            f"median delay <= 5 min there: {cell['median_delay_min']:g}": cell["median_delay_min"] <= WINDOW,
            f"0 alerts caused by the swap: {after['swap']['caused_by_swap']}": after["swap"]["caused_by_swap"] <= 0}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bands = ("<10", "10-40", "40-80", ">=80")
    lines = (("before", "", "s--", "before (round 2)"), ("after", "", "o-", "after"),
             ("after", " v1", "o:", "after, spikes under v1"))
    fig, axes = plt.subplots(1, len(bands), figsize=(4 * len(bands), 3.8), sharey=True)
    sizes = [100 * s for s in SPIKE_SIZES]
    for ax, band in zip(axes, bands):
        for rule, suffix, style, label in lines:
            row = report["rules"][rule]["power"].get(band + suffix)
            if row:
                ax.plot(sizes, [np.nan if c["power"] is None else c["power"] for c in row.values()], style, label=label)
        ax.axhline(0.9, color="grey", linewidth=0.8, linestyle=":")
        ax.set(title=f"{band} events / 5-min window", xlabel="spike (points)", xticks=sizes, ylim=(-0.02, 1.02))
    axes[0].set_ylabel("power (alert by spike end + 5 min)")
    axes[-1].legend(loc="lower right", fontsize=8)
    rules = report["rules"]
    fig.suptitle(f"false alarms / 1,000 subject-days: before {rules['before']['false_alarms_per_1000_subject_days']:.1f}, "
                 f"after {rules['after']['false_alarms_per_1000_subject_days']:.2f}; alerts caused by the swap: "
                 f"before {rules['before']['swap']['caused_by_swap']}, after {rules['after']['swap']['caused_by_swap']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/latest",
                        help="checkpoint whose manifest's test confusion matrix labels the simulated events")
    parser.add_argument("--subjects", type=int, default=10000, help="simulated subjects (queries or products)")
    parser.add_argument("--seed", type=int, default=7, help="seed of every random draw (the same seed gives the same tables)")
    parser.add_argument("--spike-fraction", type=float, default=0.2, help="share of the subjects that get one spike on the measured day")
    parser.add_argument("--zipf-exponent", type=float, default=1.0, help="exponent s of the volume law P(k) ∝ k^-s, k = 1..2000 events an hour")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes simulating chunks of subjects in parallel")
    parser.add_argument("--false-alarm-days", type=float, default=SpikeRule().false_alarm_days,
                        help="the rule's target mean time between false alarms per subject (the consumer's --alert-false-alarm-days)")
    parser.add_argument("--plot", default=str(ROOT / "bench" / "alerts.png"), help="where to draw power by spike size, before and after")
    args = parser.parse_args()
    started = time.monotonic()
    rows, support = confusion(Path(args.checkpoint))
    rates = version_rates(rows, support)
    rule = SpikeRule(false_alarm_days=args.false_alarm_days)
    seeds = np.random.SeedSequence(args.seed).spawn(1 + -(-args.subjects // CHUNK))
    subjects = draw_subjects(np.random.default_rng(seeds[0]), args.subjects, args.zipf_exponent, args.spike_fraction)
    chunks = [Chunk(seed, *(subjects[k][i:i + CHUNK] for k in ("volume", "share", "spike_size", "spike_start", "spike_minutes")),
                    rows, rates, rule) for seed, i in zip(seeds[1:], range(0, args.subjects, CHUNK))]
    with ProcessPoolExecutor(args.workers) as pool:
        results = merge(list(pool.map(run_chunk, chunks)))
    scored = {name: score(subjects, result) for name, result in results.items()}
    report = {"checkpoint": str(args.checkpoint), "wall_s": round(time.monotonic() - started, 1),
              "setup": {"subjects": args.subjects, "seed": args.seed, "zipf_exponent": args.zipf_exponent,
                        "spike_fraction": args.spike_fraction, "spikes": int((subjects["spike_size"] > 0).sum()),
                        "confusion_rows": rows.round(4).tolist(), "v2_rows": rates["v2"].mean_probs.round(4).tolist(),
                        "swap_minute_of_day": SWAP - MEASURED, "swap_replay_min": SWAP_REPLAY, "cooldown_min": COOLDOWN,
                        "false_alarm_days": rule.false_alarm_days, "z_threshold_after": round(rule.z_threshold, 3), "z_threshold_before": Round2Rule().z_threshold},
              "rules": scored}
    report["targets"] = targets(scored["after"])
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "alerts.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print_report(report)
    plot(report, Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
