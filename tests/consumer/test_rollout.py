"""Model rollout for a whole consumer group, on the real broker and Redis with four consumer processes:
the canary tally spans processes and the group promotes once; every process swaps at its next batch;
a label-swapped checkpoint is refused without a canary; restarts never serve a refused version nor
crash-loop on a corrupt `latest`; a rollback cancels a canary."""

from __future__ import annotations

import orjson

from model_runtime.rollout import RolloutStore
from trainer.cli import main as trainer
from trainer.publish import point_latest

from .conftest import assert_counters_exact
from .harness import copy_checkpoint, labelled_by_id, make_events, produce, read_topic, wait_committed, wait_for

V1, V2, V3 = "20261201T100000Z-v1", "20261201T110000Z-v2", "20261201T120000Z-v3"
FLIPPED, CORRUPT = "20261201T130000Z-flipped", "20261201T140000Z-corrupt"
CANARY = ["--reload-interval-s", "0.5", "--canary-share", "1", "--canary-min-events", "90", "--canary-min-agreement", "0.9"]


def _logged(proc, message: str, version: str) -> list[dict]:
    return [line for line in proc.logs() if line.get("msg") == message and line.get("model_version") == version]


def _wait(condition, what: str):
    return wait_for(condition, 90.0, what)


def _metric(proc, series: str) -> float:
    _, metrics = proc.scrape()
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(series + " "))


