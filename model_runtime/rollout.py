"""The model rollout state of a consumer group, in Redis: one decision for every process.

One hash per consumer group and route, `P:rollout:{GROUP:ROUTE}` (P = --redis-prefix):

    serving            the version in service: every process of the group serves it, a starting one too
    last_good          the version served before it: the fallback where `serving` can't be loaded
    candidate          the version under canary ("" when none) and its policy: share, min_events, min_agreement
                       (the first proposer's settings, so the group decides by one rule)
    compared, agreed   the canary's tally, summed over every process's shadowed events (kept after the decision)
    epoch              the server's clock (ms) at the first start, +1 on every change of serving or candidate:
                       each process compares it every batch
    decision           the last transition in words; changed_ms its time by the Redis server's clock
    served:V           V was in service once: following `latest` back to V is a rollback (no canary)
    refused:V          V is refused for the whole group, with the reason: no process serves it

Every transition is one Lua script on that one key, so it happens once however processes race.
Consumer processes write `init` (a first start with no state), `follow` (what `latest` names),
`offer` (a version they loaded and checked), `tally` (their shadowed events; the call that
reaches min_events decides) and `refuse` (a version that failed its checks); operators write
`refuse` through `python -m trainer rollout --refuse`, and may delete the key (`--reset`).
Nothing else writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Shared by the scripts: clear the canary; record a transition (epoch, words, server time);
# make V the version in service.
_LIB = """
local key = KEYS[1]
local function clear_candidate()  -- the last canary's tally stays, for whoever reads the decision
  redis.call('HSET', key, 'candidate', '')
end
local function transition(words)
  redis.call('HINCRBY', key, 'epoch', 1)
  local now = redis.call('TIME')
  redis.call('HSET', key, 'decision', words, 'changed_ms', now[1] * 1000 + math.floor(now[2] / 1000))
end
local function serve(version, words)
  local serving = redis.call('HGET', key, 'serving')
  if serving and serving ~= version then redis.call('HSET', key, 'last_good', serving) end
  redis.call('HSET', key, 'serving', version, 'served:' .. version, 1)
  clear_candidate()
  transition(words)
end
local function refused(version) return redis.call('HEXISTS', key, 'refused:' .. version) == 1 end
"""

_INIT = _LIB + """
if redis.call('HEXISTS', key, 'serving') == 1 then return {'exists', redis.call('HGETALL', key)} end
-- The epoch starts at the server's clock, so a state made again after a reset never repeats an epoch a process saw.
local now = redis.call('TIME')
redis.call('HSET', key, 'epoch', now[1] * 1000 + math.floor(now[2] / 1000))
serve(ARGV[1], 'first start: ' .. ARGV[1] .. ' in service')
return {'init', redis.call('HGETALL', key)}
"""

_FOLLOW = _LIB + """
local version = ARGV[1]
local serving = redis.call('HGET', key, 'serving')
if not serving then return {'no_state', {}} end
local candidate = redis.call('HGET', key, 'candidate') or ''
local action = 'none'
if refused(version) then
  action = 'refused'
elseif version == serving then
  if candidate ~= '' then
    clear_candidate()
    transition('canary of ' .. candidate .. ' cancelled: latest names ' .. version .. ', the version in service')
    action = 'cancelled'
  end
elseif version ~= candidate then
  if redis.call('HEXISTS', key, 'served:' .. version) == 1 then
    serve(version, 'rollback: latest names ' .. version .. ', served before')
    action = 'rollback'
  else
    action = 'check'
  end
end
return {action, redis.call('HGETALL', key)}
"""

_OFFER = _LIB + """
local version = ARGV[1]
local serving = redis.call('HGET', key, 'serving')
local candidate = redis.call('HGET', key, 'candidate') or ''
if refused(version) then return {'refused', redis.call('HGETALL', key)} end
if version == serving or version == candidate then return {'none', redis.call('HGETALL', key)} end
if ARGV[2] == '' then
  serve(version, version .. ' checked; in service (no canary)')
  return {'promoted', redis.call('HGETALL', key)}
end
redis.call('HSET', key, 'candidate', version, 'share', ARGV[2], 'min_events', ARGV[3], 'min_agreement', ARGV[4],
           'compared', 0, 'agreed', 0)
transition('canary of ' .. version .. ' started')
return {'canary', redis.call('HGETALL', key)}
"""

_TALLY = _LIB + """
local version = ARGV[1]
if (redis.call('HGET', key, 'candidate') or '') ~= version then return {'stale', redis.call('HGETALL', key)} end
local compared = redis.call('HINCRBY', key, 'compared', ARGV[2])
local agreed = redis.call('HINCRBY', key, 'agreed', ARGV[3])
if compared < tonumber(redis.call('HGET', key, 'min_events')) then return {'counting', redis.call('HGETALL', key)} end
local needed = tonumber(redis.call('HGET', key, 'min_agreement'))
local words = string.format('canary of %s agreed with the version in service on %d of %d events', version, agreed, compared)
if agreed >= needed * compared then
  serve(version, words .. ': promoted')
  return {'promoted', redis.call('HGETALL', key)}
end
redis.call('HSET', key, 'refused:' .. version, words .. string.format(', below the %s needed', needed))
clear_candidate()
transition(words .. ': refused')
return {'refused', redis.call('HGETALL', key)}
"""

_REFUSE = _LIB + """
local version, reason = ARGV[1], ARGV[2]
local serving = redis.call('HGET', key, 'serving')
if not serving then return {'no_state', {}} end
if version == serving then
  local fallback = redis.call('HGET', key, 'last_good') or ''
  if fallback == '' or fallback == version or refused(fallback) then return {'no_fallback', redis.call('HGETALL', key)} end
  redis.call('HSET', key, 'refused:' .. version, reason)
  redis.call('HSET', key, 'serving', fallback, 'last_good', '')
  clear_candidate()
  transition(version .. ' refused (' .. reason .. '); back to ' .. fallback)
  return {'fell_back', redis.call('HGETALL', key)}
