"""Hot reload against the real broker and Redis, one process: swap mid-stream, refuse a broken checkpoint, roll back,
canary. Several processes of one group: test_rollout.py."""

from __future__ import annotations

import time

import orjson

from schemas.checkpoint import ONNX_FILES, WEIGHTS_FILE
from trainer.publish import point_latest, rollback

from .conftest import assert_counters_exact
from .harness import copy_checkpoint, labelled_by_id, make_events, produce, read_topic, wait_committed

V1, V2, BROKEN = "20261201T100000Z-v1", "20261201T110000Z-v2", "20261201T120000Z-broken"
FLIPPED = "20261201T130000Z-flipped"


def _wait_logged(proc, message, count=1, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in proc.logs() if line.get("msg") == message]
        if len(lines) >= count:
            return lines[-1]
        time.sleep(0.2)
    raise AssertionError(f"consumer never logged {message!r} {count} time(s)")


def test_new_version_swaps_in_mid_stream_broken_one_refused_rollback_followed(stream, tiny_checkpoint, tmp_path):
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    root = tmp_path / "checkpoints"
    root.mkdir()
    for version in (V1, V2, BROKEN):
        copy_checkpoint(tiny_checkpoint, root / version, version=version)
    for name in (WEIGHTS_FILE, *ONNX_FILES.values()):  # whichever backend runs, its weights are corrupt
        (root / BROKEN / name).write_bytes(b"not a model file")
    point_latest(root, V1)
    proc = stream["start"](extra=["--checkpoint", str(root / "latest"), "--reload-interval-s", "0.5"])
    events: list[dict] = []
    versions: dict[str, str] = {}  # event_id -> the version that must label it

    def send(n: int, seed: int, version: str) -> None:
        batch = make_events(n, seed=seed)
        events.extend(batch)
        versions.update({e["event_id"]: version for e in batch})
        produce(bootstrap, topics["input"], [orjson.dumps(e) for e in batch])
        read_topic(bootstrap, topics["output"], expect=len(events))

    send(40, 41, V1)
    point_latest(root, V2)
    offered = _wait_logged(proc, "model version checked; offered to the group")
    assert (offered["model_version"], offered["outcome"]) == (V2, "promoted")  # no canary: in service for the group
    send(40, 42, V2)  # the first batch after loading adopts v2: every event of it is labelled by v2
    swapped = _wait_logged(proc, "model swapped")
    assert (swapped["from_version"], swapped["model_version"]) == (V1, V2)

    point_latest(root, BROKEN)
    refused = _wait_logged(proc, "new checkpoint refused; the running model keeps serving")
    assert refused["model_version"] == BROKEN and "does not match its sha256" in refused["reason"]
    send(40, 43, V2)  # still served by v2

    assert rollback(root, V1) == (BROKEN, V1)
    loaded = _wait_logged(proc, "model version loaded for the group's decision; adopted at the next batch")
    assert (loaded["model_version"], loaded["role"]) == (V1, "in service")  # served before: a rollback, no canary
    send(40, 44, V1)

    by_id, seen = labelled_by_id(read_topic(bootstrap, topics["output"], expect=len(events), settle=1))
    assert max(seen.values()) == 1 and set(by_id) == set(versions), "an event was lost or labelled twice"
    assert {i: by_id[i]["model"]["version"] for i in versions} == versions
    assert wait_committed(bootstrap, stream["group"], topics["input"], 4, len(events)) == len(events)
    status, metrics = proc.scrape()
    assert 'sentiment_model_reloads_total{outcome="swapped",route="english"} 2.0' in metrics
    assert 'sentiment_model_reloads_total{outcome="refused",route="english"} 1.0' in metrics
    info = [line for line in metrics.splitlines() if line.startswith("sentiment_model_info{")]
    assert len(info) == 1 and f'version="{V1}"' in info[0]  # the active version only
    assert proc.stop() == 0
    assert_counters_exact(stream["store"], by_id)


def test_canary_shadows_then_promotes_and_a_label_swapped_candidate_is_refused_without_one(stream, tiny_checkpoint, tmp_path):
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    root = tmp_path / "checkpoints"
    root.mkdir()
    labels = copy_checkpoint(tiny_checkpoint, root / V1, version=V1)["labels"]
    copy_checkpoint(tiny_checkpoint, root / V2, version=V2)
    # Same weights, outputs read in reverse order: negative and positive trade places.
    copy_checkpoint(tiny_checkpoint, root / FLIPPED, version=FLIPPED, labels=labels[::-1])
    point_latest(root, V1)
    proc = stream["start"](extra=["--checkpoint", str(root / "latest"), "--reload-interval-s", "0.5", "--canary-share", "1",
                                  "--canary-min-events", "60", "--canary-min-agreement", "0.9"])
    events: list[dict] = []

    def send(n: int, seed: int) -> None:
        batch = make_events(n, seed=seed)
        events.extend(batch)
        produce(bootstrap, topics["input"], [orjson.dumps(e) for e in batch])
        read_topic(bootstrap, topics["output"], expect=len(events))

    send(30, 51)
    point_latest(root, V2)
    offered = _wait_logged(proc, "model version checked; offered to the group")
    assert (offered["model_version"], offered["outcome"]) == (V2, "canary")
    send(30, 52)  # shadowed by v2, served by v1
    send(40, 53)  # the canary reaches 60 events: promoted
    decided = _wait_logged(proc, "canary decided")
    assert (decided["model_version"], decided["decision"], decided["agreement"]) == (V2, "promote", 1.0)
    send(30, 54)  # promoted at the batch before: v2 takes over at the start of the next one, and serves all of these
    _wait_logged(proc, "model swapped")

    point_latest(root, FLIPPED)
    refused = _wait_logged(proc, "new checkpoint refused; the running model keeps serving")
    assert refused["model_version"] == FLIPPED and "labels swapped" in refused["reason"]  # by its checks: no canary ran
    send(70, 55)
    send(20, 56)

    by_id, seen = labelled_by_id(read_topic(bootstrap, topics["output"], expect=len(events), settle=1))
    assert max(seen.values()) == 1 and set(by_id) == {e["event_id"] for e in events}, "an event was lost or labelled twice"
    served = [by_id[e["event_id"]]["model"]["version"] for e in events]
    assert served[:60] == [V1] * 60 and served[-120:] == [V2] * 120  # the shadowed versions served nothing early
    assert set(served) == {V1, V2}  # the refused canary served nothing
    status, metrics = proc.scrape()
    assert f'sentiment_canary_agreement{{route="english",version="{V2}"}} 1.0' in metrics
    assert f'version="{FLIPPED}"' not in metrics
    assert proc.stop() == 0
    assert_counters_exact(stream["store"], by_id)
