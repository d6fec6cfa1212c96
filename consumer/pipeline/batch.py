"""One micro-batch through the steps: validate -> classify -> build outputs and increments."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import orjson

from schemas import ErrorCode, EventError, Limits, ValidEvent, dead_letter_envelope, dead_letter_for, decode_event, labelled_event

from ..kafka.output import Outgoing
from ..model.classifier import SentimentClassifier
from ..observability import Metrics
from ..state.counters import CounterLayout, Increment

log = logging.getLogger("consumer.batch")


@dataclass
class Topics:
    output: str
    dlq: str


@dataclass
class DecodedBatch:
    """A polled batch after validation: valid events to label, dead letters ready to send."""

    valid: list[tuple[object, ValidEvent]] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    size: int = 0
    generation: int = 0  # assignment generation it was polled in; a rebalance makes it stale
    received_ms: int = 0


@dataclass
class PreparedBatch:
    """Everything a batch must get durably out before its offsets may be committed."""

    outgoing: list[Outgoing] = field(default_factory=list)
    increments: list[Increment] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    size: int = 0
    generation: int = 0


def _dead_letter(msg, code: str, message: str, now_ms: int, topics: Topics) -> Outgoing:
    envelope = dead_letter_envelope(msg.value(), topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                                    error_code=code, error_message=message, received_at_ms=now_ms)
    return Outgoing(topics.dlq, msg.key(), orjson.dumps(envelope))


class BatchBuilder:
    def __init__(self, classifier: SentimentClassifier, layout: CounterLayout, limits: Limits, topics: Topics, metrics: Metrics) -> None:
        self.classifier = classifier
        self.layout = layout
        self.limits = limits
        self.topics = topics
        self.metrics = metrics

    def decode(self, messages: list, generation: int = 0) -> DecodedBatch:
        """Validate a polled batch (cheap; runs on the polling thread)."""
        batch = DecodedBatch(size=len(messages), generation=generation, received_ms=int(time.time() * 1000))
        for msg in messages:
            batch.next_offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
            self.metrics.events_in.labels(msg.topic()).inc()
            try:
                batch.valid.append((msg, decode_event(msg.value(), self.limits)))
            except EventError as error:
                self.metrics.dead_lettered.labels(error.code.value).inc()
                envelope = dead_letter_for(error, msg.value(), topic=msg.topic(), partition=msg.partition(),
                                           offset=msg.offset(), received_at_ms=batch.received_ms)
                batch.outgoing.append(Outgoing(self.topics.dlq, msg.key(), orjson.dumps(envelope)))
        return batch

    def label(self, decoded: DecodedBatch) -> PreparedBatch:
        """Classify the valid events and build outputs and counter increments (the model's thread)."""
        batch = PreparedBatch(list(decoded.outgoing), [], decoded.next_offsets, decoded.size, decoded.generation)
        valid = decoded.valid
        if not valid:
            return batch
        started = time.perf_counter()
        labels, probs, failures = self._classify([event.text for _, event in valid])
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        done_ms = int(time.time() * 1000)
        classifier = self.classifier
        for i, (msg, event) in enumerate(valid):
            if i in failures:
                self.metrics.dead_lettered.labels(ErrorCode.INFERENCE_FAILED.value).inc()
                batch.outgoing.append(_dead_letter(msg, ErrorCode.INFERENCE_FAILED, failures[i], done_ms, self.topics))
                continue
            label = labels[i]
            out = labelled_event(event.data, query_norm=event.query_norm, label=label,
                                 probs=dict(zip(classifier.labels, probs[i].tolist())),
                                 model_name=classifier.name, model_version=classifier.version, processed_at_ms=done_ms)
            key = (event.query_norm or event.product_id).encode("utf-8")
            batch.outgoing.append(Outgoing(self.topics.output, key, orjson.dumps(out)))
            self.metrics.events_out.labels(label).inc()
            self.metrics.e2e_latency.observe(max(0.0, (done_ms - event.ts_ms) / 1000))
            reason = self.layout.countable(event.ts_ms, decoded.received_ms)
            if reason:
                self.metrics.not_counted.labels(reason).inc()
                continue
            where = (msg.topic(), msg.partition(), msg.offset(), event.ts_ms, label)
            if event.query_norm:
                batch.increments.append(Increment("query", event.query_norm, *where))
            batch.increments.append(Increment("product", event.product_id, *where))
        return batch

    def _classify(self, texts: list[str]) -> tuple[list[str | None], np.ndarray, dict[int, str]]:
        """Labels for texts; a batch the model fails on is split and retried, the offender isolated."""
        try:
            verdicts = self.classifier.classify(texts)
        except Exception as exc:  # noqa: BLE001 - any model failure must not lose the batch
            if len(texts) == 1:
                log.warning("model failed on one event; dead-lettering it", extra={"error": repr(exc)[:300]})
                return [None], np.zeros((1, len(self.classifier.labels)), dtype=np.float32), {0: f"model failed: {exc!r}"[:500]}
            mid = len(texts) // 2
            left, right = self._classify(texts[:mid]), self._classify(texts[mid:])
            failures = {**left[2], **{mid + i: why for i, why in right[2].items()}}
            return left[0] + right[0], np.vstack([left[1], right[1]]), failures
        self.metrics.truncated.inc(verdicts.truncated)
        self.metrics.cache_hits.inc(verdicts.cache_hits)
        return list(verdicts.labels), verdicts.probs, {}
