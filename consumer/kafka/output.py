"""Producing labelled events and dead letters, and waiting until the broker has them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, Producer

log = logging.getLogger("consumer.output")


class DeliveryFailed(Exception):
    """Some messages of a batch were not acknowledged after retries: the batch must not be committed."""


@dataclass
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes


class OutputProducer:
    """Wraps an idempotent producer; `send_all` returns only when every message is acked."""

    def __init__(self, config: dict, retries: int = 5) -> None:
        self.producer = Producer(config)
        self.retries = retries

    def send_all(self, messages: list[Outgoing], keepalive: Callable[[], None], should_abandon: Callable[[], bool]) -> bool:
        """Produce and wait for acks, calling `keepalive` while waiting (it polls the paused consumer).

        Returns False when `should_abandon()` turned true (rebalance or shutdown deadline).
        """
        pending = messages
        for attempt in range(self.retries + 1):
            failed: list[Outgoing] = []
            for message in pending:
                self._produce(message, failed, keepalive)
            while self.producer.flush(0.2) > 0:
                keepalive()
                if should_abandon():
                    return False
            if not failed:
                return True
            log.warning("delivery failed, retrying", extra={"failed": len(failed), "attempt": attempt + 1})
            pending = failed
            time.sleep(min(2.0, 0.1 * 2**attempt))
        raise DeliveryFailed(f"{len(pending)} messages not acknowledged after {self.retries} retries")

    def _produce(self, message: Outgoing, failed: list[Outgoing], keepalive: Callable[[], None]) -> None:
        def on_delivery(err: KafkaError | None, _msg) -> None:
            if err is not None:
                log.warning("delivery error", extra={"topic": message.topic, "error": err.str()})
                failed.append(message)

        while True:
            try:
                self.producer.produce(message.topic, value=message.value, key=message.key, on_delivery=on_delivery)
                return
            except BufferError:
                # Local queue full: serve delivery reports and keep the consumer alive.
                self.producer.poll(0.1)
                keepalive()

    def flush(self, timeout: float) -> int:
        return self.producer.flush(timeout)
