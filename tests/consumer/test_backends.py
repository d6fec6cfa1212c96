"""The onnxruntime backend on the real broker and Redis: the labels torch would give, counters exact."""

from __future__ import annotations

import numpy as np
import orjson

from consumer.model.classifier import SentimentClassifier

from .conftest import assert_counters_exact
from .harness import labelled_by_id, make_events, produce, read_topic, wait_committed


def test_onnxruntime_consumer_labels_a_stream_as_torch_does(stream, tiny_checkpoint):
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    events = make_events(120, seed=71)
    proc = stream["start"](extra=["--backend", "onnxruntime"])
    produce(bootstrap, topics["input"], [orjson.dumps(e) for e in events])
    by_id, seen = labelled_by_id(read_topic(bootstrap, topics["output"], expect=len(events), settle=1))
    assert max(seen.values()) == 1 and set(by_id) == {e["event_id"] for e in events}
    assert wait_committed(bootstrap, stream["group"], topics["input"], 4, len(events)) == len(events)
    loaded = next(line for line in proc.logs() if line.get("msg") == "model loaded")
    assert loaded["runs"] == "onnxruntime model.onnx"
    assert proc.stop() == 0

    reference = SentimentClassifier(str(tiny_checkpoint), "cpu", cache_size=0, backend="torch")
    verdicts = reference.classify([e["text"] for e in events])
    served = np.array([[by_id[e["event_id"]]["sentiment"]["probs"][name] for name in reference.labels] for e in events])
    assert [by_id[e["event_id"]]["sentiment"]["label"] for e in events] == verdicts.labels
    assert np.abs(served - verdicts.probs).max() < 1e-4
    assert_counters_exact(stream["store"], by_id)
