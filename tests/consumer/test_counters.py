"""Counter store against the real Redis: fences, windows, cluster-safe keys, one round trip."""

from __future__ import annotations

import time

import pytest

from consumer.state.counters import CounterLayout, CounterStore, Increment, WindowStats


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
    assert store.window_stats_many([("query", "wireless headphones", 300)], now)[0].counts == {"negative": 18}
    assert store.window_stats_many([("query", "wireless headphones", 86400)], now)[0].counts == {"negative": 18}


def test_windows_sum_event_time_buckets(redis_prefix):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":"), 60, (300, 3600, 86400)))
    now = int(time.time() * 1000)
    old = now - 20 * 60 * 1000  # 20 minutes ago: in 1h and 24h, not in 5m
    store.apply(_incs([0, 1], label="positive", ts_ms=now) + _incs([2, 3, 4], label="negative", ts_ms=old), now)
    assert store.window_stats_many([("query", "wireless headphones", 300)], now)[0].counts == {"positive": 2}
    assert store.window_stats_many([("query", "wireless headphones", 3600)], now)[0].counts == {"positive": 2, "negative": 3}
    assert store.window_stats_many([("query", "wireless headphones", 86400)], now)[0].counts == {"positive": 2, "negative": 3}


def test_keys_share_one_hash_tag_per_subject_and_expire(redis_prefix):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":")))
    now = int(time.time() * 1000)
    store.apply(_incs([0], name="a {weird} query 蓝牙") + _incs([1], kind="product", name="p-1"), now)
    every = sorted(k.decode() for k in client.scan_iter(match=prefix + "*"))
    keys = [k for k in every if "{rank:" not in k]
    tags = {k[k.index("{"): k.index("}") + 1] for k in keys}
    assert len(tags) == 2 and len(keys) == 6  # per subject: fence, minute bucket, hour bucket
    assert len(every) == 8  # plus the hourly negative ranking of queries and of products
    assert all(0 < client.ttl(k) <= 86400 + 3 * 3600 for k in every)
    assert store.ranked_subjects("query", "negative", 3600, now, 10) == ["a {weird} query 蓝牙"]
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
    assert store.ranked_subjects("query", "negative", 3600, now, 3) == ["q29", "q28", "q27"]


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


def test_counts_sums_and_squares_are_kept_per_model_version_and_exact_under_replay(redis_prefix):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":")))
    now = int(time.time() * 1000)
    v1 = (("negative", 600_000), ("neutral", 100_000), ("positive", 300_000))
    v2 = (("negative", 900_000), ("neutral", 50_000), ("positive", 50_000))
    incs = ([Increment("query", "q", "t", 0, o, now, "positive", v1, "english:v1") for o in range(6)]
            + [Increment("query", "q", "t", 0, o, now, "negative", v2, "english:v2") for o in range(6, 10)])
    assert store.apply(incs[:8], now) == 8
    assert store.apply(incs, now) == 2  # the swap happened mid-range; the replayed part is fenced for both versions
    for window in (300, 86400):
        stats = store.window_stats_many([("query", "q", window)], now)[0]
        assert set(stats.tallies) == {"english:v1", "english:v2"}
        first, second = stats.tallies["english:v1"], stats.tallies["english:v2"]
        assert first.counts == {"positive": 6} and second.counts == {"negative": 4}
        assert first.prob_sums == {"negative": 3.6, "neutral": 0.6, "positive": 1.8}
        assert second.prob_sums == {"negative": 3.6, "neutral": 0.2, "positive": 0.2}
        assert first.negative_squares == 6 * 0.36 and second.negative_squares == 4 * 0.81
        assert stats.counts == {"positive": 6, "negative": 4}  # what a person reads: all versions together


