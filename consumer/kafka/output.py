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


class OutputProducer:
    """Wraps an idempotent producer. `send` returns when every message is acked or permanently refused."""

    def __init__(self, config: dict) -> None:
        self.config = config
        self.producer = self._create()

    def _create(self) -> Producer:
        try:
            return Producer(self.config)
        except KafkaException as exc:
            raise ConfigError(f"cannot create the Kafka producer: {exc.args[0].str()}") from None

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
            retry: list[Outgoing] = []
            fatal: list[KafkaError] = []
            for message in pending:
                self._produce(message, refused, retry, fatal, waiter)
            while self.producer.flush(0.1) > 0:
                waiter.idle()
            if fatal:
                # An idempotent producer that hit a fatal error is unusable: start a new one.
                log.error("producer fatal error; recreating the producer", extra={"error": fatal[0].str()})
                self.producer = self._create()
            if not retry:
                waiter.recovered("kafka_produce")
                break
            waiter.trouble("kafka_produce", f"{len(retry)} messages not acknowledged")
            log.warning("delivery failed, retrying", extra={"failed": len(retry), "retry_in_s": delay})
            waiter.idle(delay)
            delay = min(delay * 2, 5.0)
            pending = retry
        return refused

    def _produce(self, message: Outgoing, refused: list, retry: list, fatal: list, waiter: Waiting) -> None:
        def on_delivery(err: KafkaError | None, _msg) -> None:
            if err is None:
                return
            if err.fatal():
                fatal.append(err)
            if is_permanent(err):
                refused.append((message, f"{err.name()}: {err.str()}"))
            else:
                log.warning("delivery error", extra={"topic": message.topic, "error": err.str()})
                retry.append(message)

        while True:
            try:
                self.producer.produce(message.topic, value=message.value, key=message.key, on_delivery=on_delivery)
                return
            except BufferError:
                # Local queue full: serve delivery reports and keep the consumer alive.
                self.producer.poll(0.1)
                waiter.idle()
            except KafkaException as exc:
                error = exc.args[0]
                if is_permanent(error):
                    refused.append((message, f"{error.name()}: {error.str()}"))
                    return
                if error.fatal():
                    self.producer = self._create()
                retry.append(message)
                return

    def submit(self, message: Outgoing, on_result: Callable[[KafkaError | None], None]) -> bool:
        """Produce without waiting; `on_result` runs from a later poll. False when not queued now."""
        try:
            self.producer.produce(message.topic, value=message.value, key=message.key,
                                  on_delivery=lambda err, _msg: on_result(err))
            return True
        except BufferError:
            return False
        except KafkaException as exc:
            on_result(exc.args[0])
            return True

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout: float) -> int:
        return self.producer.flush(timeout)
