"""Hot reload under the group's rollout state: checks, canary across processes, rollback,
start-up (fake models, real Redis). The real stream with consumer processes is test_rollout.py."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from consumer.errors import ConfigError
from consumer.model.reload import CheckpointRefused, ModelReloader, check_alone, check_candidate, serve_at_start, smoke_texts
from model_runtime.rollout import CanaryRule, RolloutStore
from schemas.checkpoint import CheckpointError

LABELS = ("negative", "neutral", "positive")


class Fake:
    """A model that reads the smoke texts right (or, `swapped`, the wrong way round) and labels
    by `rule`; it counts what it classified."""

    def __init__(self, version, labels=LABELS, probs=None, swapped=False, rule=lambda text: "positive", fail=False):
        self.version, self.labels, self._probs, self.swapped, self.rule, self.fail = version, list(labels), probs, swapped, rule, fail
        self.seen = 0

    def forward(self, texts):
        if self._probs is not None:
            return self._probs(len(texts)), 0
        polarity = dict(smoke_texts("multilingual"))
        probs = np.full((len(texts), len(self.labels)), 0.1, dtype=np.float32)
        for row, text in zip(probs, texts):
            positive = (polarity.get(text) == "positive") != self.swapped
            row[self.labels.index("positive" if positive else "negative")] = 1.0 - 0.1 * (len(self.labels) - 1)
        return probs, 0

    def classify(self, texts):
        if self.fail:
            raise RuntimeError("CUDA error: device-side assert")
        self.seen += len(texts)
        return SimpleNamespace(labels=[self.rule(t) for t in texts])


def test_labels_must_match_the_running_model():
    with pytest.raises(CheckpointRefused, match="labels"):
        check_candidate(Fake("v2", labels=("negative", "positive")), Fake("v1"), "english")


@pytest.mark.parametrize("probs", [lambda n: np.full((n, 3), np.nan), lambda n: np.zeros((n, 3)), lambda n: np.ones((n, 2)) / 2])
def test_smoke_batch_must_give_distributions(probs):
    with pytest.raises(CheckpointRefused, match="smoke batch"):
        check_candidate(Fake("v2", probs=probs), Fake("v1"), "english")


@pytest.mark.parametrize("route", ["english", "multilingual"])
def test_smoke_texts_must_keep_their_polarity(route):
    check_alone(Fake("v2"), route)
    with pytest.raises(CheckpointRefused, match="read the other way round.*labels swapped"):
        check_alone(Fake("v2", swapped=True), route)
    # One text of four read wrong is tolerated (a weak model); half is not.
    texts = [text for text, _ in smoke_texts(route)]
    one_wrong = Fake("v3")
    one_wrong.forward = lambda batch: (_flip(Fake("v3").forward(batch)[0], batch, texts[: len(texts) // 4]), 0)
    check_alone(one_wrong, route)
    half_wrong = Fake("v4")
    half_wrong.forward = lambda batch: (_flip(Fake("v4").forward(batch)[0], batch, texts[: len(texts) // 2]), 0)
    with pytest.raises(CheckpointRefused):
        check_alone(half_wrong, route)


def _flip(probs, batch, flipped):
    for row, text in zip(probs, batch):
        if text in flipped:
            row[[0, 2]] = row[[2, 0]]
    return probs


class Group:
    """Version directories on disk, `latest`, a real rollout store, and processes of one group."""

    def __init__(self, tmp_path: Path, redis_prefix, models: dict[str, Fake]):
        self.root = tmp_path / "checkpoints"
        self.root.mkdir()
        self.models = models
        self.loads: list[str] = []
        for version in models:
            (self.root / version).mkdir()
            (self.root / version / "manifest.json").write_bytes(orjson.dumps({
                "format_version": 1, "version": version, "created_at": "2026-12-01T00:00:00Z", "base_model": "fake",
                "labels": list(LABELS), "max_length": 32, "decision": {"kind": "argmax"}, "metrics": {}, "data": {},
                "hyperparameters": {}, "training": {}}))
        self.client, prefix = redis_prefix
        self.store = RolloutStore(self.client, prefix.rstrip(":"), "group", "english")
        self.events: list[tuple] = []

    def point(self, version: str) -> None:
        link = self.root / ".latest-tmp"
        os.symlink(version, link)
        os.replace(link, self.root / "latest")

    def load(self, directory: str):
        version = Path(directory).name
        self.loads.append(version)
        if self.models[version] is None:
            raise CheckpointError(f"{directory}/model.safetensors does not match its sha256 in the manifest")
        return self.models[version]

    def process(self, name: str, canary: CanaryRule | None = None, path: str = ""):
        path = path or str(self.root / "latest")
        model, state = serve_at_start(self.store, path, self.load, "english",
                                      lambda route, in_service, reason: self.events.append((name, "fell_back", in_service)))
        served = {"english": model}
        reloader = ModelReloader(served, {"english": path}, {"english": self.store}, {"english": state}, self.load, 1.0, canary,
                                 lambda route, old, new: self.events.append((name, "swap", old.version, new.version)),
                                 lambda route, version, reason: self.events.append((name, "refused", version, reason)),
                                 lambda route, canary, state, action, shadowed: self.events.append((name, "tally", action)))
        return SimpleNamespace(served=served, reloader=reloader)


def test_the_group_decides_a_canary_once_and_every_process_swaps_at_its_next_batch(tmp_path, redis_prefix):
    group = Group(tmp_path, redis_prefix, {"v1": Fake("v1"), "v2": Fake("v2"), "v3": Fake("v3"),
                                           "v4": Fake("v4", swapped=True), "v5": Fake("v5", fail=True)})
    group.point("v1")
    rule = CanaryRule(1.0, 20, 0.9)
    a, b = group.process("a", rule), group.process("b", rule)
    assert a.served["english"].version == b.served["english"].version == "v1"
    batch, labels = ["great"] * 10, ["positive"] * 10

    group.point("v2")
    a.reloader.follow("english")  # a checks v2 and offers it: the group's canary
    b.reloader.follow("english")  # b sees the candidate: loads it, no second check or offer
    assert group.store.read().candidate == "v2" and group.loads.count("v2") == 2
    for p in (a, b):
        p.reloader.adopt()
    a.reloader.observe("english", batch, labels)
    b.reloader.observe("english", batch, labels)  # b's events complete the group's 20
    assert [e for e in group.events if e[1] == "tally"] == [("a", "tally", "counting"), ("b", "tally", "promoted")]
    assert a.served["english"].version == "v1"  # a learns the decision at its next batch
    a.reloader.adopt()
    assert a.served["english"].version == b.served["english"].version == "v2"
    assert [e for e in group.events if e[1] == "swap"] == [("b", "swap", "v1", "v2"), ("a", "swap", "v1", "v2")]

    # Rollback during a canary: latest back at v2 cancels v3's canary in every process.
    group.point("v3")
    a.reloader.follow("english")
    b.reloader.follow("english")
    for p in (a, b):
        p.reloader.adopt()
    a.reloader.observe("english", batch, labels)
    group.point("v2")
    b.reloader.follow("english")
    assert group.store.read().candidate == "" and "cancelled" in group.store.read().decision
    seen = group.models["v3"].seen
    for p in (a, b):
        p.reloader.adopt()
        p.reloader.observe("english", batch, labels)
    assert group.models["v3"].seen == seen and group.store.read().serving == "v2"

    # A label-swapped checkpoint is refused for the group by its checks, no canary needed.
    group.point("v4")
    a.reloader.follow("english")
    b.reloader.follow("english")
    state = group.store.read()
    assert "labels swapped" in state.refused["v4"] and state.candidate == "" and group.loads.count("v4") == 1
    assert [e[:3] for e in group.events if e[1] == "refused"] == [("a", "refused", "v4")]

    # A candidate failing in shadow is refused for the group.
    group.point("v5")
    a.reloader.follow("english")
    a.reloader.adopt()
    a.reloader.observe("english", batch, labels)
    assert "failed in shadow: RuntimeError" in group.store.read().refused["v5"]
    assert a.served["english"].version == b.served["english"].version == "v2"


def test_a_restart_serves_the_groups_version_never_a_refused_or_corrupt_latest(tmp_path, redis_prefix):
    group = Group(tmp_path, redis_prefix, {"v1": Fake("v1"), "v2": Fake("v2"), "v3": Fake("v3", swapped=True), "v4": None})
    group.point("v1")
    first = group.process("first")
    group.point("v2")
    first.reloader.follow("english")  # no canary: v2 in service
    group.point("v3")
    first.reloader.follow("english")  # refused for the group
    assert group.process("restarted").served["english"].version == "v2"
    (group.root / "latest").unlink()
    (group.root / "latest").symlink_to("no-such-version")  # corrupt latest: never read at start-up
    assert group.process("restarted again").served["english"].version == "v2"
    # The version in service can't be loaded here: the last good one serves, said loudly.
    group.models["v2"] = None
    assert group.process("fallback").served["english"].version == "v1"
    assert ("fallback", "fell_back", "v2") in group.events
    group.models["v1"] = None
    with pytest.raises(ConfigError, match=r"version in service \(v2\) and its last good version \(v1\) can't be served"):
        group.process("nothing left")


def test_a_first_start_checks_latest(tmp_path, redis_prefix):
    group = Group(tmp_path, redis_prefix, {"v1": Fake("v1", swapped=True)})
    group.point("v1")
    with pytest.raises(ConfigError, match="labels swapped"):
        group.process("first")
    assert group.store.read() is None
    # A model pass that raises (a device failing now) is no verdict on the checkpoint: the process starts,
    # and the pipeline's model-failure handling takes over.
    group.models["v1"] = Fake("v1", probs=lambda n: (_ for _ in ()).throw(RuntimeError("CUDA error: launch failure")))
    assert group.process("second").served["english"].version == "v1" and group.store.read().serving == "v1"
    # A pass that does not return (a hung device) does not hold the start either.
    release = threading.Event()
    group.models["v1"] = Fake("v1", probs=lambda n: release.wait(30) and np.full((n, 3), 1 / 3))
    started = time.monotonic()
    model, _ = serve_at_start(group.store, str(group.root / "latest"), group.load, "english", lambda *a: None, smoke_timeout_s=0.5)
    assert model.version == "v1" and time.monotonic() - started < 5
    release.set()


def test_a_host_whose_latest_lags_never_drags_the_group_back_and_a_reset_stops_a_canary(tmp_path, redis_prefix):
    group = Group(tmp_path, redis_prefix, {"v1": Fake("v1"), "v2": Fake("v2"), "v3": Fake("v3")})
    group.point("v1")
    lagging = tmp_path / "lagging"  # another host's view of the same directory, its `latest` still at v1
    lagging.mkdir()
    for version in group.models:
        (lagging / version).symlink_to(group.root / version)
    (lagging / "latest").symlink_to("v1")
    a, b = group.process("a"), group.process("b", path=str(lagging / "latest"))
    group.point("v2")
    a.reloader.follow("english")  # no canary: v2 in service
    b.reloader.follow("english")  # b's latest has not moved: it does not act on it
    b.reloader.sync("english")  # (the reload thread) loads what the group serves
    b.reloader.adopt()
    assert group.store.read().serving == "v2" and b.served["english"].version == "v2"

    group.point("v3")
    a.reloader.follow("english")
    assert group.store.read().serving == "v3"
    rule = CanaryRule(1.0, 100, 0.9)
    c = group.process("c", rule)
    group.store.reset()
    group.store.init("v3")
    group.store.offer("v1", rule)  # a canary the group runs ...
    c.reloader.sync("english")
    c.reloader.adopt()
    group.store.reset()  # ... forgotten by an operator while c shadows it
    c.reloader.observe("english", ["great"] * 10, ["positive"] * 10)
    c.reloader.observe("english", ["great"] * 10, ["positive"] * 10)
    assert group.models["v1"].seen == 10 and c.served["english"].version == "v3"  # the canary stopped, labelling went on