def test_rates_are_kept_per_version_and_stream_rates_are_exact_under_replay(redis_prefix):
    from consumer.state.counters import RatedExample
    from consumer.state.rates import RateStore
    from model_runtime.stats.rates import Rates

    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":")))
    rates = RateStore(store, min_per_label=3, cache_s=0)
    labels = ["negative", "neutral", "positive"]
    validation = {"labels": labels, "mean_probs": [[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.1, 0.2, 0.7]], "support": [90, 90, 90]}
    other = {**validation, "mean_probs": [[0.9, 0.05, 0.05], [0.3, 0.5, 0.2], [0.2, 0.1, 0.7]]}
    rates.publish_checkpoint("english:v1", labels, {"validation": Rates.from_dict(validation, "validation")})
    rates.publish_checkpoint("english:v2", labels, {"validation": Rates.from_dict(other, "validation")})
    chosen = rates.read(["english:v1", "english:v2"])
    assert chosen["english:v1"].mean_probs[0][0] == 0.7 and chosen["english:v2"].mean_probs[0][0] == 0.9  # nobody overwrote the other
    assert {r.source for r in chosen.values()} == {"validation"}

    probs = {"negative": (("negative", 800_000), ("neutral", 100_000), ("positive", 100_000)),
             "neutral": (("negative", 200_000), ("neutral", 700_000), ("positive", 100_000)),
             "positive": (("negative", 100_000), ("neutral", 100_000), ("positive", 800_000))}
    rated = [RatedExample("english:v1", "reviews", 0, o, true, probs[true]) for o, true in enumerate(labels * 3)]
    now = int(time.time() * 1000)
    store.apply([], now, rated[:5])
    store.apply([], now, rated)  # replayed: each review counts once
    assert rates.stream_support("english:v1") == {"negative": 3, "neutral": 3, "positive": 3}
    assert rates.stream_support("english:v2") == {}
    stream = rates.read(["english:v1"])["english:v1"]
    assert stream.source == "stream" and stream.support == (3, 3, 3)
    assert [round(v, 6) for v in stream.mean_probs[1]] == [0.2, 0.7, 0.1]
    assert rates.read(["english:v2"])["english:v2"].source == "validation"  # v1's reviews never become v2's rates


def _score(client, store, name, label="negative", now=None):
    hour = (now or int(time.time() * 1000)) // 1000 // 3600 * 3600
    return client.zscore(store.layout.rank_key("query", label, hour), name)


def test_a_retried_batch_restores_rankings_its_lost_round_trip_dropped(redis_prefix):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":")))
    now = int(time.time() * 1000)
    batch = _incs(range(6)) + _incs(range(6, 10), label="positive")
    store.apply(batch, now)
    for key in client.scan_iter(match=f"{prefix}{{rank:*"):  # what a crash before the ranking round trip leaves
        client.delete(key)
    assert store.apply(batch, now) == 0  # the redelivered batch: everything is behind the fence
    assert store.ranked_subjects("query", "negative", 3600, now, 10) == ["wireless headphones"]
    assert _score(client, store, "wireless headphones") == 6
    assert _score(client, store, "wireless headphones", "positive") == 4


def test_a_failed_ranking_round_trip_is_repaired_by_the_retry(redis_prefix, monkeypatch):
    import redis

    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":")))
    now = int(time.time() * 1000)
    rank = store._rank
    failures = iter([redis.ConnectionError("connection reset by peer")])

    def rank_once_lost(*args):
        for exc in failures:  # the scripts ran; the ranking round trip after them is lost once
            raise exc
        rank(*args)

    monkeypatch.setattr(store, "_rank", rank_once_lost)
    batch = _incs(range(5))
    try:
        store.apply(batch, now)
    except redis.ConnectionError:
        store.apply(batch, now)  # what CountStep does: the same increments again
    assert store.ranked_subjects("query", "negative", 3600, now, 10) == ["wireless headphones"]
    assert _score(client, store, "wireless headphones") == 5


def test_rankings_hold_the_exact_count_when_another_partition_writes_between_a_lost_round_trip_and_its_replay(redis_prefix):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":")))
    now = int(time.time() * 1000)
    first = _incs(range(5), partition=0)  # its process crashes before ranking it
    second = _incs(range(3), partition=1) + _incs(range(3, 5), partition=1, label="positive")
    store.apply(first, now)
    for key in client.scan_iter(match=f"{prefix}{{rank:*"):
        client.delete(key)
    store.apply(second, now)  # another process, another partition, the same subject and hour
    store.apply(first, now)  # the new owner of partition 0 replays the first batch
    store.apply(second, now)  # and a replay of the second moves nothing
    assert _score(client, store, "wireless headphones") == 8
    assert _score(client, store, "wireless headphones", "positive") == 2


