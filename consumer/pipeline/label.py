"""Step 2: run the valid events of a batch through the model and build their records.

A failure of the model is either bad events (isolate them by bisection, dead-letter
them, label the rest) or systemic (CUDA error, out of memory: every pass fails). The
known-good probe tells them apart, before and after the bisection: only while it
passes is anything dead-lettered, even when every event of the batch failed (at low
traffic a batch is often one poison text). A systemic failure raises ModelUnavailable
and the batch is retried whole, so good events are never dead-lettered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import orjson

from schemas import ErrorCode, labelled_event

from ..kafka.output import Outgoing
from ..model.language import route_of
from ..observability import Metrics
from ..state.counters import MICRO, CounterLayout, Increment, RatedExample, model_key
from .records import DecodedBatch, LabelledBatch, Record
from .validate import dead_letter

log = logging.getLogger("consumer.label")
# A text any working model can label: when it fails too, the failure is not the events'.
PROBE_TEXT = "good product"


class ModelUnavailable(Exception):
    """Every forward pass fails, the known-good probe included: retry the batch later."""


class Labeller:
    """`models` maps a route (model/language.py) to the classifier that reads it; with one model
    every event goes to it. Counters and alerts are shared: every route's events count alike."""

    def __init__(self, models: dict, layout: CounterLayout, output_topic: str, dlq_topic: str, metrics: Metrics,
                 between_batches: Callable[[], None] = lambda: None,
                 observe: Callable[[str, list[str], list], None] = lambda route, texts, labels: None) -> None:
        if not models:
            raise ValueError("Labeller needs at least one model")
        self.models = models
        self.between_batches = between_batches  # hot reload swaps models here (model/reload.py)
        self.observe = observe  # a canary shadows a sample of each route's texts here
        self.layout = layout
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.metrics = metrics
        self._future_warned_at = 0.0

    def route(self, event) -> str:
        if len(self.models) == 1:
            return next(iter(self.models))
        return route_of(event.data.get("locale"), event.text)

    def label(self, decoded: DecodedBatch) -> LabelledBatch:
        """Classify the valid events and build outputs and counter increments (the model's thread)."""
        self.between_batches()
        batch = LabelledBatch(list(decoded.invalid), decoded.span, decoded.size)
        if not decoded.valid:
            return batch
        by_route: dict[str, list[int]] = {}
        for i, (_, event) in enumerate(decoded.valid):
            by_route.setdefault(self.route(event), []).append(i)
        verdicts: dict[int, tuple] = {}  # position -> (classifier, model key, label, probs row, failure)
        started = time.perf_counter()
        for route, positions in by_route.items():
            classifier = self.models[route]
            texts = [decoded.valid[i][1].text for i in positions]
            labels, probs, failures = self._classify(classifier, texts)
            self.metrics.events_routed.labels(route).inc(len(positions))
            self.observe(route, texts, labels)
            for j, i in enumerate(positions):
                verdicts[i] = (classifier, model_key(route, classifier.version), labels[j], probs[j], failures.get(j))
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        done_ms = int(time.time() * 1000)
        for i, (source, event) in enumerate(decoded.valid):
            classifier, model, label, row, failure = verdicts[i]
            if failure is not None:
                self.metrics.dead_lettered.labels(ErrorCode.INFERENCE_FAILED.value).inc()
                batch.records.append(Record(source, dead_letter(source, ErrorCode.INFERENCE_FAILED, failure, done_ms, self.dlq_topic)))
                continue
            out = labelled_event(event.data, query_norm=event.query_norm, label=label,
                                 probs=dict(zip(classifier.labels, row.tolist())),
                                 model_name=classifier.name, model_version=classifier.version, processed_at_ms=done_ms)
            key = (event.query_norm or event.product_id).encode("utf-8")
            record = Record(source, Outgoing(self.output_topic, key, orjson.dumps(out)))
            batch.records.append(record)
            self.metrics.events_out.labels(label).inc()
            self.metrics.e2e_latency.observe(max(0.0, (done_ms - event.ts_ms) / 1000))
            reason = self.layout.countable(event.ts_ms, decoded.received_ms)
            if reason:
                self._not_counted(reason, event)
                continue
            micro = tuple((name, int(round(float(p) * MICRO))) for name, p in zip(classifier.labels, row))
            where = (source.topic, source.partition, source.offset, event.ts_ms, label, micro, model)
            if event.query_norm:
                record.increments.append(Increment("query", event.query_norm, *where))
            record.increments.append(Increment("product", event.product_id, *where))
            rating = event.data.get("rating")
            if rating is not None and (true := classifier.ratings.label(int(rating))) in classifier.labels:
                # A rated review is a weakly labelled example of the shop's own domain: its version's rates.
                record.rated.append(RatedExample(model, source.topic, source.partition, source.offset, true, micro))
        return batch

    def _not_counted(self, reason: str, event) -> None:
        self.metrics.not_counted.labels(reason).inc()
        # Future timestamps usually mean a producer's clock is wrong: say so, at most once a minute.
        if reason == "future" and time.monotonic() - self._future_warned_at > 60:
            self._future_warned_at = time.monotonic()
            log.warning("event timestamp in the future: labelled and published, not counted "
                        "(see sentiment_events_not_counted_total{reason=\"future\"})",
                        extra={"event_id": event.event_id, "ts_ms": event.ts_ms})

    def _classify(self, classifier, texts: list[str]) -> tuple[list[str | None], np.ndarray, dict[int, str]]:
        """Labels for texts; bad events isolated by bisection when the model works on the rest."""
        try:
            return self._run(classifier, texts)
        except Exception as exc:  # noqa: BLE001 - any model failure must not lose the batch
            first = exc
        self._probe(classifier, first)
        labels, probs, failures = self._split(classifier, texts, first)
        self._probe(classifier, first)  # still healthy after the bisection: the failures are the events'
        for reason in failures.values():
            log.warning("model failed on one event; dead-lettering it", extra={"error": reason[:300]})
        return labels, probs, failures

    def _run(self, classifier, texts: list[str]) -> tuple[list[str | None], np.ndarray, dict[int, str]]:
        verdicts = classifier.classify(texts)
        self.metrics.truncated.inc(verdicts.truncated)
        self.metrics.cache_hits.inc(verdicts.cache_hits)
        return list(verdicts.labels), verdicts.probs, {}

    def _probe(self, classifier, cause: Exception) -> None:
        try:
            classifier.forward([PROBE_TEXT])
        except Exception as exc:  # noqa: BLE001
            raise ModelUnavailable(f"model fails on a known-good probe: {exc!r} (batch: {cause!r})"[:500]) from None

    def _bisect(self, classifier, texts: list[str]) -> tuple[list[str | None], np.ndarray, dict[int, str]]:
        try:
            return self._run(classifier, texts)
        except Exception as exc:  # noqa: BLE001
            return self._split(classifier, texts, exc)

    def _split(self, classifier, texts: list[str], exc: Exception) -> tuple[list[str | None], np.ndarray, dict[int, str]]:
        """`texts` failed with `exc`: an event alone is the offender, a larger batch is halved."""
        if len(texts) == 1:
            return [None], np.zeros((1, len(classifier.labels)), dtype=np.float32), {0: f"model failed: {exc!r}"[:500]}
        mid = len(texts) // 2
        left, right = self._bisect(classifier, texts[:mid]), self._bisect(classifier, texts[mid:])
        failures = {**left[2], **{mid + i: why for i, why in right[2].items()}}
        return left[0] + right[0], np.vstack([left[1], right[1]]), failures
