"""The alert outbox: pending alert events are sent until the broker acks them.

Events this process created are queued at once; events another (crashed) process left
pending are picked up from Redis at start-up and then every `recover_every_s`. An
event stays pending in Redis until its ack: only then is it marked sent, counted and
posted to the webhook, so the webhook never announces an alert Kafka does not have.
A resend after a crash carries the same alert_id.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from confluent_kafka import KafkaError

from ..kafka.output import Outgoing, OutputProducer, is_permanent
from ..observability import Health, Metrics
from schemas.redis_connection import REDIS_ERRORS
from .state import AlertStore, Subject
from .webhook import WebhookNotifier

log = logging.getLogger("consumer.outbox")
Entry = tuple[Subject, str, bytes]  # subject, pending field, event json


class AlertOutbox:
    def __init__(self, store: AlertStore, producer: OutputProducer, topic: str, metrics: Metrics, health: Health,
                 webhook: WebhookNotifier | None = None, recover_every_s: float = 30.0) -> None:
        self.store = store
        self.producer = producer
        self.topic = topic
        self.metrics = metrics
        self.health = health
        self.webhook = webhook
        self.recover_every_s = recover_every_s
        self._queued: dict[Entry, float] = {}  # entry -> not before (monotonic), for retry backoff
        self._in_flight: dict[Entry, float] = {}  # entry -> when produced; a lost delivery report is retried
        self._acked: list[Entry] = []
        self._failed: list[tuple[Entry, KafkaError]] = []
        self._recovered_at = float("-inf")
        self._generation = producer.generation

    def __len__(self) -> int:
        return len(self._queued) + len(self._in_flight)  # acked entries stay in flight until settled

    def add(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            subject = (event["subject"], event["query"] if event["subject"] == "query" else event["product_id"])
            self._queued.setdefault((subject, f"pending:{event['state']}", orjson.dumps(event)), 0.0)

    def pump(self) -> None:
        """Send what is due, settle acks and failures; never blocks on the broker."""
        now = time.monotonic()
        self.producer.poll()
        if self.producer.generation != self._generation:
            # A fatal error replaced the producer: what was in flight on the old one gets no report.
            self._generation = self.producer.generation
            for entry in [e for e in self._in_flight if e not in self._acked]:
                del self._in_flight[entry]
                self._queued[entry] = now
        try:
            if now - self._recovered_at >= self.recover_every_s:
                self._recovered_at = now
                for entry, since in list(self._in_flight.items()):
                    if now - since > 120:  # no report for two minutes, past the delivery timeout: never coming
                        del self._in_flight[entry]
                for entry in self.store.pending():
                    if entry not in self._in_flight and entry not in self._acked:
                        self._queued.setdefault(entry, 0.0)
            self._settle()
        except REDIS_ERRORS as exc:
            log.warning("alert outbox: redis unavailable; retrying", extra={"error": str(exc)[:200]})
        for entry, error in self._failed:
            self._in_flight.pop(entry, None)
            self._queued[entry] = now + (30.0 if is_permanent(error) else 1.0)
            self.health.trouble("alerts", f"alert not acknowledged: {error.str()}")
            log.warning("alert delivery failed; will resend", extra={"error": error.str(), "topic": self.topic})
        self._failed.clear()
        # Firing before resolved, older before newer: the order a reader expects.
        for entry in sorted((e for e, at in self._queued.items() if at <= now), key=_order):
            del self._queued[entry]
            self._in_flight[entry] = now
            (_, name), _, payload = entry
            if not self.producer.submit(Outgoing(self.topic, name.encode(), payload), lambda err, e=entry: self._result(e, err)):
                del self._in_flight[entry]
                self._queued[entry] = now
                break
        self.metrics.alerts_pending.set(len(self))

    def _result(self, entry: Entry, error: KafkaError | None) -> None:
        if error is None:
            self._acked.append(entry)
        else:
            self._failed.append((entry, error))

    def _settle(self) -> None:
        while self._acked:
            entry = self._acked[0]
            subject, field, payload = entry
            self.store.sent(subject, field, payload)
            self._acked.pop(0)
            self._in_flight.pop(entry, None)
            self.health.recovered("alerts")
            event = orjson.loads(payload)
            self.metrics.alerts.labels(event["state"]).inc()
            if self.webhook is not None:
                self.webhook.submit(event)

    def flush(self, timeout_s: float) -> None:
        """At shutdown: wait up to `timeout_s` for in-flight alerts, and settle what was acked."""
        deadline = time.monotonic() + timeout_s
        while self._in_flight and time.monotonic() < deadline:
            self.producer.flush(0.1)
            self.pump()


def _order(entry: Entry) -> tuple:
    event = orjson.loads(entry[2])
    return event["fired_at"], entry[1] != "pending:firing"
