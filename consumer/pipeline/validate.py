"""Step 1: validate polled messages; invalid ones become dead letters with their reason."""

from __future__ import annotations

import time

import orjson

from schemas import EventError, Limits, dead_letter_envelope, decode_event

from ..kafka.output import Outgoing
from ..observability import Metrics
from ..kafka.span import Span
from .records import DecodedBatch, Record, Source


def dead_letter(source: Source, code: str, message: str, now_ms: int, dlq_topic: str) -> Outgoing:
    """The DLQ message for one input; the envelope caps the copied original so it always fits."""
    envelope = dead_letter_envelope(source.value, topic=source.topic, partition=source.partition, offset=source.offset,
                                    error_code=code, error_message=message, received_at_ms=now_ms)
    return Outgoing(dlq_topic, source.key, orjson.dumps(envelope))


class Validator:
    def __init__(self, limits: Limits, dlq_topic: str, metrics: Metrics) -> None:
        self.limits = limits
        self.dlq_topic = dlq_topic
        self.metrics = metrics

    def decode(self, messages: list, epochs: dict[tuple[str, int], int]) -> DecodedBatch:
        """Validate a polled batch (cheap; runs on the polling thread)."""
        now_ms = int(time.time() * 1000)
        batch = DecodedBatch([], [], Span(), len(messages), now_ms)
        for msg in messages:
            source = Source.of(msg)
            tp = (source.topic, source.partition)
            batch.span.add(tp, source.offset, epochs.get(tp, -1))
            self.metrics.events_in.labels(source.topic).inc()
            try:
                batch.valid.append((source, decode_event(source.value, self.limits)))
            except EventError as error:
                self.metrics.dead_lettered.labels(error.code.value).inc()
                batch.invalid.append(Record(source, dead_letter(source, error.code, error.message, now_ms, self.dlq_topic)))
        return batch