def test_rankings_count_one_label_across_model_versions_and_old_unversioned_fields(redis_prefix):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":")))
    now = int(time.time() * 1000)
    probs = (("negative", 700_000), ("positive", 300_000))
    hour = now // 1000 // 3600 * 3600
    client.hset(store.layout.bucket_key("query", "q", True, hour), mapping={"negative": 2, "p:negative": 5})  # before versions
    store.apply([Increment("query", "q", "t", 0, o, now, "negative", probs, "english:v1") for o in range(3)]
                + [Increment("query", "q", "t", 0, o, now, "negative", probs, "english:v2") for o in range(3, 7)]
                + [Increment("query", "q", "t", 0, 7, now, "positive", probs, "english:v2")], now)
    assert _score(client, store, "q") == 2 + 3 + 4  # never the probability sums ("M|p:negative") or squares
    assert _score(client, store, "q", "positive") == 1


def test_rankings_sum_the_window_hours_in_their_one_slot(redis_prefix):
    from redis.cluster import key_slot

    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":")))
    now = int(time.time() * 1000)
    hour_ms = now // 3_600_000 * 3_600_000
    before = hour_ms - 60_000  # the hour before this one
    store.apply(_incs(range(0, 4), name="steady", ts_ms=before) + _incs(range(4, 8), name="steady", ts_ms=now)
                + _incs(range(8, 15), name="earlier", ts_ms=before) + _incs(range(15, 21), name="burst", ts_ms=now), now)
    # Summed over both hours, not the best of each hour: 8, 7, 6.
    assert store.ranked_subjects("query", "negative", 3600, now, 3) == ["steady", "earlier", "burst"]
    assert store.ranked_subjects("query", "negative", 3600, now, 1) == ["steady"]
    hours = [store.layout.rank_key("query", "negative", h) for h in store.layout.hours(86400, now)]
    assert len({key_slot(k.encode()) for k in [*hours, store.layout.rank_scratch_key("query", "negative")]}) == 1
    assert not client.exists(store.layout.rank_scratch_key("query", "negative"))  # the sum never outlives the read


def test_window_sums_read_in_redis_equal_the_buckets_they_sum(redis_prefix):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix.rstrip(":")))
    now = int(time.time() * 1000)
    probs = (("negative", 612_345), ("neutral", 87_655), ("positive", 300_000))
    incs = [Increment("query", "q", "t", 0, o, now - o * 7 * 60_000, "negative" if o % 3 else "positive", probs,
                      "english:v1" if o < 6 else "english:v2") for o in range(12)]
    store.apply(incs + [Increment("product", "p", "t", 0, 0, now, "neutral", probs, "english:v1")], now)
    requests = [("query", "q", 300), ("query", "q", 3600), ("query", "q", 86400), ("product", "p", 3600), ("query", "none", 3600)]
    for stats, (_, buckets) in zip(store.window_stats_many(requests, now), store.bucket_series_many(requests, now)):
        expected = WindowStats()
        for _, bucket in buckets:
            expected.add(bucket)
        assert stats.tallies.keys() == expected.tallies.keys()
        for model, tally in expected.tallies.items():
            got = stats.tallies[model]
            assert got.counts == tally.counts and got.negative_squares == pytest.approx(tally.negative_squares, abs=1e-9)
            # summed as integers in Redis, divided once: at least as exact as the buckets summed as floats
            assert got.prob_sums == pytest.approx(tally.prob_sums, abs=1e-9)
    day = store.window_stats_many([("query", "q", 86400)], now)[0]
    assert day.counts == {"negative": 8, "positive": 4} and day.tallies["english:v2"].n == 6
    assert store.window_stats_many([("query", "none", 3600)], now)[0].tallies == {}


def test_a_fine_window_reads_the_current_hour_whole_and_the_minutes_before_it():
    layout = CounterLayout("p")
    hour = 1_700_000_000 // 3600 * 3600
    now = (hour + 20 * 60 + 5) * 1000  # 20 minutes into the hour
    keys = layout.window_keys("query", "q", 3600, now)
    assert keys[0] == layout.bucket_key("query", "q", True, hour)
    assert keys[1:] == layout.bucket_keys("query", "q", False, [hour - 60 * m for m in range(1, 40)])  # 39 + 21 minutes
    assert layout.window_keys("query", "q", 300, now) == layout.bucket_keys("query", "q", False, [hour + 60 * m for m in range(20, 15, -1)])
    assert layout.window_keys("query", "q", 86400, now) == layout.bucket_keys("query", "q", True, [hour - 3600 * h for h in range(24)])
