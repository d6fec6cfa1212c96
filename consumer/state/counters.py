"""Exact rolling sentiment counters in Redis, per normalized query and per product, per model version.

Key layout (P = --redis-prefix, T = hash tag of one subject, so every key of a
subject lives in one Redis Cluster slot):

    P:{q:<h>}:f             fence hash: "<topic>|<partition>" -> highest applied offset; "name" -> the query
    P:{q:<h>}:m:<minute>    fine bucket hash (event-time minute), per model version M ("<route>:<version>"):
                              "M|<label>"       events the decision rule gave that label
                              "M|p:<label>"     sum of calibrated P(label), micro-units
                              "M|s:negative"    sum of P(negative)², micro-units (the per-event variance)
    P:{q:<h>}:h:<hour>      coarse bucket hash, the same fields (event-time hour)
    (the same with {p:<h>} for products)
    P:{rank:q:<label>}:<hour>  sorted set: query -> events with that label in that hour, trimmed to
                            the --rank-size highest (products: P:{rank:p:<label>}:...), for top lists; every
                            hour of one kind and label in one slot, so a window's hours are summed in one script
    P:{r:<h>}:f, P:{r:<h>}:s  one model version's stream rates (<h> hashes the version): fence, and
                            sums per star-derived true label T: "T|n", "T|p:<label>", "T|s:negative"

Counts and sums are kept per model version because they are only comparable within
one: a window that spans a swap is estimated per version, each with its own rates
(model_runtime/stats). Fields without "M|" were written before versions were kept.

<h> is a hash of the normalized query / product id, so any Unicode text (braces
included) makes a safe, bounded key. A batch's increments for one subject and its
fence are applied by one Lua script, which skips events at or below the fence: a
replayed range is never counted twice. The rated reviews of a batch go through the
same script into their version's rate sums, behind a fence of their own. All of a
batch's scripts go in one pipelined round trip per Redis master (routing.py),
optionally followed by WAIT. Every key expires: nothing this module writes lives forever.

The rankings hold, per hour and label, each subject's count in its hourly bucket as the
script reports it after applying (all model versions together), written with ZADD GT in a
second round trip: a replay rewrites the same count, and a retry or a replay after a crash
between the two round trips restores what the lost round trip would have written. They
only choose which subjects a top list reads: the shares shown come from the exact buckets.

Reads sum a window's buckets in Redis (one script per subject, in its slot): a reply per
subject instead of one per bucket, so a top list over hundreds of subjects parses hundreds
of small replies, not tens of thousands of hashes.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import orjson
import redis

from model_runtime.stats.rates import NEGATIVE
from model_runtime.stats.shares import Tally

from .routing import Replication, ScriptRunner

SUBJECT_KINDS = {"query": "q", "product": "p"}
COARSE_SECONDS = 3600
RATES_TTL_S = 30 * 86400  # stream rates outlive any window: a version keeps its rates while it serves
MICRO = 1_000_000
SQUARES_FIELD = f"s:{NEGATIVE}"

_APPLY = """
-- KEYS[1]: fence hash; KEYS[2..]: bucket hashes
-- ARGV[1]: subject name; ARGV[2]: fence ttl (s); ARGV[3]: F, the number of summed fields;
-- ARGV[4 .. 3+F]: their names ("p:<label>", "s:negative"); ARGV[4+F .. 3+F+K]: expire-at (epoch s) per bucket key;
-- then per event: "<topic>|<partition>", offset, field prefix (the model version, "<model>|"), label,
-- fine bucket index, coarse bucket index (1-based into buckets, 0 = none), and F fixed-point values (micro-units)
local fence = KEYS[1]
local nbuckets = #KEYS - 1
local nsums = tonumber(ARGV[3])
local first = 4 + nsums + nbuckets
local stride = 6 + nsums
local floor = {}
local top = {}
local touched = {}
local applied = 0
local ranked = {}  -- coarse bucket index -> set of the batch's labels in it
for i = first, #ARGV, stride do
  local tp = ARGV[i]
  local offset = tonumber(ARGV[i + 1])
  if floor[tp] == nil then
    floor[tp] = tonumber(redis.call('HGET', fence, tp) or '-1')
  end
  if offset > floor[tp] then
    applied = applied + 1
    local prefix = ARGV[i + 2]
    for j = 4, 5 do
      local k = tonumber(ARGV[i + j])
      if k > 0 then
        redis.call('HINCRBY', KEYS[k + 1], prefix .. ARGV[i + 3], 1)
        for p = 1, nsums do
          local micro = tonumber(ARGV[i + 5 + p])
          if micro > 0 then redis.call('HINCRBY', KEYS[k + 1], prefix .. ARGV[3 + p], micro) end
        end
        touched[k] = true
      end
    end
    if top[tp] == nil or offset > top[tp] then top[tp] = offset end
  end
  -- skipped events too: a retry must rewrite the rankings a lost round trip left behind
  local coarse = tonumber(ARGV[i + 5])
  if coarse > 0 then
    ranked[coarse] = ranked[coarse] or {}
    ranked[coarse][ARGV[i + 3]] = true
  end
