"""The resident classifier on a real (tiny) checkpoint: cache, dedupe, truncation, int8; the cache on a stand-in backend."""

from __future__ import annotations

import numpy as np
import pytest

from consumer.model import classifier as classifier_module
from consumer.model.classifier import SentimentClassifier


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


def test_sub_batch_size_does_not_change_verdicts(tiny_checkpoint):
    texts = [f"review number {i}: " + "good " * (i % 17) + "bad " * (i % 5) for i in range(40)]
    small = SentimentClassifier(str(tiny_checkpoint), "cpu", cache_size=0, inference_batch_size=4).classify(texts)
    whole = SentimentClassifier(str(tiny_checkpoint), "cpu", cache_size=0, inference_batch_size=64).classify(texts)
    assert np.allclose(small.probs, whole.probs, atol=1e-4)


def test_int8_quantization_stays_close(tiny_checkpoint):
    texts = ["I love it", "awful, broke on day one", "it is a cable", "fast shipping, great seller"]
    fp32 = SentimentClassifier(str(tiny_checkpoint), "cpu", cache_size=0).classify(texts)
    int8 = SentimentClassifier(str(tiny_checkpoint), "cpu", cache_size=0, quantize="int8").classify(texts)
    assert int8.probs.shape == fp32.probs.shape
    assert np.abs(int8.probs - fp32.probs).max() < 0.15


class CaseSensitiveRunner:
    """A stand-in backend: P(positive) is the share of upper-case letters, so case changes the answer,
    as it does for the cased multilingual model."""

    labels = ["negative", "positive"]
    manifest = {"version": "v-fake", "name": "fake", "decision": {"kind": "argmax"}}
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