def test_one_decision_for_the_whole_group(stream, tiny_checkpoint, tmp_path, capsys):
    topics, bootstrap, group = stream["topics"], stream["bootstrap"], stream["group"]
    root = tmp_path / "checkpoints"
    root.mkdir()
    labels = copy_checkpoint(tiny_checkpoint, root / V1, version=V1)["labels"]
    for version in (V2, V3):
        copy_checkpoint(tiny_checkpoint, root / version, version=version)
    # Same weights, outputs read in reverse order: negative and positive trade places.
    copy_checkpoint(tiny_checkpoint, root / FLIPPED, version=FLIPPED, labels=labels[::-1])
    (root / CORRUPT).mkdir()
    (root / CORRUPT / "manifest.json").write_bytes(b"{not json")
    point_latest(root, V1)
    rollout = RolloutStore(stream["client"], stream["store"].layout.prefix, group, "english")
    extra = ["--checkpoint", str(root / "latest"), *CANARY]
    procs = [stream["start"](name, extra=extra) for name in ("c1", "c2", "c3")]
    events: list[dict] = []
    versions: dict[str, set[str]] = {}  # event_id -> the versions that may label it

    def send(n: int, seed: int, *version: str) -> None:
        batch = make_events(n, seed=seed)
        events.extend(batch)
        versions.update({e["event_id"]: set(version) for e in batch})
        produce(bootstrap, topics["input"], [orjson.dumps(e) for e in batch])
        read_topic(bootstrap, topics["output"], expect=len(events))

    # Every member holds partitions before traffic: a late join's rebalance would redeliver (at-least-once).
    _wait(lambda: all(any(line.get("msg") == "partitions assigned" and line.get("partitions") for line in p.logs()) for p in procs),
          "all three consumers assigned")
    send(60, 61, V1)

    # A new version: one process checks and offers it, all three load it and shadow it.
    point_latest(root, V2)
    _wait(lambda: all(_logged(p, "model version loaded for the group's decision; adopted at the next batch", V2)
                      or _logged(p, "model version checked; offered to the group", V2) for p in procs), "v2 loaded everywhere")
    offers = [line for p in procs for line in _logged(p, "model version checked; offered to the group", V2)]
    # Processes that find it new at the same time each check it; one offer starts the canary, the others change nothing.
    assert sorted(line["outcome"] for line in offers)[:2] in (["canary"], ["canary", "none"]), offers
    assert rollout.read().candidate == V2
    seed = 62
    while rollout.read().serving != V2:  # the tally grows with every process's shadowed events
        # v1 serves until the group decides; the batch after the decision in each process is v2's
        send(30, seed, V1, V2)
        seed += 1
        assert seed < 72, "the canary never decided"
    assert all(versions[e["event_id"]] == {V1, V2} for e in events[-30:])
    for e in events[60:-30]:
        versions[e["event_id"]] = {V1}
    decided = [line for p in procs for line in _logged(p, "canary decided", V2)]
    assert len(decided) == 1 and decided[0]["decision"] == "promote"  # the group decided once
    state = rollout.read()
    shadowed = [_metric(p, f'sentiment_canary_shadowed_total{{route="english",version="{V2}"}}') for p in procs]
    assert all(n > 0 for n in shadowed) and sum(shadowed) == state.compared >= 90, (shadowed, state.compared)
    # Every process adopts the decision at its next batch: whatever arrives now is labelled by v2.
    send(90, 80, V2)
    _wait(lambda: all(_logged(p, "model swapped", V2) for p in procs), "all three swapped")

    # A label-swapped checkpoint: refused for the group by the reload check, no canary.
    point_latest(root, FLIPPED)
    _wait(lambda: FLIPPED in rollout.read().refused, "the flipped checkpoint refused")
    assert "labels swapped" in rollout.read().refused[FLIPPED] and rollout.read().candidate == ""
    send(30, 81, V2)
    assert wait_committed(bootstrap, group, topics["input"], 4, len(events)) == len(events)  # nothing to redeliver at the join
    # A fourth process started now serves the group's version, not the refused `latest`.
    procs.append(stream["start"]("c4", extra=extra))
    _wait(lambda: procs[3].scrape()[0] == 200, "the fourth consumer up")
    assert [line["model_version"] for line in procs[3].logs() if line.get("msg") == "model loaded"] == [V2]
    # A corrupt `latest`: a restarted process still starts, and serves the group's version.
    point_latest(root, CORRUPT)
    assert wait_committed(bootstrap, group, topics["input"], 4, len(events)) == len(events)
    assert procs[1].stop() == 0
    procs[1] = stream["start"]("c2-restarted", extra=extra)
    _wait(lambda: procs[1].scrape()[0] == 200, "the restarted consumer up")
    assert [line["model_version"] for line in procs[1].logs() if line.get("msg") == "model loaded"] == [V2]
    send(60, 82, V2)

    # A rollback during a canary wins: the canary of v3 is cancelled and v3 never serves.
    point_latest(root, V3)
    _wait(lambda: rollout.read().candidate == V3, "the canary of v3")
    send(30, 83, V2)
    assert trainer(["rollback", "--output-dir", str(root), "--version", V2]) == 0
    _wait(lambda: rollout.read().candidate == "", "the canary cancelled")
    assert "cancelled" in rollout.read().decision and rollout.read().serving == V2
    send(150, 84, V2)  # more than the canary needed: a canary still counting in any process would have decided

    by_id, seen = labelled_by_id(read_topic(bootstrap, topics["output"], expect=len(events), settle=1))
    assert max(seen.values()) == 1 and set(by_id) == set(versions), "an event was lost or labelled twice"
    wrong = {i: by_id[i]["model"]["version"] for i, allowed in versions.items() if by_id[i]["model"]["version"] not in allowed}
    assert not wrong, f"{len(wrong)} events labelled by a version the group did not serve then"
    assert wait_committed(bootstrap, group, topics["input"], 4, len(events)) == len(events)
    # The operator's view of the same state.
    capsys.readouterr()
    assert trainer(["rollout", "--group-id", group, "--redis-prefix", stream["store"].layout.prefix]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert (shown["serving"], shown["last_good"], shown["candidate"]) == (V2, V1, "")
    assert set(shown["refused"]) == {FLIPPED} and set(shown["served"]) == {V1, V2}
    for proc in procs:
        assert proc.stop() == 0
    assert_counters_exact(stream["store"], by_id)
