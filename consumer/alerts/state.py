"""Alert state in Redis, with an outbox so that no alert is lost.

Per subject, one hash in the subject's own hash-tagged slot (cluster-safe):

    P:{q:<h>}:alert   state, alert_id, fired_at, cooldown_until, alert (latest event JSON),
                      pending:firing / pending:resolved (events not yet acknowledged by Kafka),
                      marks_closed (the highest pending-marker score a scan has closed; see below)
    P:{q:<h>}:alert:periods  list of "<fired_ms>|<resolved_ms>", the last MAX_PERIODS resolved spikes

A transition (fire, resolve) and its pending record are written by one script, so a
state change can never exist without the event that announces it. The event is
(re)sent until the broker acks it, then its pending field is removed (same alert_id
on every resend). Two global sorted sets make pending and recent alerts findable:

    P:alerts:pending  members "<kind>:<name>" that may have pending events (written *before*
                      the transition, so a crash leaves a marker, never an unmarked pending event),
                      scored by the server's clock in µs at the mark, always above the member's last mark
    P:alerts:index    members "<kind>:<name>" by last transition time, for the read API

The marker set and a subject's state live in different cluster slots, so no script can
remove a marker and check the state at once. Only the recovery scan (`pending`) removes
markers, in three single-slot steps:
  1. read the markers with their scores;
  2. on the state hash: if no event is pending, close the marks up to the score read
     ("marks_closed"), so that a transition marked then but still in flight is refused
     when it lands (the detector evaluates the subject again and marks anew);
  3. on the marker set: remove the marker only if its score is still the one read, so a
     subject marked again since step 1 keeps its marker.

Every key expires: the state hashes `ttl_s` after their last transition, the index
entries after the same time, the sets themselves when idle.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..state.counters import CounterLayout
from ..state.routing import ScriptRunner

PENDING_FIELDS = ("pending:firing", "pending:resolved")
MAX_PERIODS = 50  # past firing periods kept per subject, for the dashboard's chart

# KEYS[1]: state hash. ARGV: now_ms, alert_id, alert json, ttl_s, mark. Fires unless firing, cooling down
# or its mark was closed by a scan.
_FIRE = """
if tonumber(redis.call('HGET', KEYS[1], 'marks_closed') or '-1') >= tonumber(ARGV[5]) then return 0 end
local state = redis.call('HGET', KEYS[1], 'state')
local cooldown = tonumber(redis.call('HGET', KEYS[1], 'cooldown_until') or '0')
if state == 'firing' or tonumber(ARGV[1]) < cooldown then return 0 end
redis.call('HSET', KEYS[1], 'state', 'firing', 'alert_id', ARGV[2], 'fired_at', ARGV[1], 'alert', ARGV[3], 'pending:firing', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""
# KEYS[1]: state hash, KEYS[2]: its list of past firing periods. ARGV: alert_id, cooldown_until_ms,
# alert json, ttl_s, now_ms, mark.
_RESOLVE = """
if tonumber(redis.call('HGET', KEYS[1], 'marks_closed') or '-1') >= tonumber(ARGV[6]) then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'firing' or redis.call('HGET', KEYS[1], 'alert_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'resolved', 'cooldown_until', ARGV[2], 'alert', ARGV[3], 'pending:resolved', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('RPUSH', KEYS[2], redis.call('HGET', KEYS[1], 'fired_at') .. '|' .. ARGV[5])
redis.call('LTRIM', KEYS[2], -MAX_PERIODS, -1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
""".replace("MAX_PERIODS", str(MAX_PERIODS))
# KEYS[1]: state hash. ARGV: pending field, the event json that was acked.
_SENT = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
"""
# KEYS[1]: the pending markers. ARGV: member, ttl_s. Returns the mark's score: the server's clock in µs (one
# clock for every process, and a mark after a scan closed the last one scores above it), or one above the
# member's last mark if that is not below it.
_MARK = """
local now = redis.call('TIME')
local score = tonumber(now[1]) * 1000000 + tonumber(now[2])
local last = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '-1')
if last >= score then score = last + 1 end
redis.call('ZADD', KEYS[1], score, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return score
"""
# KEYS[1]: state hash. ARGV: the marker's score as read, ttl_s. Returns the pending events; when there are
# none, first closes the marks up to that score (a hash created for that expires like the state).
_SETTLE = """
local events = redis.call('HMGET', KEYS[1], 'pending:firing', 'pending:resolved')
if events[1] or events[2] then return events end
if tonumber(redis.call('HGET', KEYS[1], 'marks_closed') or '-1') < tonumber(ARGV[1]) then
  local created = redis.call('EXISTS', KEYS[1]) == 0
  redis.call('HSET', KEYS[1], 'marks_closed', ARGV[1])
  if created then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
end
return events
"""
# KEYS[1]: the pending markers. ARGV: member, score, member, score, ...: each removed only if not marked since.
_UNMARK = """
for i = 1, #ARGV, 2 do
  if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i]) or '-1') == tonumber(ARGV[i + 1]) then redis.call('ZREM', KEYS[1], ARGV[i]) end
end
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
        self._mark_script = client.register_script(_MARK)
        self._settle = client.register_script(_SETTLE)
        self._unmark = client.register_script(_UNMARK)
        self._scripts = ScriptRunner(client)

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

    def _mark(self, subject: Subject, now_ms: int) -> int:
        """Before a transition: the pending marker and the index entry. Returns the mark, which the
        transition hands its script (a scan may have closed it since)."""
        mark = self._mark_script(keys=[self.pending_key], args=[member(subject), self.ttl_s])
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.index_key, {member(subject): now_ms})
        pipe.expire(self.index_key, self.ttl_s)
        pipe.zremrangebyscore(self.index_key, "-inf", now_ms - self.ttl_s * 1000)
        pipe.execute()
        return mark

    def fire(self, subject: Subject, alert_id: str, now_ms: int, payload: bytes) -> bool:
        mark = self._mark(subject, now_ms)
        return bool(self._fire(keys=[self.state_key(subject)], args=[now_ms, alert_id, payload, self.ttl_s, mark]))

    def resolve(self, subject: Subject, alert_id: str, cooldown_until_ms: int, now_ms: int, payload: bytes) -> bool:
        mark = self._mark(subject, now_ms)
        return bool(self._resolve(keys=[self.state_key(subject), self.periods_key(subject)],
                                  args=[alert_id, cooldown_until_ms, payload, self.ttl_s, now_ms, mark]))

    def pending(self, limit: int = 1000) -> list[tuple[Subject, str, bytes]]:
        """Events not yet acknowledged, oldest marker first: (subject, field, event json). Removes the
        markers of subjects with none (their transition was sent, refused, or never ran)."""
        marked = [(raw, int(score)) for raw, score in self.client.zrange(self.pending_key, 0, limit - 1, withscores=True)]
        if not marked:
            return []
        replies = self._scripts.run(self._settle, [([self.state_key(subject_of(raw))], [score, self.ttl_s]) for raw, score in marked])
        found, settled = [], []
        for (raw, score), values in zip(marked, replies):
            subject = subject_of(raw)
            events = [(subject, f, v) for f, v in zip(PENDING_FIELDS, values) if v is not None]
            found += events
            if not events:
                settled += [raw, score]
        if settled:
            self._unmark(keys=[self.pending_key], args=settled)
        return found

    def sent(self, subject: Subject, field: str, payload: bytes) -> None:
        """The broker acked this event: drop its pending record (only if it is still that event). The
        marker stays for the next scan, which alone can remove it safely."""
        self._sent(keys=[self.state_key(subject)], args=[field, payload])

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