end
for tp, offset in pairs(top) do redis.call('HSET', fence, tp, offset) end
redis.call('HSET', fence, 'name', ARGV[1])
redis.call('EXPIRE', fence, ARGV[2])
for k, _ in pairs(touched) do redis.call('EXPIREAT', KEYS[k + 1], ARGV[3 + nsums + k]) end
-- for the rankings: per "<coarse bucket index>|<label>" of the batch, the bucket's events with that
-- label, all versions together ("M|<label>", and "<label>" from before versions; never "M|p:<label>")
local out = {applied}
for k, labels in pairs(ranked) do
  local counts = {}
  local fields = redis.call('HGETALL', KEYS[k + 1])
  for f = 1, #fields, 2 do
    local what = string.match(fields[f], '([^|]*)$')
    counts[what] = (counts[what] or 0) + tonumber(fields[f + 1])
  end
  for label, _ in pairs(labels) do
    if counts[label] then out[#out + 1] = k .. '|' .. label; out[#out + 1] = counts[label] end
  end
end
return out
"""

# KEYS: one subject's bucket hashes. Returns {the fields as a JSON array, their sums over the buckets
# (integers: counts and micro-units) comma-separated}: two strings, however many buckets and fields.
_WINDOW = """
local sums, names = {}, {}
for i = 1, #KEYS do
  local fields = redis.call('HGETALL', KEYS[i])
  for f = 1, #fields, 2 do
    local name = fields[f]
    if sums[name] == nil then names[#names + 1] = name; sums[name] = 0 end
    sums[name] = sums[name] + tonumber(fields[f + 1])
  end
end
if #names == 0 then return {'[]', ''} end
local values = {}
for i, name in ipairs(names) do values[i] = string.format('%d', sums[name]) end
return {cjson.encode(names), table.concat(values, ',')}
"""
# KEYS[1]: a scratch sorted set in the rankings' slot; KEYS[2..]: one kind and label's hourly rankings.
# ARGV[1]: how many. Returns the subjects with the most events of the label over those hours, most first.
_TOP = """
redis.call('ZUNIONSTORE', KEYS[1], #KEYS - 1, unpack(KEYS, 2))
local top = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
redis.call('DEL', KEYS[1])
return top
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
    model: str = ""  # the model version that labelled it ("<route>:<version>"); "" only in old tests' data


@dataclass(frozen=True)
class RatedExample:
    """A review with a star rating: its star-derived label and the serving version's probabilities."""

    model: str
    topic: str
    partition: int
    offset: int
    true_label: str
    probs: tuple[tuple[str, int], ...]


def model_key(route: str, version: str) -> str:
    """The name counters and rates give a model version; "|" separates fields, so it never appears."""
    return f"{route}:{version}".replace("|", "_")


def _sum_values(probs: tuple[tuple[str, int], ...], fields: list[str]) -> list[int]:
    """The summed fields' values of one event: P(label) per "p:<label>", P(negative)² for the squares."""
    values = dict(probs)
    out = []
    for name in fields:
        if name == SQUARES_FIELD:
            p = values.get(NEGATIVE, 0) / MICRO
            out.append(int(round(p * p * MICRO)))
        else:
            out.append(values.get(name[2:], 0))
    return out


def _sum_fields(items) -> list[str]:
    labels = sorted({label for item in items for label, _ in item.probs})
    return [f"p:{label}" for label in labels] + ([SQUARES_FIELD] if NEGATIVE in labels else [])


def bucket_key_in(tag: str, coarse: bool, start_s: int) -> str:
    """A bucket's key under its subject's tag (CounterLayout.tag)."""
    return f"{tag}:{'h' if coarse else 'm'}:{start_s}"


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
        return self._tag(SUBJECT_KINDS[kind], name)

    def _tag(self, kind: str, name: str) -> str:
        digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()
        return f"{self.prefix}:{{{kind}:{digest}}}"

    def rate_keys(self, model: str) -> tuple[str, str]:
        """(fence, sums) of one model version's stream rates: one hash slot."""
        tag = self._tag("r", model)
        return f"{tag}:f", f"{tag}:s"

    def checkpoint_rates_key(self, model: str) -> str:
        return f"{self.prefix}:rates:{model}"

    def fence_key(self, kind: str, name: str) -> str:
        return f"{self.tag(kind, name)}:f"

    def bucket_key(self, kind: str, name: str, coarse: bool, start_s: int) -> str:
        return self.bucket_keys(kind, name, coarse, [start_s])[0]

    def bucket_keys(self, kind: str, name: str, coarse: bool, starts: Iterable[int]) -> list[str]:
        tag = self.tag(kind, name)  # hashed once per subject, not per bucket
        return [bucket_key_in(tag, coarse, start) for start in starts]

    def window_keys(self, kind: str, name: str, window_s: int, now_ms: int) -> list[str]:
        """The bucket keys whose sum is the window ending now: those of `buckets`, except that a fine
        window covering the whole current hour so far reads that hour's bucket instead of its minutes
        (an hour's bucket is the sum of its minutes, which hold every event of the last fine horizon).
        That bucket also holds events stamped up to --bucket-seconds ahead of now, which the minutes
        count once their minute begins."""
        coarse, _, starts = self.buckets(window_s, now_ms)
        hour = now_ms // 1000 // COARSE_SECONDS * COARSE_SECONDS
        if coarse or starts[-1] > hour:
            return self.bucket_keys(kind, name, coarse, starts)
        return [self.bucket_key(kind, name, True, hour), *self.bucket_keys(kind, name, False, (s for s in starts if s < hour))]

    def rank_key(self, kind: str, label: str, hour_start_s: int) -> str:
        return f"{self._rank_tag(kind, label)}:{hour_start_s}"

    def rank_scratch_key(self, kind: str, label: str) -> str:
        """Where a top read sums a window's rankings (in their slot); it never outlives the script."""
        return f"{self._rank_tag(kind, label)}:sum"

    def _rank_tag(self, kind: str, label: str) -> str:
        return f"{self.prefix}:{{rank:{SUBJECT_KINDS[kind]}:{label}}}"

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
        self._window = client.register_script(_WINDOW)
        self._top = client.register_script(_TOP)
        self._scripts = ScriptRunner(client, replication)
        self._reads = ScriptRunner(client)

    def apply(self, increments: Iterable[Increment], now_ms: int, rated: Iterable[RatedExample] = ()) -> int:
        """Apply increments (and rated reviews to their version's rate sums) in one pipelined round trip
        per master; returns how many subject events were newly counted.

        Raises one of routing.TRANSIENT when Redis is unreachable, failing over, short of replicas
        or without its scripts: the caller retries the same increments, which the fences make safe.
        """
        layout = self.layout
        by_subject: dict[tuple[str, str], list[Increment]] = defaultdict(list)
        for inc in increments:
            by_subject[(inc.kind, inc.name)].append(inc)
        calls = []
        ranked_subjects: list[tuple[str, str, list[int]]] = []  # (kind, name, bucket start per bucket index)
        for (kind, name), items in by_subject.items():
            buckets: dict[tuple[bool, int], int] = {}  # (coarse, start) -> bucket index (1-based)
            expire_at: list[int] = []
            starts: list[int] = []

            def bucket_index(coarse: bool, ts_ms: int) -> int:
                size = COARSE_SECONDS if coarse else layout.bucket_seconds
                start = ts_ms // 1000 // size * size
                if (coarse, start) not in buckets:
                    buckets[(coarse, start)] = len(buckets) + 1
                    starts.append(start)
                    retention = layout.longest if coarse else layout.fine_horizon
                    expire_at.append(start + size + retention + size)
                return buckets[(coarse, start)]

            fields = _sum_fields(items)
            args: list = []
            for inc in sorted(items, key=lambda i: (i.topic, i.partition, i.offset)):
                fine = layout.fine_horizon and inc.ts_ms >= now_ms - (layout.fine_horizon + layout.bucket_seconds) * 1000
                args += [f"{inc.topic}|{inc.partition}", inc.offset, f"{inc.model}|" if inc.model else "", inc.label,
                         bucket_index(False, inc.ts_ms) if fine else 0, bucket_index(True, inc.ts_ms),
                         *_sum_values(inc.probs, fields)]
            ranked_subjects.append((kind, name, starts))
            tag = layout.tag(kind, name)
            calls.append(([f"{tag}:f", *(bucket_key_in(tag, *bucket) for bucket in buckets)], [name, layout.longest + COARSE_SECONDS, len(fields),
                                                                     *fields, *expire_at, *args]))
        subject_calls = len(calls)
        calls += self._rate_calls(rated, now_ms)
        if not calls:
            return 0
        replies = self._scripts.run(self._apply, calls)[:subject_calls]
        self._rank(ranked_subjects, replies)
        return sum(reply[0] for reply in replies)

    def _rate_calls(self, rated: Iterable[RatedExample], now_ms: int) -> list:
        """One script call per model version: its rated reviews into "<true label>|..." sums, behind its own fence."""
        by_model: dict[str, list[RatedExample]] = defaultdict(list)
        for example in rated:
            by_model[example.model].append(example)
        calls = []
        for model, items in by_model.items():
            fields = _sum_fields(items)
            args: list = []
            for ex in sorted(items, key=lambda e: (e.topic, e.partition, e.offset)):
                args += [f"{ex.topic}|{ex.partition}", ex.offset, f"{ex.true_label}|", "n", 0, 1, *_sum_values(ex.probs, fields)]
            fence, sums = self.layout.rate_keys(model)
            calls.append(([fence, sums], [model, RATES_TTL_S, len(fields), *fields, now_ms // 1000 + RATES_TTL_S, *args]))
        return calls

    def _rank(self, subjects: list[tuple[str, str, list[int]]], replies: list[list]) -> None:
        """Write each subject's hourly counts into the per-hour rankings, then trim each to rank_size.

        The counts are absolute, so a retry rewrites what a lost round trip dropped, and GT keeps a
        ranking from moving back when two processes' writes for one subject arrive out of order."""
        layout = self.layout
        pipe = self.client.pipeline(transaction=False)
        keys: dict[str, int] = {}
        for (kind, name, hours), reply in zip(subjects, replies):
            for i in range(1, len(reply), 2):
                index, label = reply[i].decode().split("|", 1)
                hour = hours[int(index) - 1]
                key = layout.rank_key(kind, label, hour)
                pipe.zadd(key, {name: int(reply[i + 1])}, gt=True)
                keys[key] = hour
        for key, hour in keys.items():
            pipe.zremrangebyrank(key, 0, -(layout.rank_size + 1))
            pipe.expireat(key, hour + COARSE_SECONDS + layout.longest + COARSE_SECONDS)
        if keys:
            pipe.execute()

    def ranked_subjects(self, kind: str, label: str, window_s: int, now_ms: int, count: int) -> list[str]:
        """The `count` subjects with the most events of `label` summed over the hours overlapping the
        window (each hour's ranking holds its rank_size highest), most first: a top list reads O(count)
        subjects however many are active, and one reply however many hours the window spans."""
        keys = [self.layout.rank_key(kind, label, hour) for hour in self.layout.hours(window_s, now_ms)]
        (top,) = self._reads.run(self._top, [([self.layout.rank_scratch_key(kind, label), *keys], [count])])
        return [member.decode() for member in top]

    def window_stats_many(self, requests: list[tuple[str, str, int]], now_ms: int) -> list["WindowStats"]:
        """Counts and probability sums for several (kind, name, window_s): each subject's buckets summed in
        Redis by one script, all in one pipelined round trip per master.

        Windows up to the fine horizon use fine buckets (resolution --bucket-seconds);
        longer windows sum whole event-time hours, the current one included.
        """
        calls = [(self.layout.window_keys(kind, name, window_s, now_ms), []) for kind, name, window_s in requests]
        out = []
        for names, values in self._reads.run(self._window, calls) if calls else []:
            stats = WindowStats()
            for field_name, value in zip(orjson.loads(names), values.split(b",") if values else ()):
                stats.add_field(field_name, int(value))
            out.append(stats)
        return out

    def bucket_series(self, kind: str, name: str, window_s: int, now_ms: int) -> tuple[int, list[tuple[int, "WindowStats"]]]:
        """(bucket seconds, [(bucket start s, stats)] oldest first): the buckets window_stats_many sums."""
        return self.bucket_series_many([(kind, name, window_s)], now_ms)[0]

    def bucket_series_many(self, requests: list[tuple[str, str, int]], now_ms: int) -> list[tuple[int, list[tuple[int, "WindowStats"]]]]:
        """bucket_series for several (kind, name, window_s), in one pipelined round trip; a bucket that
        several requests cover is read once."""
        if not requests:
            return []
        spans = []
        keys: dict[str, WindowStats] = {}
        for kind, name, window_s in requests:
            coarse, size, starts = self.layout.buckets(window_s, now_ms)
            starts.reverse()
            span = list(zip(starts, self.layout.bucket_keys(kind, name, coarse, starts)))
            keys.update((key, WindowStats()) for _, key in span)
            spans.append((size, span))
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        for stats, raw in zip(keys.values(), pipe.execute()):
            stats.add_bucket(raw)
        return [(size, [(start, keys[key]) for start, key in span]) for size, span in spans]


@dataclass
class WindowStats:
    """A window's tallies (argmax counts, probability sums, squares) per model version."""

    tallies: dict[str, Tally] = field(default_factory=dict)

    @property
    def counts(self) -> Counter:
        """Events per label, all versions together (what a person reads; shares come from the tallies)."""
        out: Counter = Counter()
        for tally in self.tallies.values():
            out.update(tally.counts)
        return out

    @property
    def prob_sums(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for tally in self.tallies.values():
            for label, value in tally.prob_sums.items():
                out[label] = out.get(label, 0.0) + value
        return out

    def add_bucket(self, raw: dict[bytes, bytes]) -> None:
        """Add one bucket hash as Redis returns it."""
        for name, value in raw.items():
            self.add_field(name.decode(), int(value))

    def add_field(self, name: str, value: int) -> None:
        """Add one counter field: "<model>|<label>", "<model>|p:<label>" or "<model>|s:negative"."""
        model, _, what = name.rpartition("|")
        tally = self.tallies.setdefault(model, Tally())
        if what == SQUARES_FIELD:
            tally.negative_squares += value / MICRO
        elif what.startswith("p:"):
            tally.prob_sums[what[2:]] = tally.prob_sums.get(what[2:], 0.0) + value / MICRO
        else:
            tally.counts[what] += value

    def add(self, other: "WindowStats") -> None:
        for model, tally in other.tallies.items():
            self.tallies.setdefault(model, Tally()).add(tally)

    def minus(self, other: "WindowStats") -> "WindowStats":
        return WindowStats({m: t.minus(other.tallies.get(m, Tally())) for m, t in self.tallies.items()})
