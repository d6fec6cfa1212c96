"""The resident classifier on a real (tiny) checkpoint: cache, dedupe, truncation, int8 served with its own
calibration; the cache on a stand-in backend."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import orjson
import pytest

from consumer.model import classifier as classifier_module
from consumer.model.classifier import SentimentClassifier
from model_runtime.fitted import FITTED_FIELDS
from schemas.checkpoint import MANIFEST_FILE, read_manifest


def test_cache_dedupe_and_truncation(tiny_checkpoint):
    model = SentimentClassifier(str(tiny_checkpoint), "cpu", cache_size=100)
    long_text = "terrible battery " * 200
    first = model.classify(["Great phone!", "Great phone!", "It broke.", long_text])
    assert first.forwarded == 3 and first.cache_hits == 0  # the repeated text shares one forward pass
    assert first.truncated == 1
    assert first.labels[0] == first.labels[1] and np.allclose(first.probs[0], first.probs[1])
    again = model.classify(["Great phone!", "It broke."])
    assert again.cache_hits == 2 and again.forwarded == 0
    assert np.allclose(again.probs[1], first.probs[2])
    assert np.allclose(first.probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("quantize, atol", [("none", 1e-4), ("int8", 0.05)])
def test_sub_batch_size_does_not_change_verdicts(tiny_checkpoint, quantize, atol):
    # int8 quantizes activations with one scale per batch, so a text's probabilities depend a little on
    # the texts it shares a batch with (2.6 points at most here); fp32 does not.
    texts = [f"review number {i}: " + "good " * (i % 17) + "bad " * (i % 5) for i in range(40)]
    small = SentimentClassifier(str(tiny_checkpoint), "cpu", cache_size=0, inference_batch_size=4, quantize=quantize).classify(texts)
    whole = SentimentClassifier(str(tiny_checkpoint), "cpu", cache_size=0, inference_batch_size=64, quantize=quantize).classify(texts)
    assert np.allclose(small.probs, whole.probs, atol=atol)
    assert small.labels == whole.labels


def test_int8_quantization_stays_close(tiny_checkpoint):
    texts = ["I love it", "awful, broke on day one", "it is a cable", "fast shipping, great seller"]
    fp32 = SentimentClassifier(str(tiny_checkpoint), "cpu", cache_size=0, quantize="none").classify(texts)
    int8 = SentimentClassifier(str(tiny_checkpoint), "cpu", cache_size=0, quantize="int8").classify(texts)
    assert int8.probs.shape == fp32.probs.shape
    assert np.abs(int8.probs - fp32.probs).max() < 0.15


def _served_with(model: SentimentClassifier) -> tuple:
    return model.temperature, model.rule, {source: rates.mean_probs.tolist() for source, rates in model.rates.items()}


def test_the_int8_graph_is_served_by_default_with_its_own_calibration(tiny_checkpoint):
    manifest = read_manifest(tiny_checkpoint)
    graphs = manifest["onnx"]["files"]
    for quantize, graph in (("auto", "int8"), ("none", "none")):
        model = SentimentClassifier(str(tiny_checkpoint), "cpu", cache_size=0, backend="onnxruntime", quantize=quantize)
        entry = graphs[graph]
        assert model.runner.detail == f"onnxruntime {entry['file']}"
        assert _served_with(model) == (entry["calibration"]["temperature"], entry["decision"],
                                       {"validation": entry["share_estimation"]["mean_probs"]})
    torch = SentimentClassifier(str(tiny_checkpoint), "cpu", cache_size=0, backend="torch")
    assert torch.runner.detail == "torch fp32"  # auto is none on torch, served with the top-level fit
    assert _served_with(torch) == (manifest["calibration"]["temperature"], manifest["decision"],
                                   {"validation": manifest["share_estimation"]["mean_probs"]})


def test_a_graph_without_its_own_calibration_is_served_with_the_checkpoints_and_says_so(tiny_checkpoint, tmp_path, caplog):
    old = shutil.copytree(tiny_checkpoint.resolve(), tmp_path / "old")
    manifest = read_manifest(old)
    for entry in manifest["onnx"]["files"].values():  # as published before graphs carried their own
        for key in (*FITTED_FIELDS, "metrics"):
            entry.pop(key, None)
    (old / MANIFEST_FILE).write_bytes(orjson.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        model = SentimentClassifier(str(old), "cpu", cache_size=0, backend="onnxruntime")
    assert model.runner.detail == "onnxruntime model.int8.onnx"
    assert _served_with(model) == (manifest["calibration"]["temperature"], manifest["decision"],
                                   {"validation": manifest["share_estimation"]["mean_probs"]})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "model.int8.onnx (listed in the manifest) has no calibration of its own" in warnings[0]
    assert model.classify(["great value"]).probs.shape == (1, 3)


class CaseSensitiveRunner:
    """A stand-in backend: P(positive) is the share of upper-case letters, so case changes the answer,
    as it does for the cased multilingual model."""

    labels = ["negative", "positive"]
    manifest = fitted = {"version": "v-fake", "name": "fake", "decision": {"kind": "argmax"}}
    max_length = 32
    device = "cpu"

    def __init__(self) -> None:
        self.forwarded: list[str] = []

    def forward(self, texts: list[str]) -> tuple[np.ndarray, int]:
        self.forwarded.extend(texts)
        upper = np.array([sum(c.isupper() for c in t) / max(1, sum(c.isalpha() for c in t)) for t in texts], dtype=np.float32)
        return np.stack([1 - upper, upper], axis=1), 0


@pytest.fixture
def case_sensitive(monkeypatch):
    runner = CaseSensitiveRunner()
    monkeypatch.setattr(classifier_module, "open_runner", lambda *args, **kwargs: runner)
    return SentimentClassifier("unused", "cpu", cache_size=100), runner


def test_cache_keys_on_the_exact_text_so_each_case_keeps_its_own_probabilities(case_sensitive):
    model, runner = case_sensitive
    first = model.classify(["GOOD", "good", "good"])
    assert runner.forwarded == ["GOOD", "good"] and first.forwarded == 2  # only the exact repeat shares a pass
    again = model.classify(["good", "GOOD"])
    assert again.cache_hits == 2 and again.forwarded == 0
    assert again.probs.tolist() == [[1, 0], [0, 1]] and again.labels == ["negative", "positive"]


def test_a_cached_row_owns_its_data_so_it_does_not_keep_the_batch_alive(case_sensitive):
    model, _ = case_sensitive
    model.classify(["good", "GOOD", "Good"])
    cached = model.cache.get(model.cache.key("good"))
    assert cached.base is None and cached.flags.owndata and cached.tolist() == [1, 0]
