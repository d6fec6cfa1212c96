"""`python -m trainer rollout`: the operator's view of a group's rollout state, refusals and reset (real Redis)."""

from __future__ import annotations

import orjson

from model_runtime.rollout import RolloutStore
from trainer.cli import main

V1, V2 = "20261201T100000Z-v1", "20261201T110000Z-v2"


def _rollout(capsys, prefix: str, *args: str) -> tuple[int, dict | str]:
    capsys.readouterr()
    code = main(["rollout", "--group-id", "shop", "--redis-prefix", prefix, *args])
    captured = capsys.readouterr()
    return code, orjson.loads(captured.out) if code == 0 else captured.err


def test_show_refuse_and_reset(redis_prefix, capsys):
    client, prefix = redis_prefix
    prefix = prefix.rstrip(":")
    code, err = _rollout(capsys, prefix)
    assert code == 2 and "no rollout state for group 'shop'" in err and "Traceback" not in err
    store = RolloutStore(client, prefix, "shop", "english")
    store.init(V1)
    store.offer(V2, None)

    code, shown = _rollout(capsys, prefix)
    assert code == 0 and (shown["serving"], shown["last_good"], shown["refused"]) == (V2, V1, {})
    code, shown = _rollout(capsys, prefix, "--refuse", V2, "--reason", "bad on returns")
    assert code == 0 and shown["outcome"] == "fell_back" and shown["serving"] == V1 and shown["refused"] == {V2: "bad on returns"}
    code, err = _rollout(capsys, prefix, "--refuse", V1)  # nothing left to put back
    assert code == 2 and "no last good version" in err and store.read().serving == V1
    code, err = _rollout(capsys, prefix, "--refuse", V1, "--reason", "x" * 301)
    assert code == 2 and "--reason must be 1 to 300 characters" in err

    code, shown = _rollout(capsys, prefix, "--reset")
    assert code == 0 and shown["forgotten"]["serving"] == V1 and store.read() is None
