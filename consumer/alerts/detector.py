"""Spike detection over the Redis counters, with alert state kept in Redis.

Runs on the subjects each batch touched (at most once per subject per
`eval_interval_s`), after the batch's counters are written. Alert state lives in
the subject's own hash-tagged key, and transitions are Lua scripts, so a restart
or a second consumer process never fires the same spike twice.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Any, Iterable

import orjson

from schemas import format_timestamp

from ..state.counters import CounterStore
from .rule import SpikeRule, Verdict, evaluate, recovered

log = logging.getLogger("consumer.alerts")

# KEYS[1]: alert state hash. ARGV: now_ms, alert_id, alert json. Fires unless firing or cooling down.
_FIRE = """
local state = redis.call('HGET', KEYS[1], 'state')
local cooldown = tonumber(redis.call('HGET', KEYS[1], 'cooldown_until') or '0')
if state == 'firing' or tonumber(ARGV[1]) < cooldown then return 0 end
redis.call('HSET', KEYS[1], 'state', 'firing', 'alert_id', ARGV[2], 'fired_at', ARGV[1], 'alert', ARGV[3])
return 1
"""
# KEYS[1]: alert state hash. ARGV: alert_id, cooldown_until_ms, alert json.
_RESOLVE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'firing' or redis.call('HGET', KEYS[1], 'alert_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'resolved', 'cooldown_until', ARGV[2], 'alert', ARGV[3])
return 1
"""


def alert_index_key(prefix: str) -> str:
    """Hash of the latest alert per subject ("query:<name>" -> alert JSON), for the read API."""
    return f"{prefix}:alerts"


def read_alerts(client, prefix: str, state: str | None = None) -> list[dict[str, Any]]:
    found = [orjson.loads(v) for v in client.hgetall(alert_index_key(prefix)).values()]
    return sorted((a for a in found if state is None or a["state"] == state), key=lambda a: a["fired_at"], reverse=True)


