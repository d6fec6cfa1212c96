"""Batch building with a fake model: a model failure is isolated to the offending event."""

from __future__ import annotations

import numpy as np
import orjson

from consumer.model.classifier import Verdicts
from consumer.observability import Metrics
from consumer.pipeline.batch import BatchBuilder, Topics
from consumer.state.counters import CounterLayout
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


class PoisonedModel:
    labels = ["negative", "neutral", "positive"]
    name, version = "fake", "v1"

    def __init__(self) -> None:
        self.calls = 0

    def classify(self, texts):
        self.calls += 1
        if any("POISON" in t for t in texts):
            raise RuntimeError("CUDA error: device-side assert")
        probs = np.tile(np.array([[0.7, 0.2, 0.1]], dtype=np.float32), (len(texts), 1))
        return Verdicts(["negative"] * len(texts), probs, 0, 0, len(texts))


def test_model_failure_splits_batch_and_dead_letters_only_the_offender():
    events = make_events(16, seed=9)
    events[11]["text"] = "POISON pill"
    model = PoisonedModel()
    builder = BatchBuilder(model, CounterLayout("x"), DEFAULT_LIMITS, Topics("out", "dlq"), Metrics())
    batch = builder.label(builder.decode([FakeMessage(orjson.dumps(e), i) for i, e in enumerate(events)]))
    by_topic = {"out": [], "dlq": []}
    for message in batch.outgoing:
        by_topic[message.topic].append(orjson.loads(message.value))
    assert len(by_topic["out"]) == 15 and len(by_topic["dlq"]) == 1
    assert by_topic["dlq"][0]["error_code"] == "inference_failed"
    assert by_topic["dlq"][0]["source"]["offset"] == 11
    assert "device-side assert" in by_topic["dlq"][0]["error_message"]
    assert model.calls <= 2 * 4 + 1  # binary search: log2(16) levels, two calls each
    assert batch.next_offsets == {("in", 0): 16}
