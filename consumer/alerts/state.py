"""Alert state in Redis, with an outbox so that no alert is lost.

Per subject, one hash in the subject's own hash-tagged slot (cluster-safe):

    P:{q:<h>}:alert   state, alert_id, fired_at, cooldown_until, alert (latest event JSON),
                      pending:firing / pending:resolved (events not yet acknowledged by Kafka)
    P:{q:<h>}:alert:periods  list of "<fired_ms>|<resolved_ms>", the last MAX_PERIODS resolved spikes

A transition (fire, resolve) and its pending record are written by one script, so a
state change can never exist without the event that announces it. The event is
(re)sent until the broker acks it, then its pending field is removed (same alert_id
on every resend). Two global sorted sets make pending and recent alerts findable:

    P:alerts:pending  members "<kind>:<name>" that may have pending events (written *before*
                      the transition, so a crash leaves a marker, never an unmarked pending event)
    P:alerts:index    members "<kind>:<name>" by last transition time, for the read API

Every key expires: the state hashes `ttl_s` after their last transition, the index
entries after the same time, the sets themselves when idle.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..state.counters import CounterLayout

PENDING_FIELDS = ("pending:firing", "pending:resolved")
MAX_PERIODS = 50  # past firing periods kept per subject, for the dashboard's chart

# KEYS[1]: state hash. ARGV: now_ms, alert_id, alert json, ttl_s. Fires unless firing or cooling down.
_FIRE = """
local state = redis.call('HGET', KEYS[1], 'state')
local cooldown = tonumber(redis.call('HGET', KEYS[1], 'cooldown_until') or '0')
if state == 'firing' or tonumber(ARGV[1]) < cooldown then return 0 end
redis.call('HSET', KEYS[1], 'state', 'firing', 'alert_id', ARGV[2], 'fired_at', ARGV[1], 'alert', ARGV[3], 'pending:firing', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""
# KEYS[1]: state hash, KEYS[2]: its list of past firing periods. ARGV: alert_id, cooldown_until_ms,
# alert json, ttl_s, now_ms.
_RESOLVE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'firing' or redis.call('HGET', KEYS[1], 'alert_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'resolved', 'cooldown_until', ARGV[2], 'alert', ARGV[3], 'pending:resolved', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('RPUSH', KEYS[2], redis.call('HGET', KEYS[1], 'fired_at') .. '|' .. ARGV[5])
redis.call('LTRIM', KEYS[2], -MAX_PERIODS, -1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
""".replace("MAX_PERIODS", str(MAX_PERIODS))
# KEYS[1]: state hash. ARGV: pending field, the event json that was acked. Returns pending events left.
_SENT = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return redis.call('HEXISTS', KEYS[1], 'pending:firing') + redis.call('HEXISTS', KEYS[1], 'pending:resolved')
"""

Subject = tuple[str, str]


def member(subject: Subject) -> str:
    return f"{subject[0]}:{subject[1]}"


def subject_of(raw: bytes) -> Subject:
    kind, _, name = raw.decode().partition(":")
    return kind, name


class AlertStore:
    def __init__(self, client, layout: CounterLayout, ttl_s: int) -> None:
        self.client = client
        self.layout = layout
        self.ttl_s = ttl_s
        self.pending_key = f"{layout.prefix}:alerts:pending"
        self.index_key = f"{layout.prefix}:alerts:index"
        self._fire = client.register_script(_FIRE)
        self._resolve = client.register_script(_RESOLVE)
        self._sent = client.register_script(_SENT)

    def state_key(self, subject: Subject) -> str:
        return f"{self.layout.tag(*subject)}:alert"

    def periods_key(self, subject: Subject) -> str:
        return f"{self.layout.tag(*subject)}:alert:periods"

    def periods(self, subject: Subject) -> list[tuple[int, int | None]]:
        """(fired_ms, resolved_ms) of the subject's past firing periods, oldest first, then the current
        one (resolved_ms None) while it fires."""
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(self.periods_key(subject), 0, -1)
        pipe.hmget(self.state_key(subject), "state", "fired_at")
        past, (state, fired_at) = pipe.execute()
        found: list[tuple[int, int | None]] = [tuple(int(t) for t in raw.split(b"|")) for raw in past]
        if state == b"firing" and fired_at is not None:
            found.append((int(fired_at), None))
        return found

    def states(self, subjects: list[Subject]) -> dict[Subject, dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for subject in subjects:
            pipe.hmget(self.state_key(subject), "state", "alert_id", "fired_at")
        return {s: {k: v.decode() for k, v in zip(("state", "alert_id", "fired_at"), raw) if v is not None}
                for s, raw in zip(subjects, pipe.execute())}

    def _mark(self, subject: Subject, now_ms: int) -> None:
        """Before a transition: the pending marker and the index entry (both idempotent)."""
        pipe = self.client.pipeline(transaction=False)
        for key in (self.pending_key, self.index_key):
            pipe.zadd(key, {member(subject): now_ms})
            pipe.expire(key, self.ttl_s)
        pipe.zremrangebyscore(self.index_key, "-inf", now_ms - self.ttl_s * 1000)
        pipe.execute()

    def fire(self, subject: Subject, alert_id: str, now_ms: int, payload: bytes) -> bool:
        self._mark(subject, now_ms)
        return bool(self._fire(keys=[self.state_key(subject)], args=[now_ms, alert_id, payload, self.ttl_s]))

    def resolve(self, subject: Subject, alert_id: str, cooldown_until_ms: int, now_ms: int, payload: bytes) -> bool:
        self._mark(subject, now_ms)
        return bool(self._resolve(keys=[self.state_key(subject), self.periods_key(subject)],
                                  args=[alert_id, cooldown_until_ms, payload, self.ttl_s, now_ms]))

    def pending(self, limit: int = 1000) -> list[tuple[Subject, str, bytes]]:
        """Events not yet acknowledged, oldest marker first: (subject, field, event json)."""
        subjects = [subject_of(m) for m in self.client.zrange(self.pending_key, 0, limit - 1)]
        pipe = self.client.pipeline(transaction=False)
        for subject in subjects:
            pipe.hmget(self.state_key(subject), *PENDING_FIELDS)
        found, settled = [], []
        for subject, values in zip(subjects, pipe.execute()):
            events = [(subject, f, v) for f, v in zip(PENDING_FIELDS, values) if v is not None]
            found += events
            if not events:
                settled.append(member(subject))
        if settled:  # a marker whose transition never happened or was already sent
            self.client.zrem(self.pending_key, *settled)
        return found

    def sent(self, subject: Subject, field: str, payload: bytes) -> None:
        """The broker acked this event: drop its pending record (only if it is still that event)."""
        if self._sent(keys=[self.state_key(subject)], args=[field, payload]) == 0:
            self.client.zrem(self.pending_key, member(subject))

    def firing(self, limit: int = 10_000) -> list[Subject]:
        """Subjects whose alert is firing now (from the index of recent transitions)."""
        subjects = [subject_of(m) for m in self.client.zrevrange(self.index_key, 0, limit - 1)]
        return [s for s, state in self.states(subjects).items() if state.get("state") == "firing"]

    def read(self, state: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Latest alert event per subject, newest first; optionally only firing or resolved."""
        subjects = [subject_of(m) for m in self.client.zrevrange(self.index_key, 0, limit - 1)]
        pipe = self.client.pipeline(transaction=False)
        for subject in subjects:
            pipe.hget(self.state_key(subject), "alert")
        found = [orjson.loads(raw) for raw in pipe.execute() if raw is not None]
        return sorted((a for a in found if state is None or a["state"] == state),
                      key=lambda a: a["resolved_at"] or a["fired_at"], reverse=True)

