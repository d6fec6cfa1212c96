"""The group's rollout state on a real Redis: every transition once, whoever races."""

from __future__ import annotations

import threading
import time

import pytest

from model_runtime.rollout import CanaryRule, RolloutStore

V1, V2, V3 = "20261201T100000Z-v1", "20261201T110000Z-v2", "20261201T120000Z-v3"
RULE = CanaryRule(share=0.5, min_events=100, min_agreement=0.9)


@pytest.fixture
def store(redis_prefix):
    client, prefix = redis_prefix
    return RolloutStore(client, prefix.rstrip(":"), "group-a", "english")


def test_a_first_start_takes_its_version_once(store, redis_prefix):
    assert store.read() is None
    action, state = store.init(V1)
    assert action == "init" and state.serving == V1 and state.served == (V1,) and state.epoch > 1_700_000_000_000
    action, state = store.init(V2)  # a second process starting with another `latest` obeys the first
    assert action == "exists" and state.serving == V1 and state.epoch == store.read().epoch
    other_group = RolloutStore(redis_prefix[0], redis_prefix[1].rstrip(":"), "group-b", "english")
    assert other_group.read() is None  # each group decides alone


def test_a_canary_tally_spans_processes_and_the_group_decides_once(store):
    first = store.init(V1)[1].epoch
    assert store.follow(V2)[0] == "check"
    action, state = store.offer(V2, RULE)
    assert action == "canary" and state.candidate == V2 and state.canary == RULE and state.epoch == first + 1
    # A second process offering the same version changes nothing, nor does its own canary rule.
    assert store.offer(V2, CanaryRule(1.0, 5, 0.1))[1].canary == RULE

    outcomes = []

    def process(n: int) -> None:  # four processes, 30 shadowed events each: 120 in all, decided at the 100th
        for _ in range(n):
            outcomes.append(store.tally(V2, 10, 10)[0])

    threads = [threading.Thread(target=process, args=(3,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("promoted") == 1 and outcomes.count("counting") == 9 and outcomes.count("stale") == 2
    state = store.read()
    assert (state.serving, state.last_good, state.candidate, state.compared, state.agreed) == (V2, V1, "", 100, 100)
    assert state.epoch == first + 2 and "promoted" in state.decision and state.changed_ms > 0


def test_a_disagreeing_canary_is_refused_for_the_group_and_never_offered_again(store):
    store.init(V1)
    store.offer(V2, RULE)
    assert store.tally(V2, 60, 50)[0] == "counting"
    action, state = store.tally(V2, 40, 30)
    assert action == "refused" and state.serving == V1 and state.candidate == ""
    assert "80 of 100" in state.refused[V2]
    assert store.follow(V2)[0] == "refused" and store.offer(V2, RULE)[0] == "refused"


def test_latest_back_at_the_version_in_service_cancels_the_canary(store):
    store.init(V1)
    store.offer(V2, RULE)
    store.tally(V2, 50, 50)
    action, state = store.follow(V1)  # `trainer rollback` pointed latest back at v1
    assert action == "cancelled" and state.serving == V1 and state.candidate == ""
    assert store.tally(V2, 60, 60)[0] == "stale"  # late evidence can't promote it
    assert store.read().serving == V1


def test_latest_at_a_version_served_before_is_a_rollback_without_canary(store):
    store.init(V1)
    assert store.offer(V2, None)[0] == "promoted"  # no canary: in service at once
    store.offer(V3, RULE)
    action, state = store.follow(V1)
    assert action == "rollback" and (state.serving, state.last_good, state.candidate) == (V1, V2, "")


def test_refusing_the_version_in_service_puts_the_last_good_one_back(store):
    store.init(V1)
    assert store.refuse(V1, "operator")[0] == "no_fallback"  # nothing to put back: nothing changes
    assert store.read().refused == {}
    store.offer(V2, None)
    action, state = store.refuse(V2, "bad on the shop's reviews")
    assert action == "fell_back" and state.serving == V1 and state.refused == {V2: "bad on the shop's reviews"}
    assert store.follow(V2)[0] == "refused"


def test_canary_rule_bounds_are_checked():
    for share, events, agreement in ((0.0, 10, 0.5), (1.5, 10, 0.5), (0.5, 0, 0.5), (0.5, 10, 1.5)):
        with pytest.raises(ValueError, match="canary needs"):
            CanaryRule(share, events, agreement)


def test_after_a_reset_the_epoch_never_repeats_and_nothing_is_refused_without_a_state(store):
    before = store.init(V1)[1].epoch
    store.reset()
    assert store.refuse(V2, "operator") == ("no_state", None) and store.read() is None
    time.sleep(0.002)
    assert store.init(V2)[1].epoch > before  # a process holding the old epoch sees the change