end
redis.call('HSET', key, 'refused:' .. version, reason)
if (redis.call('HGET', key, 'candidate') or '') == version then
  clear_candidate()
  transition('canary of ' .. version .. ' refused: ' .. reason)
end
return {'refused', redis.call('HGETALL', key)}
"""


@dataclass(frozen=True)
class CanaryRule:
    """The group's canary: shadow `share` of each batch; decide once `min_events` are compared."""

    share: float
    min_events: int
    min_agreement: float

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1 or self.min_events < 1 or not 0 <= self.min_agreement <= 1:
            raise ValueError(f"canary needs 0 < --canary-share <= 1, --canary-min-events >= 1 and 0 <= --canary-min-agreement <= 1, "
                             f"got {self.share}, {self.min_events}, {self.min_agreement}")


@dataclass(frozen=True)
class RolloutState:
    serving: str
    last_good: str = ""
    candidate: str = ""
    canary: CanaryRule | None = None
    compared: int = 0
    agreed: int = 0
    epoch: int = 0
    decision: str = ""
    changed_ms: int = 0
    served: tuple[str, ...] = ()
    refused: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> RolloutState:
        canary = None
        if fields.get("candidate"):
            canary = CanaryRule(float(fields["share"]), int(fields["min_events"]), float(fields["min_agreement"]))
        return cls(serving=fields["serving"], last_good=fields.get("last_good", ""), candidate=fields.get("candidate", ""),
                   canary=canary, compared=int(fields.get("compared", 0)), agreed=int(fields.get("agreed", 0)),
                   epoch=int(fields.get("epoch", 0)), decision=fields.get("decision", ""),
                   changed_ms=int(fields.get("changed_ms", 0)),
                   served=tuple(sorted(k.removeprefix("served:") for k in fields if k.startswith("served:"))),
                   refused={k.removeprefix("refused:"): v for k, v in sorted(fields.items()) if k.startswith("refused:")})

    def as_dict(self) -> dict[str, Any]:
        canary = None if self.canary is None else {"share": self.canary.share, "min_events": self.canary.min_events,
                                                    "min_agreement": self.canary.min_agreement}
        return {"serving": self.serving, "last_good": self.last_good, "candidate": self.candidate, "canary": canary,
                "tally": {"compared": self.compared, "agreed": self.agreed}, "epoch": self.epoch, "decision": self.decision,
                "changed_ms": self.changed_ms, "served": list(self.served), "refused": self.refused}


def _decode(reply: list) -> dict[str, str]:
    flat = [item.decode() if isinstance(item, bytes) else str(item) for item in reply]
    return dict(zip(flat[::2], flat[1::2]))


class RolloutStore:
    """One group's rollout state for one route. Each method is one round trip; Redis errors propagate."""

    def __init__(self, client, prefix: str, group: str, route: str) -> None:
        self.client = client
        self.key = f"{prefix}:rollout:{{{group}:{route}}}"
        self.route = route
        self._scripts = {name: client.register_script(source) for name, source in
                         (("init", _INIT), ("follow", _FOLLOW), ("offer", _OFFER), ("tally", _TALLY), ("refuse", _REFUSE))}

    def read(self) -> RolloutState | None:
        fields = _decode(sum(([k, v] for k, v in self.client.hgetall(self.key).items()), []))
        return RolloutState.from_hash(fields) if fields.get("serving") else None

    def reset(self) -> None:
        """Forget the group's state (an operator's `trainer rollout --reset`)."""
        self.client.delete(self.key)

    def epoch(self) -> int:
        value = self.client.hget(self.key, "epoch")
        return int(value) if value is not None else 0

    def _run(self, name: str, *args) -> tuple[str, RolloutState | None]:
        action, fields = self._scripts[name](keys=[self.key], args=list(args))
        fields = _decode(fields)
        return (action.decode() if isinstance(action, bytes) else action), (RolloutState.from_hash(fields) if fields.get("serving") else None)

    def init(self, version: str) -> tuple[str, RolloutState]:
        """A first start: `version` (checked) goes into service, unless a state exists already."""
        return self._run("init", version)

    def follow(self, version: str) -> tuple[str, RolloutState | None]:
        """`latest` names `version`: 'cancelled' (it is the version in service, and a canary of another
        was running), 'rollback' (served before: in service again), 'check' (new: check it, then
        offer it), or 'none'/'refused'; 'no_state' when the group has none."""
        return self._run("follow", version)

    def offer(self, version: str, canary: CanaryRule | None) -> tuple[str, RolloutState]:
        """`version` passed this process's checks: a canary of it starts, or without one it goes into service."""
        if canary is None:
            return self._run("offer", version, "", "", "")
        return self._run("offer", version, repr(canary.share), canary.min_events, repr(canary.min_agreement))

    def tally(self, version: str, compared: int, agreed: int) -> tuple[str, RolloutState]:
        """Add shadowed events of `version`'s canary: 'counting', 'promoted', 'refused', or 'stale'
        when the group runs no canary of it (anymore)."""
        return self._run("tally", version, compared, agreed)

    def refuse(self, version: str, reason: str) -> tuple[str, RolloutState | None]:
        """Refuse `version` for the group: a canary of it stops; the version in service falls back to
        last_good ('fell_back'), or nothing changes when there is none ('no_fallback')."""
        return self._run("refuse", version, reason)
