"""The checks a new checkpoint passes before it may replace the running model (fakes)."""

from __future__ import annotations

import numpy as np
import pytest

import consumer.model.reload as reload_module
from consumer.model.reload import CheckpointRefused, ModelReloader, check_candidate


class Fake:
    def __init__(self, version="v1", labels=("negative", "neutral", "positive"), probs=None):
        self.version, self.labels, self._probs = version, list(labels), probs

    def forward(self, texts):
        if self._probs is not None:
            return self._probs(len(texts)), 0
        return np.full((len(texts), len(self.labels)), 1 / len(self.labels), dtype=np.float32), 0


def test_labels_must_match_the_running_model():
    with pytest.raises(CheckpointRefused, match="labels"):
        check_candidate(Fake(labels=("negative", "positive")), Fake())


@pytest.mark.parametrize("probs", [lambda n: np.full((n, 3), np.nan), lambda n: np.zeros((n, 3)), lambda n: np.ones((n, 2)) / 2])
def test_smoke_batch_must_give_distributions(probs):
    with pytest.raises(CheckpointRefused, match="smoke batch"):
        check_candidate(Fake(probs=probs), Fake())


def test_a_checked_candidate_waits_until_the_next_batch_and_a_refusal_is_said_once(monkeypatch):
    models = {"english": Fake("v1")}
    swaps, refusals = [], []
    candidates = {"good": Fake("v2"), "bad": Fake("v3", labels=("negative", "positive"))}
    reloader = ModelReloader(models, {"english": "good"}, lambda path: candidates[path], 1.0,
                             lambda route, old, new: swaps.append((route, old.version, new.version)),
                             lambda route, version, reason: refusals.append((route, version, reason)))
    manifests = iter([{"version": "v2"}, {"version": "v3"}, {"version": "v3"}])
    monkeypatch.setattr(reload_module, "read_manifest", lambda path: next(manifests))
    reloader.check("english")
    assert models["english"].version == "v1" and not swaps  # loaded, not yet adopted
    reloader.adopt()
    assert models["english"].version == "v2" and swaps == [("english", "v1", "v2")]
    reloader.paths["english"] = "bad"
    reloader.check("english")
    reloader.check("english")
    assert [version for _, version, _ in refusals] == ["v3"] and models["english"].version == "v2"
