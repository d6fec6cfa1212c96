"""Counter store against the real Redis: fences, windows, cluster-safe keys, one round trip."""

from __future__ import annotations

import time

from consumer.state.counters import CounterLayout, CounterStore, Increment


def _incs(offsets, *, kind="query", name="wireless headphones", partition=0, label="negative", ts_ms=None, topic="t"):
    ts = ts_ms or int(time.time() * 1000)
    return [Increment(kind, name, topic, partition, o, ts, label) for o in offsets]


def test_replayed_range_is_never_counted_twice(redis_prefix):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":")))
    now = int(time.time() * 1000)
    assert store.apply(_incs(range(0, 10)), now) == 10
    # A replay that overlaps the applied range: only offsets 10..14 are new.
    assert store.apply(_incs(range(5, 15)), now) == 5
    assert store.apply(_incs(range(0, 15)), now) == 0
    # Another partition has its own fence.
    assert store.apply(_incs(range(0, 3), partition=1), now) == 3
    assert store.window_counts("query", "wireless headphones", 300, now) == {"negative": 18}
    assert store.window_counts("query", "wireless headphones", 86400, now) == {"negative": 18}


def test_windows_sum_event_time_buckets(redis_prefix):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":"), 60, (300, 3600, 86400)))
    now = int(time.time() * 1000)
    old = now - 20 * 60 * 1000  # 20 minutes ago: in 1h and 24h, not in 5m
    store.apply(_incs([0, 1], label="positive", ts_ms=now) + _incs([2, 3, 4], label="negative", ts_ms=old), now)
    assert store.window_counts("query", "wireless headphones", 300, now) == {"positive": 2}
    assert store.window_counts("query", "wireless headphones", 3600, now) == {"positive": 2, "negative": 3}
    assert store.window_counts("query", "wireless headphones", 86400, now) == {"positive": 2, "negative": 3}


def test_keys_share_one_hash_tag_per_subject_and_expire(redis_prefix):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":")))
    now = int(time.time() * 1000)
    store.apply(_incs([0], name="a {weird} query 蓝牙") + _incs([1], kind="product", name="p-1"), now)
    every = sorted(k.decode() for k in client.scan_iter(match=prefix + "*"))
    keys = [k for k in every if ":rank:" not in k]
    tags = {k[k.index("{"): k.index("}") + 1] for k in keys}
    assert len(tags) == 2 and len(keys) == 6  # per subject: fence, minute bucket, hour bucket
    assert len(every) == 8  # plus the hourly negative ranking of queries and of products
    assert all(0 < client.ttl(k) <= 86400 + 3 * 3600 for k in every)
    assert store.ranked_subjects("query", "negative", 3600, now, 10) == {"a {weird} query 蓝牙"}
    fence = store.layout.fence_key("query", "a {weird} query 蓝牙")
    assert client.hget(fence, "name").decode() == "a {weird} query 蓝牙"


def test_old_and_future_events_are_not_countable():
    layout = CounterLayout("x", 60, (300, 86400))
    now = 1_796_131_800_000
    assert layout.countable(now - 86_400_000 - 1, now) == "too_old"
    assert layout.countable(now + 61_000, now) == "future"
    assert layout.countable(now - 1000, now) is None


def test_rankings_are_bounded_and_not_inflated_by_replays(redis_prefix):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":"), rank_size=10))
    now = int(time.time() * 1000)
    incs, offset = [], 0
    for i in range(30):  # query i gets i + 1 negatives
        for _ in range(i + 1):
            incs.append(Increment("query", f"q{i:02d}", "t", 0, offset, now, "negative"))
            offset += 1
    store.apply(incs, now)
    store.apply(incs, now)  # a replayed range: fenced, so the ranking does not move either
    hour = now // 1000 // 3600 * 3600
    ranking = client.zrevrange(store.layout.rank_key("query", "negative", hour), 0, -1, withscores=True)
    assert [(m.decode(), int(s)) for m, s in ranking] == [(f"q{i:02d}", i + 1) for i in range(29, 19, -1)]
    assert store.ranked_subjects("query", "negative", 3600, now, 3) == {"q29", "q28", "q27"}


def test_probability_sums_are_exact_under_a_replayed_range(redis_prefix):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":")))
    now = int(time.time() * 1000)
    probs = (("negative", 612_345), ("neutral", 87_655), ("positive", 300_000))
    incs = [Increment("query", "q", "t", 0, o, now, "negative", probs) for o in range(10)]
    store.apply(incs[:6], now)
    store.apply(incs, now)  # offsets 0..5 replayed: fenced for the sums as for the counts
    for window in (300, 86400):
        stats = store.window_stats_many([("query", "q", window)], now)[0]
        assert stats.counts == {"negative": 10}
        assert stats.prob_sums == {"negative": 6.12345, "neutral": 0.87655, "positive": 3.0}