class SpikeDetector:
    def __init__(self, store: CounterStore, rule: SpikeRule, window_s: int, window_name: str, baseline_s: int,
                 cooldown_s: int, eval_interval_s: float = 10.0, baseline_refresh_s: float = 60.0) -> None:
        self.store = store
        self.client = store.client
        self.rule = rule
        self.window_s, self.window_name, self.baseline_s = window_s, window_name, baseline_s
        self.cooldown_s = cooldown_s
        self.eval_interval_s = eval_interval_s
        self._fire = self.client.register_script(_FIRE)
        self._resolve = self.client.register_script(_RESOLVE)
        self._last_eval: dict[tuple[str, str], float] = {}
        # The baseline moves slowly: re-read it once a minute, not per batch.
        self.baseline_refresh_s = baseline_refresh_s
        self._baselines: dict[tuple[str, str], tuple[float, int, int]] = {}

    def state_key(self, kind: str, name: str) -> str:
        return f"{self.store.layout.tag(kind, name)}:alert"

    def check(self, subjects: Iterable[tuple[str, str]], now_ms: int | None = None) -> list[dict[str, Any]]:
        """Alert events (firing or resolved) for the subjects whose state changed.

        Cheap first: the short window and the alert state of each due subject (two
        round trips). The baseline (a day of hourly buckets) is read only for subjects
        that could fire (enough volume, a negative share of at least the minimum rise)
        or are firing, and is then kept for `baseline_refresh_s` (a sixth of that while
        it is still too small to use, so a young subject soon gets its own).
        """
        now_ms = now_ms or int(time.time() * 1000)
        clock = time.monotonic()
        due = [s for s in dict.fromkeys(subjects) if clock - self._last_eval.get(s, -math.inf) >= self.eval_interval_s]
        if not due:
            return []
        for subject in due:
            self._last_eval[subject] = clock
        if len(self._last_eval) > 100_000:  # forget subjects not seen for a while
            self._last_eval = {s: t for s, t in self._last_eval.items() if clock - t < 3600}
            self._baselines = {s: b for s, b in self._baselines.items() if s in self._last_eval}
        states = self._states(due)
        shorts = dict(zip(due, self.store.window_counts_many([(kind, name, self.window_s) for kind, name in due], now_ms)))
        rule = self.rule
        candidates = [s for s in due if states[s].get("state") == "firing"
                      or (sum(shorts[s].values()) >= rule.min_count
                          and shorts[s].get("negative", 0) >= rule.min_increase * sum(shorts[s].values()))]
        self._refresh_baselines(candidates, shorts, now_ms, clock)
        alerts = []
        for subject in candidates:
            short, (_, base_negative, base_total), state = shorts[subject], self._baselines[subject], states[subject]
            verdict = evaluate(rule, short.get("negative", 0), sum(short.values()), base_negative, base_total)
            if state.get("state") != "firing" and verdict.firing:
                alerts.extend(self._transition_fire(subject, verdict, now_ms))
            elif state.get("state") == "firing" and recovered(rule, verdict):
                alerts.extend(self._transition_resolve(subject, verdict, now_ms, state))
        return alerts

    def _refresh_baselines(self, subjects: list[tuple[str, str]], shorts: dict, now_ms: int, clock: float) -> None:
        def expired(subject) -> bool:
            fetched, _, total = self._baselines.get(subject, (-math.inf, 0, 0))
            ttl = self.baseline_refresh_s if total >= self.rule.min_baseline else self.baseline_refresh_s / 6
            return clock - fetched >= ttl

        stale = [s for s in subjects if expired(s)]
        longer = self.store.window_counts_many([(kind, name, self.baseline_s + self.window_s) for kind, name in stale], now_ms)
        for subject, counts in zip(stale, longer):
            short = shorts[subject]
            base_negative = max(0, counts.get("negative", 0) - short.get("negative", 0))
            base_total = max(0, sum(counts.values()) - sum(short.values()))
            self._baselines[subject] = (clock, base_negative, base_total)

    def _states(self, subjects: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for kind, name in subjects:
            pipe.hgetall(self.state_key(kind, name))
        return {s: {k.decode(): v.decode() for k, v in raw.items()} for s, raw in zip(subjects, pipe.execute())}

    def _event(self, subject: tuple[str, str], verdict: Verdict, alert_id: str, state: str, fired_ms: int,
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
            "test": "two_proportion_z" if verdict.baseline_share is not None else "one_sample_z_vs_prior",
            "fired_at": format_timestamp(fired_ms), "resolved_at": format_timestamp(resolved_ms) if resolved_ms else None,
        }

    def _transition_fire(self, subject, verdict: Verdict, now_ms: int) -> list[dict[str, Any]]:
        alert_id = uuid.uuid4().hex
        event = self._event(subject, verdict, alert_id, "firing", now_ms, None)
        payload = orjson.dumps(event)
        if not self._fire(keys=[self.state_key(*subject)], args=[now_ms, alert_id, payload]):
            return []  # another process fired it, or it is cooling down
        self.client.hset(alert_index_key(self.store.layout.prefix), f"{subject[0]}:{subject[1]}", payload)
        log.warning("negative spike", extra={"alert": event})
        return [event]

    def _transition_resolve(self, subject, verdict: Verdict, now_ms: int, state: dict[str, str]) -> list[dict[str, Any]]:
        alert_id = state["alert_id"]
        event = self._event(subject, verdict, alert_id, "resolved", int(state["fired_at"]), now_ms)
        payload = orjson.dumps(event)
        if not self._resolve(keys=[self.state_key(*subject)], args=[alert_id, now_ms + self.cooldown_s * 1000, payload]):
            return []
        self.client.hset(alert_index_key(self.store.layout.prefix), f"{subject[0]}:{subject[1]}", payload)
        log.info("negative spike resolved", extra={"alert": event})
        return [event]
