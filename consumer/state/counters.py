"""Exact rolling sentiment counters in Redis, per normalized query and per product.

Key layout (P = --redis-prefix, T = hash tag of one subject, so every key of a
subject lives in one Redis Cluster slot):

    P:{q:<h>}:f             fence hash: "<topic>|<partition>" -> highest applied offset; "name" -> the query
    P:{q:<h>}:m:<minute>    fine bucket hash: label -> count (event-time minute)
    P:{q:<h>}:h:<hour>      coarse bucket hash: label -> count (event-time hour)
    (the same with {p:<h>} for products)
    P:rank:q:<label>:<hour> sorted set: query -> events with that label in that hour, trimmed to
                            the --rank-size highest (products: P:rank:p:...), for top lists

<h> is a hash of the normalized query / product id, so any Unicode text (braces
included) makes a safe, bounded key. A batch's increments for one subject and its
fence are applied by one Lua script, which skips events at or below the fence: a
replayed range is never counted twice. All subjects of a batch go in one
pipelined round trip per Redis master (routing.py), optionally followed by WAIT.
Every key expires: nothing this module writes lives forever.

The rankings are maintained from what the scripts report as newly applied, so a
replayed range does not inflate them; a crash between the two round trips can lose
a batch's ranking increments. They only choose which subjects a top list reads:
the shares shown come from the exact buckets.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable

import orjson
import redis

from .routing import Replication, ScriptRunner
SUBJECT_KINDS = {"query": "q", "product": "p"}
COARSE_SECONDS = 3600
PROB_PREFIX = "p:"  # bucket field of a label's probability sum, in micro-units
MICRO = 1_000_000

_APPLY = """
-- KEYS[1]: fence hash; KEYS[2..]: bucket hashes
-- ARGV[1]: subject name; ARGV[2]: fence ttl (s); ARGV[3]: P, the number of probability fields;
-- ARGV[4 .. 3+P]: their names ("p:<label>"); ARGV[4+P .. 3+P+K]: expire-at (epoch s) per bucket key;
-- then per event: "<topic>|<partition>", offset, label, bucket index, bucket index (1-based into
-- buckets, 0 = none), and P fixed-point probabilities (micro-units)
local fence = KEYS[1]
local nbuckets = #KEYS - 1
local nprobs = tonumber(ARGV[3])
local first = 4 + nprobs + nbuckets
local stride = 5 + nprobs
local floor = {}
local top = {}
local touched = {}
local applied = 0
local ranked = {}
for i = first, #ARGV, stride do
  local tp = ARGV[i]
  local offset = tonumber(ARGV[i + 1])
  if floor[tp] == nil then
    floor[tp] = tonumber(redis.call('HGET', fence, tp) or '-1')
  end
  if offset > floor[tp] then
    applied = applied + 1
    for j = 3, 4 do
      local k = tonumber(ARGV[i + j])
      if k > 0 then
        redis.call('HINCRBY', KEYS[k + 1], ARGV[i + 2], 1)
        for p = 1, nprobs do
          local micro = tonumber(ARGV[i + 4 + p])
          if micro > 0 then redis.call('HINCRBY', KEYS[k + 1], ARGV[3 + p], micro) end
        end
        touched[k] = true
      end
    end
    if top[tp] == nil or offset > top[tp] then top[tp] = offset end
    local r = ARGV[i + 4] .. '|' .. ARGV[i + 2]
    ranked[r] = (ranked[r] or 0) + 1
  end
