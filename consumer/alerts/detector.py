"""Spike detection over the Redis counters; transitions go through the alert outbox state.

`check` evaluates the subjects it is given, now: the schedule (alerts/schedule.py)
decides which are due, by event (a batch touched them) and by time (they were touched
recently or are firing, so the window slides even without traffic). Transitions are
Lua scripts on the subject's state (alerts/state.py), so a restart or a second
consumer process never fires the same spike twice.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import OrderedDict
from typing import Any, Iterable

import orjson

from model_runtime.stats.shares import estimate_negative_share
from model_runtime.stats.spikes import SpikeRule, Verdict, dispersion, evaluate, recovered
from schemas import format_timestamp

from ..state.counters import CounterStore, WindowStats
from ..state.rates import RateStore
from .state import AlertStore, Subject

log = logging.getLogger("consumer.alerts")
MAX_BASELINES = 100_000  # subjects whose baseline is kept between checks


class SpikeDetector:
    def __init__(self, store: CounterStore, alerts: AlertStore, rates: RateStore, rule: SpikeRule, window_name: str,
                 baseline_s: int, cooldown_s: int, baseline_refresh_s: float = 60.0) -> None:
        self.store = store
        self.rates = rates  # each model version's rates (state/rates.py)
        self.alerts = alerts
        self.rule = rule
        self.window_s, self.window_name, self.baseline_s = rule.window_s, window_name, baseline_s
        self.cooldown_s = cooldown_s
        # The baseline moves slowly: re-read it once a minute, not per evaluation.
        self.baseline_refresh_s = baseline_refresh_s
        # (read at, stats, dispersion per version), least recently used first: an LRU bounded by count,
        # so forgetting costs what it forgets, on the loop thread.
        self._baselines: OrderedDict[Subject, tuple[float, WindowStats, dict[str, float]]] = OrderedDict()
        self.firing: set[Subject] = set()  # firing after the last check, as this process saw it

    def check(self, subjects: Iterable[Subject], now_ms: int | None = None) -> list[dict[str, Any]]:
        """Alert events (firing or resolved) for the subjects whose state this call changed.

        Cheap first: the short window and the alert state of each subject (two round
        trips). The baseline (a day of hourly buckets) is read only for subjects that
        could fire (enough volume, a negative share of at least the minimum rise) or are
        firing, and is then kept for `baseline_refresh_s` (a sixth of that while it is
        still too small to use, so a young subject soon gets its own).
        """
        now_ms = now_ms or int(time.time() * 1000)
        clock = time.monotonic()
        due = list(dict.fromkeys(subjects))
        if not due:
            return []
        states = self.alerts.states(due)
        shorts = dict(zip(due, self.store.window_stats_many([(kind, name, self.window_s) for kind, name in due], now_ms)))
        rates = self.rates.read(model for stats in shorts.values() for model in stats.tallies)
        estimates = {s: estimate_negative_share(shorts[s].tallies, rates) for s in due}
        rule = self.rule
        candidates = [s for s in due if states[s].get("state") == "firing"
                      or (estimates[s].count >= rule.min_count and (estimates[s].share or 0.0) >= rule.min_increase)]
        self._refresh_baselines(candidates, shorts, now_ms, clock)
        rates = self.rates.read(model for s in candidates for model in self._baselines[s][1].tallies) | rates
        self.firing.difference_update(due)
        self.firing.update(s for s in due if states[s].get("state") == "firing")
        events = []
        for subject in candidates:
            self._baselines.move_to_end(subject)
            _, baseline, dispersions = self._baselines[subject]
            state = states[subject]
            verdict = evaluate(rule, shorts[subject].tallies, baseline.tallies, rates, dispersions)
            if state.get("state") != "firing" and verdict.firing:
                events.extend(self._fire(subject, verdict, now_ms))
            elif state.get("state") == "firing" and recovered(rule, verdict):
                events.extend(self._resolve(subject, verdict, now_ms, state))
        while len(self._baselines) > MAX_BASELINES:  # after this check's own baselines were read
            self._baselines.popitem(last=False)
        return events

    def _refresh_baselines(self, subjects: list[Subject], shorts: dict[Subject, WindowStats], now_ms: int, clock: float) -> None:
        def expired(subject) -> bool:
            fetched, baseline, _ = self._baselines.get(subject, (-math.inf, None, None))
            total = sum(baseline.counts.values()) if baseline else 0
            ttl = self.baseline_refresh_s if total >= self.rule.min_baseline else self.baseline_refresh_s / 6
            return clock - fetched >= ttl

        stale = [s for s in subjects if expired(s)]
        series = self.store.bucket_series_many([(kind, name, self.baseline_s + self.window_s) for kind, name in stale], now_ms)
        # Over-dispersion from the hours wholly before the short window: a spike must not widen its own test.
        before_s = now_ms // 1000 - self.window_s
        for subject, (size, buckets) in zip(stale, series):
            longer = WindowStats()
            for _, bucket in buckets:
                longer.add(bucket)
            settled = [bucket for start, bucket in buckets if start + size <= before_s]
            dispersions = {model: dispersion([b.tallies[model] for b in settled if model in b.tallies]) for model in longer.tallies}
            self._baselines[subject] = (clock, longer.minus(shorts[subject]), dispersions)

    def _event(self, subject: Subject, verdict: Verdict, alert_id: str, state: str, fired_ms: int,
               resolved_ms: int | None) -> dict[str, Any]:
        kind, name = subject
        return {
            "alert_id": alert_id, "subject": kind, "query": name if kind == "query" else None,
            "product_id": name if kind == "product" else None, "state": state, "window": self.window_name,
            "negative_share": round(verdict.negative_share, 4),
            "baseline_share": None if verdict.baseline_share is None else round(verdict.baseline_share, 4),
            "reference_share": round(verdict.reference_share, 4), "count": verdict.count,
            "baseline_count": verdict.baseline_count,
            "statistic": round(verdict.statistic, 3) if math.isfinite(verdict.statistic) else 99.0,
            "z_threshold": round(self.rule.z_threshold, 3), "dispersion": round(verdict.dispersion, 3),
            "test": "two_sample_deviance" if verdict.baseline_share is not None else "one_sample_z_vs_prior",
            "estimator": verdict.estimator,
            "fired_at": format_timestamp(fired_ms), "resolved_at": format_timestamp(resolved_ms) if resolved_ms else None,
        }

    def _fire(self, subject: Subject, verdict: Verdict, now_ms: int) -> list[dict[str, Any]]:
        event = self._event(subject, verdict, uuid.uuid4().hex, "firing", now_ms, None)
        if not self.alerts.fire(subject, event["alert_id"], now_ms, orjson.dumps(event)):
            return []  # another process fired it, or it is cooling down
        self.firing.add(subject)
        log.warning("negative spike", extra={"alert": event})
        return [event]

    def _resolve(self, subject: Subject, verdict: Verdict, now_ms: int, state: dict[str, str]) -> list[dict[str, Any]]:
        event = self._event(subject, verdict, state["alert_id"], "resolved", int(state["fired_at"]), now_ms)
        if not self.alerts.resolve(subject, state["alert_id"], now_ms + self.cooldown_s * 1000, now_ms, orjson.dumps(event)):
            return []
        self.firing.discard(subject)
        log.info("negative spike resolved", extra={"alert": event})
        return [event]
