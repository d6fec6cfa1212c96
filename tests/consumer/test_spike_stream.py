"""The spike rule through the whole consumer, on the real broker and Redis: what on-call gets paged for.

Texts come from pools the test checkpoint labels negative or positive, so each subject's share is known.
Each subject's events are keyed by it, so its history lands before its current traffic, as live.
"""

from __future__ import annotations

import random
import time

import orjson

from consumer.state.rates import RateStore
from consumer.views import query_sentiment
from model_runtime.stats.shares import estimate_version
from model_runtime.stats.spikes import SpikeRule, evaluate
from schemas.checkpoint import MANIFEST_FILE
from trainer.publish import point_latest

from .harness import copy_checkpoint, pick_texts, produce, read_topic, wait_for

MINUTE = 60_000
FLAGS = ["--alert-eval-interval-s", "0"]


def _traffic(query: str, pools, rng: random.Random, share: float, events: int, minutes_ago: tuple[float, float],
             now_ms: int, tag: str) -> list[dict]:
    """`events` events for one query (and its product), each negative with probability `share`."""
    out = []
    for i in range(events):
        pool = pools["negative"] if rng.random() < share else pools["positive"]
        out.append({"event_id": f"{tag}-{i}", "event_type": "search_result", "schema_version": 1, "query": query,
                    "ts": now_ms - int(rng.uniform(*minutes_ago) * MINUTE), "product_id": f"p-{query}", "rank": i % 10,
                    "title": "t", "text": pool[rng.randrange(len(pool))]})
    return out


def _send(bootstrap: str, topic: str, events: list[dict]) -> None:
    produce(bootstrap, topic, [orjson.dumps(e) for e in events], [e["query"].encode() for e in events])


def _alerts(bootstrap: str, topic: str, expect: int, settle: float) -> list[dict]:
    return [orjson.loads(m.value()) for m in read_topic(bootstrap, topic, expect=expect, timeout=60, settle=settle)]


def test_a_burst_of_100_steady_queries_and_2_spiking_ones_pages_for_the_spikes_only(stream, tiny_checkpoint):
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    pools, rng, now = pick_texts(tiny_checkpoint), random.Random(11), int(time.time() * 1000)
    steady = {f"steady {i}": rng.uniform(0.05, 0.5) for i in range(100)}
    spiking = {"smart watch": 0.10, "gaming chair": 0.20}
    backlog = []
    for query, share in steady.items():
        backlog += _traffic(query, pools, rng, share, 200, (6, 6 * 60), now, f"history-{query}")  # six hours of history
    for query, share in spiking.items():  # busier: the test checkpoint is a weak classifier, so a spike needs volume
        backlog += _traffic(query, pools, rng, share, 250, (6, 6 * 60), now, f"history-{query}")
    for query, share in steady.items():  # steady, and enough of it in the window to be tested
        backlog += _traffic(query, pools, rng, share, 40, (0.1, 3.9), now, f"now-{query}")
    for query, share in spiking.items():
        backlog += _traffic(query, pools, rng, share + 0.6, 160, (0.1, 3.9), now, f"spike-{query}")
    _send(bootstrap, topics["input"], backlog)
    stream["start"]("burst", extra=FLAGS)
    read_topic(bootstrap, topics["output"], expect=len(backlog), timeout=240)
    alerts = _alerts(bootstrap, f"{topics['output']}-alerts", expect=4, settle=10)
    # 204 subjects (each query and its product) tested on every batch that touched them: only the spikes page.
    assert sorted((a["subject"], a["query"] or a["product_id"], a["state"]) for a in alerts) == [
        ("product", "p-gaming chair", "firing"), ("product", "p-smart watch", "firing"),
        ("query", "gaming chair", "firing"), ("query", "smart watch", "firing")]
    assert all(a["test"] == "two_sample_deviance" and a["statistic"] >= a["z_threshold"] > 4.4 for a in alerts)


