"""The read API (`python -m consumer serve`) and the `stats` / `top` CLI on a known data set."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import orjson
import pytest

from consumer.alerts.detector import SpikeDetector
from consumer.alerts.state import AlertStore
from consumer.state.counters import CounterLayout, CounterStore, Increment
from tests.conftest import REDIS_URL

from model_runtime.stats.spikes import SpikeRule

from .harness import ROOT, free_port, publish_validation_rates

MINUTE = 60_000
MODEL = "english:v-test"
ESTIMATION = {"labels": ["negative", "neutral", "positive"], "support": [100, 100, 100],
              "mean_probs": [[0.8, 0.1, 0.1], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8]]}


@pytest.fixture
def known_data(redis_prefix):
    """Counts: 蓝牙耳机 8 neg / 2 pos; usb c cable 1 neg / 9 pos; rare query 3 neg (below min_count 5)."""
    client, prefix = redis_prefix
    prefix = prefix.rstrip(":")
    store = CounterStore(client, CounterLayout(prefix))
    now = int(time.time() * 1000)
    incs, offset = [], 0
    probs = {"negative": (("negative", 800_000), ("neutral", 100_000), ("positive", 100_000)),
             "positive": (("negative", 100_000), ("neutral", 100_000), ("positive", 800_000))}
    for query, product, negative, positive in (("蓝牙耳机", "p-1", 8, 2), ("usb c cable", "p-2", 1, 9), ("rare query", "p-3", 3, 0)):
        for label in ["negative"] * negative + ["positive"] * positive:
            for kind, name in (("query", query), ("product", product)):
                incs.append(Increment(kind, name, "t", 0, offset, now - 2 * MINUTE, label, probs[label], MODEL))
            offset += 1
    store.apply(incs, now)
    # The validation rates of a model whose negatives average P(neg) 0.8 and positives 0.1:
    # the adjusted estimate recovers the true shares exactly on this data.
    rates = publish_validation_rates(store, MODEL, ESTIMATION)
    rule = SpikeRule(min_count=5, false_alarm_days=1)  # a new query's 10 events: a lenient target lets it fire
    SpikeDetector(store, AlertStore(client, store.layout, 90000), rates, rule, "5m", 86400, 900).check([("query", "蓝牙耳机")], now)
    return prefix


@pytest.fixture
def api(known_data):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "consumer", "serve", "--port", str(port), "--redis-url", REDIS_URL,
                             "--redis-prefix", known_data], cwd=ROOT, env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/openapi.json", timeout=1)
            break
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def test_query_and_product_sentiment(api):
    status, body = get(f"{api}/queries/{quote('  蓝牙耳机 ')}/sentiment?window=5m")
    assert status == 200
    low, high = body.pop("interval_95")
    # Which version labelled the window, and which rates (on how many examples) corrected it.
    assert body.pop("models") == [{"model": MODEL, "events": 10, "estimator": "pacc", "negative_share": 0.8,
                                   "rates": "validation", "rate_examples": 300}]
    assert body == {"query": "  蓝牙耳机 ", "query_norm": "蓝牙耳机", "window": "5m",
                    "counts": {"negative": 8, "neutral": 0, "positive": 2}, "total": 10, "negative_share": 0.8,
                    "estimator": "pacc", "counted_negative_share": 0.8}
    assert 0.3 < low < 0.8 < high <= 1.0  # ten events: a wide interval
    status, body = get(f"{api}/products/p-2/sentiment?window=1h")
    assert status == 200 and body["counts"] == {"negative": 1, "neutral": 0, "positive": 9}
    status, body = get(f"{api}/queries/never%20seen/sentiment")
    assert status == 200 and body["total"] == 0 and body["negative_share"] is None


def test_top_and_alerts(api):
    status, body = get(f"{api}/top?label=negative&window=1h&min_count=5&limit=10")
    assert status == 200
    assert [(r["query"], r["count"], r["total"], r["share"], r["estimator"]) for r in body["results"]] == [
        ("蓝牙耳机", 8, 10, 0.8, "pacc"), ("usb c cable", 1, 10, 0.1, "pacc")]
    status, body = get(f"{api}/top?label=positive&window=24h&min_count=1&limit=1")
    assert [r["query"] for r in body["results"]] == ["usb c cable"]
    status, body = get(f"{api}/alerts?state=firing")
    assert status == 200 and [(a["query"], a["state"]) for a in body["alerts"]] == [("蓝牙耳机", "firing")]
    assert get(f"{api}/alerts?state=resolved")[1]["alerts"] == []


@pytest.mark.parametrize("path, status, message", [
    ("/queries/x/sentiment?window=5x", 400, "not a duration"),
    ("/queries/x/sentiment?window=30d", 400, "longer than the longest kept window"),
    ("/top?label=angry", 400, "label 'angry'"),
    ("/top?min_count=lots", 400, "min_count must be an integer"),
    ("/top?limit=0", 400, "limit 1..1000"),
    ("/alerts?state=maybe", 400, "not firing or resolved"),
    ("/nope", 404, "no route"),
])
def test_bad_requests_get_a_message(api, path, status, message):
    code, body = get(api + path)
    assert code == status and message in body["error"]


def test_openapi_and_read_only(api):
    status, spec = get(api + "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {"/queries/{query}/sentiment", "/products/{product_id}/sentiment", "/top", "/alerts", "/series",
                                  "/status", "/"}
    request = urllib.request.Request(api + "/top", method="POST", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 405


def test_cli_stats_and_top(known_data):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "consumer", *args, "--redis-url", REDIS_URL, "--redis-prefix", known_data],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    stats = cli("stats", "--query", "蓝牙耳机", "--window", "5m")
    assert stats.returncode == 0, stats.stderr
    out = orjson.loads(stats.stdout)
    assert (out["counts"], out["negative_share"], out["estimator"]) == ({"negative": 8, "neutral": 0, "positive": 2}, 0.8, "pacc")
    top = cli("top", "--label", "negative", "--window", "1h", "--min-count", "5", "--limit", "1")
    assert [r["query"] for r in orjson.loads(top.stdout)["results"]] == ["蓝牙耳机"]
    bad = cli("top", "--window", "1fortnight")
    assert bad.returncode == 2 and bad.stderr.startswith("error: window '1fortnight'") and "Traceback" not in bad.stderr


def test_counter_replies_are_shared_for_their_lifetime_and_bad_ones_never(known_data):
    import redis

    from consumer.api import ReadAPI
    from consumer.state.rates import RateStore

    store = CounterStore(redis.Redis.from_url(REDIS_URL), CounterLayout(known_data))
    alerts = AlertStore(store.client, store.layout, 90000)
    shared, fresh = ReadAPI(store, RateStore(store), alerts, cache_s=600), ReadAPI(store, RateStore(store), alerts)
    target = "/top?label=negative&window=1h&min_count=5&limit=10"
    before = shared.route("GET", target).body
    now = int(time.time() * 1000)
    store.apply([Increment("query", "usb c cable", "t", 1, o, now - MINUTE, "negative") for o in range(20)], now)
    assert shared.route("GET", target).body == before  # within its lifetime: the reply every client shares
    assert fresh.route("GET", target).body != before  # what Redis says now
    rows = orjson.loads(shared.route("GET", target + "&kind=query").body)["results"]  # another URL
    assert {r["query"]: r["count"] for r in rows}["usb c cable"] == 21
    assert shared.route("GET", "/top?limit=0").status == 400
    assert len(shared._replies._entries) == 2 and "/top?limit=0" not in shared._replies._entries


def test_shared_replies_expire_are_bounded_and_computed_once_for_concurrent_callers():
    import threading

    from consumer.api import Reply, SharedReplies

    clock = [0.0]
    computed: list[str] = []

    def compute(key: str, status: int = 200):
        def run() -> Reply:
            computed.append(key)
            return Reply(status, key.encode())
        return run

    replies = SharedReplies(2.0, max_entries=2, clock=lambda: clock[0])
    assert replies.get("a", compute("a")).body == b"a"
    clock[0] = 1.9
    replies.get("a", compute("a"))
    assert computed == ["a"]
    clock[0] = 2.0  # expired: computed again
    replies.get("a", compute("a"))
    replies.get("b", compute("b"))
    replies.get("c", compute("c"))  # over max_entries: "a", computed least recently, is dropped
    replies.get("a", compute("a"))
    assert computed == ["a", "a", "b", "c", "a"]

    gate = threading.Event()
    slow_calls: list[int] = []

    def slow() -> Reply:
        slow_calls.append(1)
        gate.wait(10)
        return Reply(200, b"slow")

    threads = [threading.Thread(target=lambda: replies.get("slow", slow)) for _ in range(8)]
    for thread in threads:
        thread.start()
    while not slow_calls:
        time.sleep(0.01)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert slow_calls == [1]  # the others waited for the one computation and shared it
    assert SharedReplies(0.0).get("x", compute("x")) is not SharedReplies(0.0).get("x", compute("x"))  # 0: never shared
