"""Waits of the consumer loop, against the real broker and Redis: every exit from a wait resumes what it
paused, a hung model is a clean fatal stop, and one poison event at low traffic is dead-lettered."""

from __future__ import annotations

import orjson
from confluent_kafka import Producer

from .conftest import assert_counters_exact
from .harness import labelled_by_id, make_events, read_topic, wait_committed, wait_for


def _produce_round_robin(bootstrap: str, topic: str, events: list[dict], partitions: int = 4) -> None:
    """Every partition gets events, so a batch polled at once spans them all."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i, event in enumerate(events):
        producer.produce(topic, value=orjson.dumps(event), partition=i % partitions)
    assert producer.flush(30) == 0


def _logged(proc, message: str) -> bool:
    return any(line.get("msg") == message for line in proc.logs())


def test_a_rebalance_during_a_model_failure_wait_resumes_the_kept_partitions(stream, tmp_path):
    """The wait for a failing model pauses the whole assignment. A member joins: the batch (spanning all
    four partitions) is abandoned, and the two partitions this process keeps must be resumed, or it
    never reads them again (no later batch would run the resume)."""
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    first = make_events(8, seed=40)
    _produce_round_robin(bootstrap, topics["input"], first)
    fault = tmp_path / "model-fails"
    fault.touch()
    # A batch of exactly the eight events, waited for: fetches from the four partitions arrive apart, and a
    # first batch from some of them only would not span the partitions the joining member takes.
    stays = stream["start"]("stays", extra=["--batch-size", "8", "--max-wait-ms", "5000"],
                            env={"SENTIMENT_FAULT_MODEL_FAIL_FILE": str(fault)})
    wait_for(lambda: _logged(stays, "model failing on every batch; partitions paused, retrying"), 90, "the model-failure wait")
    assert [line["size"] for line in stays.logs() if line.get("msg") == "first batch polled"] == [8]
    joins = stream["start"]("joins")
    wait_for(lambda: _logged(stays, "batch abandoned uncommitted"), 90, "the rebalance to abandon the waiting batch")
    fault.unlink()
    second = make_events(40, seed=41)
    _produce_round_robin(bootstrap, topics["input"], second)
    events = first + second
    by_id, _ = labelled_by_id(read_topic(bootstrap, topics["output"], expect=len(events), timeout=120, settle=1))
    assert set(by_id) == {e["event_id"] for e in events}, f"{len(events) - len(by_id)} events never read"
    assert wait_committed(bootstrap, stream["group"], topics["input"], 4, len(events)) == len(events)
    assert stays.stop() == 0 and joins.stop() == 0
    assert_counters_exact(stream["store"], by_id)


def test_a_hung_forward_pass_is_a_fatal_stop_not_a_frozen_loop(stream, tmp_path):
    """The loop waits for the model with partitions paused and gives up after --model-failure-timeout-s."""
    fault = tmp_path / "model-hangs"
    fault.touch()
    _produce_round_robin(stream["bootstrap"], stream["topics"]["input"], make_events(8, seed=42))
    proc = stream["start"]("hung", extra=["--model-failure-timeout-s", "6"], env={"SENTIMENT_FAULT_MODEL_HANG_FILE": str(fault)})
    assert proc.proc.wait(timeout=120) == 3
    proc.log.close()
    assert any(line.get("level") == "CRITICAL" and "model hung" in line["msg"] for line in proc.logs())
    assert wait_committed(stream["bootstrap"], stream["group"], stream["topics"]["input"], 4, 1, timeout=3) == 0


def test_sigterm_during_a_hung_forward_pass_exits_within_the_shutdown_timeout(stream, tmp_path):
    """A pass that never returns must not hold the process at shutdown: the waiting batch is abandoned at the
    drain deadline, the stuck inference thread is left behind, and the process exits 0, committing nothing."""
    fault = tmp_path / "model-hangs"
    fault.touch()
    _produce_round_robin(stream["bootstrap"], stream["topics"]["input"], make_events(8, seed=45))
    proc = stream["start"]("hung-sigterm", extra=["--shutdown-timeout-s", "5"], env={"SENTIMENT_FAULT_MODEL_HANG_FILE": str(fault)})
    wait_for(lambda: _logged(proc, "model pass slow; waiting with partitions paused"), 90, "the wait for a slow pass")
    assert proc.stop(timeout=60) == 0
    assert _logged(proc, "stopped")
    assert wait_committed(stream["bootstrap"], stream["group"], stream["topics"]["input"], 4, 1, timeout=3) == 0


def test_one_poison_event_at_low_traffic_is_dead_lettered_and_the_stream_goes_on(stream):
    """A batch of one event that the model cannot take, while a known-good probe passes: the event's fault,
    not the model's. It is dead-lettered; the process neither retries it forever nor exits."""
    topics, bootstrap = stream["topics"], stream["bootstrap"]
    proc = stream["start"]("poison", extra=["--model-failure-timeout-s", "20"], env={"SENTIMENT_FAULT_POISON_TEXT": "POISON-PILL"})
    wait_for(lambda: _logged(proc, "partitions assigned"), 90, "the consumer to join")
    poison = make_events(1, seed=43)[0]
    poison["text"] = "POISON-PILL " + poison["text"]
    _produce_round_robin(bootstrap, topics["input"], [poison], partitions=1)
    dead = read_topic(bootstrap, topics["dlq"], expect=1, timeout=60)
    assert [orjson.loads(m.value())["error_code"] for m in dead] == ["inference_failed"]
    good = make_events(5, seed=44)
    _produce_round_robin(bootstrap, topics["input"], good)
    by_id, _ = labelled_by_id(read_topic(bootstrap, topics["output"], expect=len(good), timeout=60, settle=1))
    assert set(by_id) == {e["event_id"] for e in good}
    assert wait_committed(bootstrap, stream["group"], topics["input"], 4, 6) == 6
    assert proc.proc.poll() is None, "the process exited on a poison event"
    assert proc.stop() == 0