def test_a_model_swap_mid_stream_raises_no_alert(stream, tiny_checkpoint, tmp_path):
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    root = tmp_path / "checkpoints"
    root.mkdir()
    v1 = orjson.loads((tiny_checkpoint / MANIFEST_FILE).read_bytes())
    copy_checkpoint(tiny_checkpoint, root / "v1", version="20261202T100000Z-v1")
    # v2: the same weights, flattened (temperature 20): every event's P(negative) moves toward 1/3, so
    # every subject's mean probability jumps at the swap although nothing changed in the traffic. Set in
    # every fit the manifest holds: the torch model's and each ONNX graph's own (the one served on CPU).
    def flattened(fit: dict) -> dict:
        return {**fit, "calibration": {**fit.get("calibration", {}), "temperature": 20.0}}

    graphs = {"onnx": {**v1["onnx"], "files": {q: flattened(e) for q, e in v1["onnx"]["files"].items()}}} if "onnx" in v1 else {}
    copy_checkpoint(tiny_checkpoint, root / "v2", version="20261202T110000Z-v2", calibration=flattened(v1)["calibration"], **graphs)
    point_latest(root, "v1")
    proc = stream["start"]("swap", extra=[*FLAGS, "--checkpoint", str(root / "latest"), "--reload-interval-s", "0.5"])
    pools, rng, now = pick_texts(tiny_checkpoint, confident=True), random.Random(12), int(time.time() * 1000)
    shares = {f"query {i}": rng.uniform(0.03, 0.15) for i in range(20)}
    history = [e for query, share in shares.items() for e in _traffic(query, pools, rng, share, 200, (30, 6 * 60), now, f"h-{query}")]
    _send(bootstrap, topics["input"], history)
    read_topic(bootstrap, topics["output"], expect=len(history), timeout=180)
    point_latest(root, "v2")
    wait_for(lambda: any(line.get("msg") == "model version checked; offered to the group" for line in proc.logs()),
             60, "v2 to load")
    # After the swap: v2 labels the last half hour's traffic (its own baseline) and the current window.
    current = [e for query, share in shares.items() for e in _traffic(query, pools, rng, share, 200, (6, 30), now, f"c-{query}")
               + _traffic(query, pools, rng, share, 30, (0.1, 3.9), now, f"c-now-{query}")]
    _send(bootstrap, topics["input"], current)
    labelled = read_topic(bootstrap, topics["output"], expect=len(history) + len(current), timeout=180)
    outputs = [orjson.loads(m.value()) for m in labelled]
    assert {e["model"]["version"] for e in outputs if e["event_id"].startswith("c-")} == {"20261202T110000Z-v2"}
    time.sleep(5)  # evaluation follows the counter write: give the last batches' checks time to run
    assert _alerts(bootstrap, f"{topics['output']}-alerts", expect=1, settle=5) == []
    # v2 was compared with its own baseline, not skipped: every query was tested, and none fired. What one
    # set of rates for every version (the old global key) would have compared instead: v2's short window
    # corrected with v1's rates, against v1's baseline.
    store, rates = stream["store"], RateStore(stream["store"])
    first, second = "english:20261202T100000Z-v1", "english:20261202T110000Z-v2"
    jumps = []
    for query in shares:
        view = query_sentiment(store, rates, query, "1h")
        assert {m["model"] for m in view["models"]} == {first, second}
        short, longer = store.window_stats_many([("query", query, 300), ("query", query, 86400)], int(time.time() * 1000))
        base = longer.minus(short)
        verdict = evaluate(SpikeRule(), short.tallies, base.tallies, rates.read([first, second]))
        assert verdict.tested and not verdict.firing and base.tallies[second].n >= SpikeRule().min_baseline, (query, verdict)
        v1_rates = rates.read([first])[first]
        jumps.append(estimate_version(short.tallies[second], v1_rates).share - estimate_version(base.tallies[first], v1_rates).share)
    assert sorted(jumps)[len(jumps) // 2] > 0.15  # a version-blind rule would have paged for most of them
