"""Step 2's thread: the model runs batch k+1 while the loop delivers batch k.

Torch releases the GIL in the forward pass, so labelling overlaps produce, Redis and
commit. While the model fails systemically, `result` retries the same batch whole with
backoff (partitions paused, group membership kept), reports the model unhealthy, and
after `failure_timeout_s` gives up with a FatalStop; the batch is never dead-lettered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ..observability import Health, Metrics
from .flow import Abandoned, FatalStop, Waiter
from .label import Labeller, ModelUnavailable
from .records import DecodedBatch, LabelledBatch, Span

log = logging.getLogger("consumer.inference")


class InferenceStage:
    def __init__(self, labeller: Labeller, metrics: Metrics, health: Health, failure_timeout_s: float) -> None:
        self.labeller = labeller
        self.metrics = metrics
        self.health = health
        self.failure_timeout_s = failure_timeout_s
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.in_flight: tuple[Future, DecodedBatch] | None = None

    def submit(self, decoded: DecodedBatch | None) -> None:
        self.in_flight = (self.thread.submit(self.labeller.label, decoded), decoded) if decoded else None

    def result(self, waiter: Callable[[Span], Waiter], on_abandon: Callable[[Span, str], None]) -> LabelledBatch | None:
        """The in-flight batch, labelled; None when there is none or it was abandoned while the model was down."""
        if self.in_flight is None:
            return None
        future, decoded = self.in_flight
        self.in_flight = None
        delay = 1.0
        while True:
            try:
                batch = future.result()
                self.health.recovered("model")
                return batch
            except ModelUnavailable as exc:
                self.metrics.model_failures.inc()
                self.health.trouble("model", str(exc))
                failing_for = self.health.since("model") or 0.0
                if failing_for >= self.failure_timeout_s:
                    raise FatalStop(f"model failing for {failing_for:.0f} s: {exc}") from None
                log.error("model failing on every batch; partitions paused, retrying",
                          extra={"error": str(exc)[:300], "retry_in_s": delay, "failing_for_s": round(failing_for, 1)})
                try:
                    waiter(decoded.span).idle(delay)
                except Abandoned as abandoned:
                    on_abandon(decoded.span, abandoned.reason)
                    return None
                delay = min(delay * 2, 30.0)
                future = self.thread.submit(self.labeller.label, decoded)

    def close(self) -> None:
        self.thread.shutdown(wait=True, cancel_futures=True)
