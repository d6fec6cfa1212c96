"""Counters, alerts and reads against a real Redis Cluster (3 masters + 3 replicas, private ports)."""

from __future__ import annotations

import time
from collections import Counter

import orjson
import pytest
import redis
from redis.cluster import RedisCluster, key_slot

from consumer import views
from consumer.alerts.state import AlertStore
from consumer.errors import ConfigError
from consumer.redis_client import refuse_evicting
from consumer.state.counters import CounterLayout, CounterStore, Increment, RatedExample
from consumer.state.rates import RateStore
from model_runtime.rollout import CanaryRule, RolloutStore
from consumer.state.routing import NotReplicated, Replication, ScriptRunner
from schemas.redis_connection import RedisSettingsError, connect
from tests.services.redis_cluster import LocalRedisCluster

LABELS = ("negative", "neutral", "positive")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster")) as local:
        yield local


@pytest.fixture
def client(cluster) -> RedisCluster:
    return connect(cluster.url, cluster=True)


def _stream(n: int, subjects: int, now: int) -> list[Increment]:
    """n events on 3 partitions over `subjects` queries, labels cycling."""
    return [Increment("query", f"query {i % subjects} 蓝牙", "in", i % 3, i // 3, now, LABELS[i % 3],
                      ((LABELS[i % 3], 600_000),)) for i in range(n)]


def test_counters_exact_under_redelivery_across_masters(client, cluster):
    layout = CounterLayout("t-exact")
    store = CounterStore(client, layout)
    now = int(time.time() * 1000)
    events = _stream(600, 40, now)
    masters = {client.nodes_manager.get_node_from_slot(key_slot(layout.fence_key("query", e.name).encode())).name for e in events}
    assert len(masters) == 3, "the subjects must spread over every master for this test to mean anything"

    assert store.apply(events[:400], now) == 400
    # Redelivery: an overlapping range, then everything again, then the rest.
    assert store.apply(events[200:500], now) == 100
    assert store.apply(events, now) == 100
    assert store.apply(events, now) == 0

    expected: dict[str, Counter] = {}
    for e in events:
        expected.setdefault(e.name, Counter())[e.label] += 1
    for name, counts in expected.items():
        assert store.window_stats_many([("query", name, 3600)], now)[0].counts == counts
    rates = RateStore(store, min_per_label=2, cache_s=0)
    reply = views.query_sentiment(store, rates, "query 7 蓝牙", "1h")
    assert reply["counts"] == dict(expected["query 7 蓝牙"]) and reply["total"] == 15
    ranked = views.top(store, rates, label="negative", window="1h", min_count=1, limit=50)
    assert {row["query"] for row in ranked["results"]} == set(expected)
    # A version's stream rates live under a tag of their own, on whichever master owns it; replays are fenced.
    probs = {label: tuple((other, 800_000 if other == label else 100_000) for other in LABELS) for label in LABELS}
    rated = [RatedExample("english:v1", "reviews", 0, o, LABELS[o % 3], probs[LABELS[o % 3]]) for o in range(6)]
    store.apply([], now, rated)
    store.apply([], now, rated)
    rates.publish_checkpoint("english:v1", list(LABELS), {})
    assert rates.stream_support("english:v1") == {label: 2 for label in LABELS}
    stream = rates.read(["english:v1"])["english:v1"]
    assert stream.source == "stream" and stream.support == (2, 2, 2) and stream.mean_probs[0][0] == 0.8


def test_alert_state_outbox_and_reads(client):
    layout = CounterLayout("t-alerts")
    alerts = AlertStore(client, layout, 3600)
    now = int(time.time() * 1000)
    subjects = [("query", f"q{i}") for i in range(12)]
    for i, subject in enumerate(subjects):
        event = {"alert_id": f"a{i}", "state": "firing", "fired_at": now + i, "resolved_at": None}
        assert alerts.fire(subject, f"a{i}", now + i, orjson.dumps(event))
    assert not alerts.fire(subjects[0], "again", now, b"{}"), "a firing subject does not fire twice"
    assert sorted(alerts.firing()) == sorted(subjects)
    pending = alerts.pending()
    assert len(pending) == 12
    for subject, field, payload in pending:
        alerts.sent(subject, field, payload)
    assert alerts.pending() == []
    assert [a["alert_id"] for a in alerts.read("firing")][:3] == ["a11", "a10", "a9"]


def test_script_keys_must_share_one_slot(client):
    """The guard fails a key-layout bug loudly; Redis itself refuses such a script too."""
    runner = ScriptRunner(client)
    script = client.register_script("return #KEYS")
    assert runner.run(script, [(["x:{a}:1", "x:{a}:2"], [])]) == [2]
    with pytest.raises(ValueError, match="2 hash slots"):
        runner.run(script, [(["x:{a}:1", "x:{b}:2"], [])])
    with pytest.raises(redis.ResponseError, match="same slot"):
        client.get_redis_connection(client.get_node_from_key("x:{a}")).eval("return 1", 2, "x:{a}", "x:{b}")


def test_wait_for_replicas_before_returning(client):
    layout = CounterLayout("t-wait")
    now = int(time.time() * 1000)
    events = _stream(60, 10, now)
    assert CounterStore(client, layout, Replication(1, 2000)).apply(events[:30], now) == 30
    # Each master has one replica: asking for two can never be met, and says so.
    with pytest.raises(NotReplicated, match="1 of 2 replicas"):
        CounterStore(client, layout, Replication(2, 200)).apply(events[30:], now)
    # The first master's writes did happen before its WAIT fell short; the retry the caller makes is exact.
    assert CounterStore(client, layout, Replication(1, 2000)).apply(events, now) < 30
    assert sum(sum(CounterStore(client, layout).window_stats_many([("query", f"query {i} 蓝牙", 3600)], now)[0].counts.values())
               for i in range(10)) == 60


def test_every_master_is_checked_for_eviction(client, cluster):
    masters = cluster.masters()
    refuse_evicting(client, allow=False)
    redis.Redis(port=masters[-1]).config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(ConfigError, match="allkeys-lru"):
            refuse_evicting(client, allow=False)
    finally:
        redis.Redis(port=masters[-1]).config_set("maxmemory-policy", "noeviction")


def test_cluster_url_with_a_db_is_refused(cluster):
    with pytest.raises(RedisSettingsError, match="only db 0"):
        connect(cluster.url.replace("/0", "/3"), cluster=True)


def test_the_rollout_state_lives_in_one_slot_and_decides_once(client):
    prefix = f"cluster-rollout-{time.time_ns()}"
    stores = [RolloutStore(client, prefix, "shop", route) for route in ("english", "multilingual")]
    for store in stores:
        assert store.init("v1")[0] == "init" and store.offer("v2", CanaryRule(1.0, 10, 0.5))[0] == "canary"
        assert [store.tally("v2", 5, 5)[0] for _ in range(3)] == ["counting", "promoted", "stale"]
        assert (store.read().serving, store.read().last_good) == ("v2", "v1")
        client.delete(store.key)
