"""Producing messages and waiting until the broker has them.

Transient failures (broker down, leader moving, timeouts) are retried until acked;
the caller's waiter keeps the consumer polled meanwhile and may abandon. A permanent
refusal (record too large, authorization, invalid record, a policy) is returned to
the caller, never retried forever and never raised: one bad message must not stop the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from ..errors import ConfigError

log = logging.getLogger("consumer.output")

# Broker or client refusals that no retry can fix.
PERMANENT = {
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG, KafkaError.INVALID_MSG_SIZE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.POLICY_VIOLATION,
    KafkaError.INVALID_REQUIRED_ACKS, KafkaError.TOPIC_EXCEPTION, KafkaError._INVALID_ARG,
}


def is_permanent(error: KafkaError) -> bool:
    return error.code() in PERMANENT


def is_fatal(error: KafkaError) -> bool:
    """Fatal to the producer. Delivery reports and produce() exceptions carry the code _FATAL with
    fatal() unset (only error_cb errors set it), so the code is what tells."""
    return error.fatal() or error.code() == KafkaError._FATAL


@dataclass
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes


class Waiting(Protocol):
    """What a sender needs from its caller while it waits (see pipeline.flow.Waiter)."""

    def idle(self, seconds: float = 0.0) -> None: ...

    def trouble(self, name: str, detail: str) -> None: ...

    def recovered(self, name: str) -> None: ...


class DeliveryRound:
    """One produce-and-wait round of `send`: the delivery report of each message it produced.

    A message counts as delivered only on a positive ack. Anything else (failed, refused,
    never reported because the producer turned fatal and was replaced) is not, so
    nothing produced to a discarded producer is ever taken for acked.
    """

    def __init__(self) -> None:
        self.waiting = 0
        self.acked: set[int] = set()  # ids of acked messages
        self.refused: list[tuple[Outgoing, str]] = []
        self.fatal: KafkaError | None = None

    def report(self, message: Outgoing, err: KafkaError | None) -> None:
        self.waiting -= 1
        if err is None:
            self.acked.add(id(message))
        elif is_fatal(err):
            self.fatal = err
        elif is_permanent(err):
            self.refused.append((message, f"{err.name()}: {err.str()}"))
        else:
            log.warning("delivery error", extra={"topic": message.topic, "error": err.str()})

    def unsettled(self, messages: list[Outgoing]) -> list[Outgoing]:
        """Neither acked nor refused for good: to be produced again."""
        refused = {id(m) for m, _ in self.refused}
        return [m for m in messages if id(m) not in self.acked and id(m) not in refused]


class OutputProducer:
    """Wraps an idempotent producer. `send` returns when every message is acked or permanently refused.

    `send` waits for its own messages' delivery reports only, never for the whole queue:
    whatever else the producer holds (a message for a topic without a leader) cannot hold
    up a batch. A fatal error (the idempotent producer's state is lost) replaces the
    producer, and every message of the round not positively acked is produced again.
    """

    def __init__(self, config: dict, create: Callable[[dict], Producer] = Producer) -> None:
        self.config = config
        self.create = create
        self.producer = self._create()
        self.generation = 0  # bumped when a fatal error replaces the producer
        self._fatal: KafkaError | None = None  # seen in a submit()'s report; the next poll() replaces the producer

    def _create(self) -> Producer:
        try:
            return self.create(self.config)
        except KafkaException as exc:
            raise ConfigError(f"cannot create the Kafka producer: {exc.args[0].str()}") from None

    def _replace(self, error: KafkaError) -> None:
        # An idempotent producer that hit a fatal error is unusable: start a new one.
        log.error("producer fatal error; recreating the producer", extra={"error": error.str()})
        self.producer = self._create()
        self.generation += 1

    def send(self, messages: list[Outgoing], waiter: Waiting) -> list[tuple[Outgoing, str]]:
        """Deliver every message; returns those the broker refused for good, with the reason.

        A refused message may only have shared a produce request with the culprit (the
        broker refuses whole record batches), so refusals are retried one at a time first.
        """
        refused = self._deliver(messages, waiter)
        if not refused:
            return []
        confirmed = []
        for message, _ in refused:
            confirmed += self._deliver([message], waiter)
        return confirmed

    def _deliver(self, messages: list[Outgoing], waiter: Waiting) -> list[tuple[Outgoing, str]]:
        pending, refused, delay = messages, [], 0.1
        while pending:
            round_ = DeliveryRound()
            for message in pending:
                if round_.fatal is not None:
                    break  # the rest goes to the replacement producer
                self._produce(message, round_, waiter)
            while round_.waiting > 0 and round_.fatal is None:
                self.producer.poll(0.05)
                if round_.waiting > 0:
                    waiter.idle()
            if round_.fatal is not None:
                self._replace(round_.fatal)
            refused += round_.refused
            pending = round_.unsettled(pending)
            if not pending:
                waiter.recovered("kafka_produce")
                break
            waiter.trouble("kafka_produce", f"{len(pending)} messages not acknowledged")
            log.warning("delivery failed, retrying", extra={"failed": len(pending), "retry_in_s": delay})
            waiter.idle(delay)
            delay = min(delay * 2, 5.0)
        return refused

    def _produce(self, message: Outgoing, round_: DeliveryRound, waiter: Waiting) -> None:
        while True:
            try:
                self.producer.produce(message.topic, value=message.value, key=message.key,
                                      on_delivery=lambda err, _msg: round_.report(message, err))
                round_.waiting += 1
                return
            except BufferError:
                # Local queue full: serve delivery reports and keep the consumer alive.
                self.producer.poll(0.1)
                waiter.idle()
            except KafkaException as exc:
                round_.waiting += 1
                round_.report(message, exc.args[0])
                return

    def submit(self, message: Outgoing, on_result: Callable[[KafkaError | None], None]) -> bool:
        """Produce without waiting; `on_result` runs from a later poll. False when not queued now."""
        try:
            self.producer.produce(message.topic, value=message.value, key=message.key,
                                  on_delivery=lambda err, _msg: self._submitted(err, on_result))
            return True
        except BufferError:
            return False
        except KafkaException as exc:
            self._submitted(exc.args[0], on_result)
            return True

    def _submitted(self, error: KafkaError | None, on_result: Callable[[KafkaError | None], None]) -> None:
        if error is not None and is_fatal(error):
            self._fatal = error
        on_result(error)

    def poll(self) -> None:
        """Serve delivery reports; replace the producer when one of them was fatal (see `generation`)."""
        self.producer.poll(0)
        if self._fatal is not None:
            error, self._fatal = self._fatal, None
            self._replace(error)

    def flush(self, timeout: float) -> int:
        return self.producer.flush(timeout)
