"""A mixed English/Chinese stream through the real broker and Redis, with two resident models."""

from __future__ import annotations

import orjson

from consumer.state.rates import RateStore
from consumer.views import query_sentiment
from schemas.checkpoint import MANIFEST_FILE

from .conftest import assert_counters_exact
from .harness import QUERIES, copy_checkpoint, labelled_by_id, make_events, produce, read_topic, wait_committed

CHINESE = ["质量太差了，用了两天就坏了", "非常好用，物流也快", "iPhone 壳很好看，但是容易发黄"]
ENGLISH = ["Battery died after two days.", "Works great, fast shipping."]


def test_mixed_stream_each_event_labelled_by_its_routes_model_counters_shared(stream, tiny_checkpoint, tmp_path):
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    multilingual = tmp_path / "multilingual"
    english_version = orjson.loads((tiny_checkpoint / MANIFEST_FILE).read_bytes())["version"]
    # The tiny checkpoint under another name and version: which model labelled an event is then visible.
    manifest = copy_checkpoint(tiny_checkpoint, multilingual, name="tiny-multilingual", version=english_version + "-ml")
    english_manifest = orjson.loads((tiny_checkpoint / MANIFEST_FILE).read_bytes())
    events = make_events(90, seed=31)
    expected = {}
    for i, event in enumerate(events):
        kind = i % 3
        if kind == 0:  # Chinese text, no locale: the script decides
            event["text"], event["locale"] = CHINESE[i % len(CHINESE)], None
            expected[event["event_id"]] = "tiny-multilingual"
        elif kind == 1:  # English text, but the producer says zh-CN: the locale decides
            event["text"], event["locale"] = ENGLISH[i % len(ENGLISH)], "zh-CN"
            expected[event["event_id"]] = "tiny-multilingual"
        else:
            event["text"], event["locale"] = ENGLISH[i % len(ENGLISH)], None
            expected[event["event_id"]] = english_manifest["name"]
    produce(bootstrap, topics["input"], [orjson.dumps(e) for e in events])
    proc = stream["start"](extra=["--multilingual-checkpoint", str(multilingual)])

    by_id, seen = labelled_by_id(read_topic(bootstrap, topics["output"], expect=len(events)))
    assert set(by_id) == set(expected) and max(seen.values()) == 1
    assert {i: by_id[i]["model"]["name"] for i in expected} == expected
    versions = {by_id[i]["model"]["version"] for i in expected if expected[i] == "tiny-multilingual"}
    assert versions == {manifest["version"]}
    assert wait_committed(bootstrap, stream["group"], topics["input"], 4, len(events)) == len(events)
    status, metrics = proc.scrape()
    assert status == 200
    assert 'sentiment_events_routed_total{route="multilingual"} 60.0' in metrics
    assert 'sentiment_events_routed_total{route="english"} 30.0' in metrics
    assert f'sentiment_model_info{{device="cpu",name="tiny-multilingual",route="multilingual",version="{manifest["version"]}"}} 1.0' in metrics
    assert proc.stop() == 0
    # One set of counters across languages, exact, kept per model version; each version corrected with
    # its own rates, so two models give pacc, not pcc.
    store = stream["store"]
    assert_counters_exact(store, by_id)
    english, chinese = f"english:{english_manifest['version']}", f"multilingual:{manifest['version']}"
    rates = RateStore(store)
    assert {m: r.source for m, r in rates.read([english, chinese]).items()} == {english: "validation", chinese: "validation"}
    view = query_sentiment(store, rates, QUERIES[0], "1h")
    assert view["estimator"] == "pacc", view
    assert {m["model"] for m in view["models"]} == {english, chinese} and view["total"] == sum(m["events"] for m in view["models"])
    # Every review here is Chinese: its stars became the multilingual version's stream rates, and only its.
    reviews = [e for e in events if e["event_type"] == "review"]
    assert sum(rates.stream_support(chinese).values()) == len(reviews) and rates.stream_support(english) == {}
    loaded = [line for line in proc.logs() if line.get("msg") == "model loaded"]
    assert sorted(line["route"] for line in loaded) == ["english", "multilingual"]
