"""The onnxruntime backend on the real broker and Redis: the int8 graph served by default, with its own
calibration and decision rule, labels as the same graph does in process; counters exact."""

from __future__ import annotations

import numpy as np
import orjson

from consumer.model.classifier import SentimentClassifier
from model_runtime.decision import decide

from .conftest import assert_counters_exact
from .harness import labelled_by_id, make_events, produce, read_topic, wait_committed


def test_onnxruntime_consumer_serves_the_int8_graph_with_its_own_calibration(stream, tiny_checkpoint):
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    events = make_events(120, seed=71)
    proc = stream["start"](extra=["--backend", "onnxruntime"])
    produce(bootstrap, topics["input"], [orjson.dumps(e) for e in events])
    by_id, seen = labelled_by_id(read_topic(bootstrap, topics["output"], expect=len(events), settle=1))
    assert max(seen.values()) == 1 and set(by_id) == {e["event_id"] for e in events}
    assert wait_committed(bootstrap, stream["group"], topics["input"], 4, len(events)) == len(events)
    loaded = next(line for line in proc.logs() if line.get("msg") == "model loaded")
    assert loaded["runs"] == "onnxruntime model.int8.onnx"
    assert proc.stop() == 0

    reference = SentimentClassifier(str(tiny_checkpoint), "cpu", cache_size=0, backend="onnxruntime")
    assert reference.temperature == reference.manifest["onnx"]["files"]["int8"]["calibration"]["temperature"]
    verdicts = reference.classify([e["text"] for e in events])
    served = np.array([[by_id[e["event_id"]]["sentiment"]["probs"][name] for name in reference.labels] for e in events])
    labels = [by_id[e["event_id"]]["sentiment"]["label"] for e in events]
    # The graph's own decision rule on what was served. int8 quantizes activations per batch, and the
    # consumer's micro-batches are not the reference's, so probabilities agree closely, not exactly.
    assert labels == [reference.labels[i] for i in decide(served, reference.labels, reference.rule)]
    assert np.abs(served - verdicts.probs).mean() < 0.02
    assert np.mean(np.array(labels) == np.array(verdicts.labels)) >= 0.9
    assert_counters_exact(stream["store"], by_id)
