"""The canary's decision and its place in hot reload (fakes; the real stream is in test_reload.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import consumer.model.reload as reload_module
from consumer.model.canary import Canary, CanaryPolicy
from consumer.model.reload import ModelReloader

from .test_reload_checks import Fake


class Labelling(Fake):
    """A fake candidate that labels by a rule, and counts the texts it saw."""

    def __init__(self, version, rule, fail=False):
        super().__init__(version)
        self.rule, self.fail, self.seen = rule, fail, 0

    def classify(self, texts):
        if self.fail:
            raise RuntimeError("CUDA error: device-side assert")
        self.seen += len(texts)
        return SimpleNamespace(labels=[self.rule(t) for t in texts])


def test_policy_bounds_are_checked():
    for share, events, agreement in ((0, 10, 0.8), (1.5, 10, 0.8), (0.1, 0, 0.8), (0.1, 10, 1.2)):
        with pytest.raises(ValueError, match="canary needs"):
            CanaryPolicy(share, events, agreement)


def test_canary_samples_its_share_and_decides_on_agreement():
    texts = [f"text {i}" for i in range(100)]
    same = Canary(Labelling("v2", lambda t: "positive"), CanaryPolicy(0.25, 200, 0.8))
    decisions = [same.observe(texts, ["positive"] * 100) for _ in range(10)]
    assert decisions[0] is None and decisions[-1] == "promote"
    assert 0.15 < same.candidate.seen / 1000 < 0.35  # about its share of the traffic
    assert same.agreement == 1.0 and same.share_difference() == {"positive": 0.0}

    # Disagrees on every text the running model called negative (40%): agreement 60% < 80%.
    active = ["negative" if i % 5 < 2 else "positive" for i in range(100)]
    other = Canary(Labelling("v3", lambda t: "positive"), CanaryPolicy(1.0, 100, 0.8))
    assert other.observe(texts, active) == "refuse"
    assert other.agreement == pytest.approx(0.6)
    assert other.share_difference() == {"negative": pytest.approx(-0.4), "positive": pytest.approx(0.4)}
    # Failed events (label None) are not compared.
    assert Canary(Labelling("v4", str), CanaryPolicy(1.0, 1, 0.5)).observe(["a"], [None]) is None


def test_reloader_promotes_a_canary_at_the_next_batch_and_refuses_one_that_disagrees(monkeypatch):
    models = {"english": Fake("v1")}
    swaps, refusals, updates = [], [], []
    candidates = {"v2": Labelling("v2", lambda t: "positive"), "v3": Labelling("v3", lambda t: "negative"),
                  "v4": Labelling("v4", lambda t: "positive", fail=True)}
    reloader = ModelReloader(models, {"english": "p"}, lambda path: candidates[current["version"]], 1.0,
                             lambda route, old, new: swaps.append(new.version),
                             lambda route, version, reason: refusals.append((version, reason)),
                             CanaryPolicy(1.0, 20, 0.9), lambda route, canary, decision: updates.append(decision))
    current = {"version": "v2"}
    monkeypatch.setattr(reload_module, "read_manifest", lambda path: dict(current))
    batch = ["great"] * 10

    reloader.check("english")
    reloader.adopt()
    assert models["english"].version == "v1"  # shadowing, not serving
    reloader.observe("english", batch, ["positive"] * 10)
    reloader.check("english")  # the version in shadow is not loaded again
    reloader.observe("english", batch, ["positive"] * 10)
    assert updates == [None, "promote"] and models["english"].version == "v1"
    reloader.adopt()
    assert swaps == ["v2"] and models["english"].version == "v2"

    current["version"] = "v3"
    reloader.check("english")
    reloader.observe("english", batch * 2, ["positive"] * 20)
    reloader.adopt()
    assert models["english"].version == "v2" and refusals[-1][0] == "v3"
    assert "agreed with the running model on 0.0% of 20 events" in refusals[-1][1]
    reloader.check("english")  # refused once: not loaded again
    assert candidates["v3"].seen == 20

    current["version"] = "v4"
    reloader.check("english")
    reloader.observe("english", batch, ["positive"] * 10)
    assert refusals[-1][0] == "v4" and "failed in shadow: RuntimeError" in refusals[-1][1]
    assert models["english"].version == "v2" and swaps == ["v2"]