end
for tp, offset in pairs(top) do redis.call('HSET', fence, tp, offset) end
redis.call('HSET', fence, 'name', ARGV[1])
redis.call('EXPIRE', fence, ARGV[2])
for k, _ in pairs(touched) do redis.call('EXPIREAT', KEYS[k + 1], ARGV[3 + nprobs + k]) end
-- newly applied events per "<coarse bucket index>|<label>", for the rankings
local out = {applied}
for r, n in pairs(ranked) do out[#out + 1] = r; out[#out + 1] = n end
return out
"""


@dataclass(frozen=True)
class Increment:
    """One labelled event's contribution to one subject's counters."""

    kind: str  # "query" | "product"
    name: str
    topic: str
    partition: int
    offset: int
    ts_ms: int
    label: str
    # Calibrated probability per label in micro-units (fixed point keeps the sums exact integers).
    probs: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class CounterLayout:
    prefix: str
    bucket_seconds: int = 60
    windows: tuple[int, ...] = (300, 3600, 86400)
    rank_size: int = 1000

    @property
    def longest(self) -> int:
        return max(self.windows)

    @property
    def fine_horizon(self) -> int:
        """Windows up to this length are read from fine buckets, longer ones from hourly buckets."""
        fine = [w for w in self.windows if w <= COARSE_SECONDS]
        return max(fine) if fine else 0

    def tag(self, kind: str, name: str) -> str:
        digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()
        return f"{self.prefix}:{{{SUBJECT_KINDS[kind]}:{digest}}}"

    def fence_key(self, kind: str, name: str) -> str:
        return f"{self.tag(kind, name)}:f"

    def bucket_key(self, kind: str, name: str, coarse: bool, start_s: int) -> str:
        return f"{self.tag(kind, name)}:{'h' if coarse else 'm'}:{start_s}"

    def rank_key(self, kind: str, label: str, hour_start_s: int) -> str:
        return f"{self.prefix}:rank:{SUBJECT_KINDS[kind]}:{label}:{hour_start_s}"

    def buckets(self, window_s: int, now_ms: int) -> tuple[bool, int, list[int]]:
        """(coarse, bucket seconds, bucket starts newest first) that sum the window ending now: fine
        buckets up to the fine horizon, whole event-time hours beyond (the current one included)."""
        coarse = window_s > self.fine_horizon
        size = COARSE_SECONDS if coarse else self.bucket_seconds
        newest = now_ms // 1000 // size * size
        return coarse, size, [newest - i * size for i in range(max(1, -(-window_s // size)))]

    def hours(self, window_s: int, now_ms: int) -> list[int]:
        """Starts of the event-time hours overlapping the window ending now, newest first."""
        newest = now_ms // 1000 // COARSE_SECONDS * COARSE_SECONDS
        return [newest - i * COARSE_SECONDS for i in range(max(1, -(-window_s // COARSE_SECONDS)) + 1)]

    def countable(self, ts_ms: int, now_ms: int) -> str | None:
        """None when the event is counted, else why not ("too_old" | "future")."""
        if ts_ms < now_ms - self.longest * 1000:
            return "too_old"
        if ts_ms > now_ms + self.bucket_seconds * 1000:
            return "future"
        return None


class CounterStore:
    def __init__(self, client: redis.Redis, layout: CounterLayout, replication: Replication = Replication()) -> None:
        self.client = client
        self.layout = layout
        self._apply = client.register_script(_APPLY)
        self._scripts = ScriptRunner(client, replication)

    def apply(self, increments: Iterable[Increment], now_ms: int) -> int:
        """Apply increments in one pipelined round trip per master; returns how many events were newly counted.

        Raises one of routing.TRANSIENT when Redis is unreachable, failing over or short of
        replicas: the caller retries the same increments, which the fences make safe.
        """
        layout = self.layout
        by_subject: dict[tuple[str, str], list[Increment]] = defaultdict(list)
        for inc in increments:
            by_subject[(inc.kind, inc.name)].append(inc)
        if not by_subject:
            return 0
        fence_ttl = layout.longest + COARSE_SECONDS
        calls = []
        ranked_subjects: list[tuple[str, str, list[int]]] = []  # (kind, name, bucket start per bucket index)
        for (kind, name), items in by_subject.items():
            buckets: dict[str, int] = {}
            expire_at: list[int] = []
            starts: list[int] = []

            def bucket_index(coarse: bool, ts_ms: int) -> int:
                size = COARSE_SECONDS if coarse else layout.bucket_seconds
                start = ts_ms // 1000 // size * size
                key = layout.bucket_key(kind, name, coarse, start)
                if key not in buckets:
                    buckets[key] = len(buckets) + 1
                    starts.append(start)
                    retention = layout.longest if coarse else layout.fine_horizon
                    expire_at.append(start + size + retention + size)
                return buckets[key]

            prob_fields = sorted({label for inc in items for label, _ in inc.probs})
            args: list = []
            for inc in sorted(items, key=lambda i: (i.topic, i.partition, i.offset)):
                fine = layout.fine_horizon and inc.ts_ms >= now_ms - (layout.fine_horizon + layout.bucket_seconds) * 1000
                probs = dict(inc.probs)
                args += [f"{inc.topic}|{inc.partition}", inc.offset, inc.label,
                         bucket_index(False, inc.ts_ms) if fine else 0, bucket_index(True, inc.ts_ms),
                         *(probs.get(label, 0) for label in prob_fields)]
            ranked_subjects.append((kind, name, starts))
            header = [name, fence_ttl, len(prob_fields), *(PROB_PREFIX + label for label in prob_fields)]
            calls.append(([layout.fence_key(kind, name), *buckets], [*header, *expire_at, *args]))
        replies = self._scripts.run(self._apply, calls)
        self._rank(ranked_subjects, replies)
        return sum(reply[0] for reply in replies)

    def _rank(self, subjects: list[tuple[str, str, list[int]]], replies: list[list]) -> None:
        """Add the newly applied events to the per-hour rankings, then trim each to rank_size."""
        layout = self.layout
        pipe = self.client.pipeline(transaction=False)
        keys: dict[str, int] = {}
        for (kind, name, hours), reply in zip(subjects, replies):
            for i in range(1, len(reply), 2):
                index, label = reply[i].decode().split("|", 1)
                hour = hours[int(index) - 1]
                key = layout.rank_key(kind, label, hour)
                pipe.zincrby(key, int(reply[i + 1]), name)
                keys[key] = hour
        for key, hour in keys.items():
            pipe.zremrangebyrank(key, 0, -(layout.rank_size + 1))
            pipe.expireat(key, hour + COARSE_SECONDS + layout.longest + COARSE_SECONDS)
        if keys:
            pipe.execute()

    def estimation_key(self) -> str:
        return f"{self.layout.prefix}:estimation"

    def publish_estimation(self, parameters: dict | None, model_version: str) -> None:
        """What the read side needs to correct shares (the manifest's validation rates), for as long as
        the counters it applies to live. None removes them: the read side then reports pcc, not another
        model's correction."""
        if not parameters:
            self.client.delete(self.estimation_key())
            return
        payload = orjson.dumps({**parameters, "model_version": model_version})
        self.client.set(self.estimation_key(), payload, ex=self.layout.longest + COARSE_SECONDS)

    def estimation(self) -> dict | None:
        raw = self.client.get(self.estimation_key())
        return orjson.loads(raw) if raw else None

    def ranked_subjects(self, kind: str, label: str, window_s: int, now_ms: int, count: int) -> set[str]:
        """The subjects with the most events of `label` in each hour overlapping the window: at most
        count per hour, so a top list reads O(count) subjects however many are active."""
        pipe = self.client.pipeline(transaction=False)
        for hour in self.layout.hours(window_s, now_ms):  # one read per hour: the keys live in different cluster slots
            pipe.zrevrange(self.layout.rank_key(kind, label, hour), 0, count - 1)
        return {member.decode() for members in pipe.execute() for member in members}

    def window_counts(self, kind: str, name: str, window_s: int, now_ms: int) -> Counter:
        """Counts per label over the window ending now, by summing buckets."""
        return self.window_stats_many([(kind, name, window_s)], now_ms)[0].counts

    def window_stats_many(self, requests: list[tuple[str, str, int]], now_ms: int) -> list["WindowStats"]:
        """Counts and probability sums for several (kind, name, window_s) in one pipelined round trip.

        Windows up to the fine horizon use fine buckets (resolution --bucket-seconds);
        longer windows sum whole event-time hours, the current one included.
        """
        if not requests:
            return []
        layout = self.layout
        pipe = self.client.pipeline(transaction=False)
        spans = []
        for kind, name, window_s in requests:
            coarse, _, starts = layout.buckets(window_s, now_ms)
            for start in starts:
                pipe.hgetall(layout.bucket_key(kind, name, coarse, start))
            spans.append(len(starts))
        buckets = iter(pipe.execute())
        out = []
        for count in spans:
            stats = WindowStats(Counter(), {})
            for _ in range(count):
                stats.add_bucket(next(buckets))
            out.append(stats)
        return out

    def bucket_series(self, kind: str, name: str, window_s: int, now_ms: int) -> tuple[int, list[tuple[int, "WindowStats"]]]:
        """(bucket seconds, [(bucket start s, stats)] oldest first): the buckets window_stats_many sums."""
        coarse, size, starts = self.layout.buckets(window_s, now_ms)
        starts.reverse()
        pipe = self.client.pipeline(transaction=False)
        for start in starts:
            pipe.hgetall(self.layout.bucket_key(kind, name, coarse, start))
        series = []
        for start, raw in zip(starts, pipe.execute()):
            stats = WindowStats(Counter(), {})
            stats.add_bucket(raw)
            series.append((start, stats))
        return size, series


@dataclass
class WindowStats:
    """A window's argmax counts per label and sums of calibrated probability per label."""

    counts: Counter
    prob_sums: dict[str, float]

    def add_bucket(self, raw: dict[bytes, bytes]) -> None:
        """Add one bucket hash as Redis returns it (label counts and "p:<label>" micro-unit sums)."""
        for field, value in raw.items():
            field = field.decode()
            if field.startswith(PROB_PREFIX):
                label = field[len(PROB_PREFIX):]
                self.prob_sums[label] = self.prob_sums.get(label, 0.0) + int(value) / MICRO
            else:
                self.counts[field] += int(value)

    def minus(self, other: "WindowStats") -> "WindowStats":
        counts = Counter({k: max(0, v - other.counts.get(k, 0)) for k, v in self.counts.items()})
        sums = {k: max(0.0, v - other.prob_sums.get(k, 0.0)) for k, v in self.prob_sums.items()}
        return WindowStats(counts, sums)
