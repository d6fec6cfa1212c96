"""Labelling with fake models: bad events are isolated and dead-lettered; a systemic failure dead-letters nothing."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from consumer.model.classifier import Verdicts
from consumer.observability import Metrics
from consumer.pipeline.label import Labeller, ModelUnavailable
from consumer.pipeline.validate import Validator
from consumer.state.counters import CounterLayout
from model_runtime.stats.rates import RatingCutoffs
from schemas import DEFAULT_LIMITS

from .harness import make_events


class FakeMessage:
    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset

    def value(self): return self._value
    def key(self): return None
    def topic(self): return "in"
    def partition(self): return 0
    def offset(self): return self._offset
    def error(self): return None


class FakeModel:
    labels = ["negative", "neutral", "positive"]
    ratings = RatingCutoffs()

    def __init__(self, broken: bool = False, name: str = "fake", version: str = "v1") -> None:
        self.calls = 0
        self.broken = broken
        self.name, self.version = name, version
        self.texts: list[str] = []

    def forward(self, texts):
        if self.broken:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return np.full((len(texts), 3), 1 / 3, dtype=np.float32), 0

    def classify(self, texts):
        self.calls += 1
        self.texts.extend(texts)
        if self.broken or any("POISON" in t for t in texts):
            raise RuntimeError("CUDA error: device-side assert")
        probs = np.tile(np.array([[0.7, 0.2, 0.1]], dtype=np.float32), (len(texts), 1))
        return Verdicts(["negative"] * len(texts), probs, 0, 0, len(texts))


def _label(model, events, models=None):
    metrics = Metrics()
    decoded = Validator(DEFAULT_LIMITS, "dlq", metrics).decode([FakeMessage(orjson.dumps(e), i) for i, e in enumerate(events)], {("in", 0): 7})
    return Labeller(models or {"english": model}, CounterLayout("x"), "out", "dlq", metrics).label(decoded)


def test_each_event_is_labelled_by_its_routes_model_in_input_order():
    english, multilingual = FakeModel(name="en", version="v-en"), FakeModel(name="ml", version="v-ml")
    events = make_events(8, seed=12)
    texts = {0: ("质量太差了，退货", None), 1: ("Great cable", "zh-CN"), 2: ("Great cable", None), 3: ("蓝牙耳机 great", None)}
    for i, (text, locale) in texts.items():
        events[i]["text"] = text
        events[i]["locale"] = locale
    for event in events[4:]:
        event["text"] = "Works as described."
    batch = _label(None, events, {"english": english, "multilingual": multilingual})
    outs = [orjson.loads(record.outgoing.value) for record in batch.records]
    assert [o["event_id"] for o in outs] == [e["event_id"] for e in events]
    names = [o["model"]["name"] for o in outs]
    assert names == ["ml", "ml", "en", "ml", "en", "en", "en", "en"]
    assert [o["model"]["version"] for o in outs][:2] == ["v-ml", "v-ml"]
    assert english.calls == 1 and multilingual.calls == 1  # one sub-batch per model, not one pass per event
    assert sorted(multilingual.texts) == sorted([events[0]["text"], events[1]["text"], events[3]["text"]])
    assert all(len(record.increments) == 2 for record in batch.records)  # every route counts alike
    assert {inc.model for record in batch.records[:2] for inc in record.increments} == {"multilingual:v-ml"}
    # Reviews with stars become rate examples of the version that labelled them, with the star-derived label.
    reviews = {i: e["rating"] for i, e in enumerate(events) if e["event_type"] == "review"}
    assert [(r.model, r.true_label) for r in batch.rated] == [
        ({0: "multilingual:v-ml", 3: "multilingual:v-ml"}.get(i, "english:v-en"), RatingCutoffs().label(stars))
        for i, stars in reviews.items()]


def test_model_failure_splits_batch_and_dead_letters_only_the_offender():
    events = make_events(16, seed=9)
    events[11]["text"] = "POISON pill"
    model = FakeModel()
    batch = _label(model, events)
    by_topic = {"out": [], "dlq": []}
    for record in batch.records:
        by_topic[record.outgoing.topic].append(orjson.loads(record.outgoing.value))
    assert len(by_topic["out"]) == 15 and len(by_topic["dlq"]) == 1
    assert by_topic["dlq"][0]["error_code"] == "inference_failed"
    assert by_topic["dlq"][0]["source"]["offset"] == 11
    assert "device-side assert" in by_topic["dlq"][0]["error_message"]
    assert model.calls <= 2 * 4 + 1  # binary search: log2(16) levels, two calls each
    assert batch.span.next == {("in", 0): 16} and batch.span.first == {("in", 0): 0} and batch.span.epochs == {("in", 0): 7}


def test_systemic_failure_raises_and_dead_letters_nothing():
    model = FakeModel(broken=True)
    with pytest.raises(ModelUnavailable, match="known-good probe"):
        _label(model, make_events(16, seed=10))
    assert model.calls == 1  # the probe failed too: no bisection, no 2n-1 forward passes


def test_a_lone_poison_event_is_dead_lettered_while_the_probe_passes():
    """At low traffic a batch is one event: its failure is the event's when the probe passes, not the model's."""
    events = make_events(1, seed=11)
    events[0]["text"] = "POISON " + events[0]["text"]
    batch = _label(FakeModel(), events)
    assert [record.outgoing.topic for record in batch.records] == ["dlq"]
    assert orjson.loads(batch.records[0].outgoing.value)["error_code"] == "inference_failed"
    assert batch.increments == []


def test_every_event_of_a_batch_failing_with_the_probe_passing_dead_letters_them_all():
    events = make_events(4, seed=11)
    for e in events:
        e["text"] = "POISON " + e["text"]
    batch = _label(FakeModel(), events)
    assert [record.outgoing.topic for record in batch.records] == ["dlq"] * 4
