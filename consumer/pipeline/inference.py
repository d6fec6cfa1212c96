"""Step 2's thread: the model runs batch k+1 while the loop delivers batch k.

Torch releases the GIL in the forward pass, so labelling overlaps produce, Redis and
commit. While the model fails systemically, `result` retries the same batch whole with
backoff (partitions paused, group membership kept), reports the model unhealthy, and
after `failure_timeout_s` gives up with a FatalStop; the batch is never dead-lettered.
A pass that does not return at all (a hung device) is waited for the same way, paused,
and is a FatalStop after `failure_timeout_s` too, timed from when that pass started, so
rebalances and abandoned batches do not reset the clock: the loop never blocks on the
model. A pass still running at shutdown is left behind (`hung`; app.run then exits
without joining its thread).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ..errors import FatalStop
from ..kafka.span import Span
from ..observability import Health, Metrics
from .flow import Abandoned, Waiter
from .label import Labeller, ModelUnavailable
from .records import DecodedBatch, LabelledBatch

log = logging.getLogger("consumer.inference")


class InferenceStage:
    def __init__(self, labeller: Labeller, metrics: Metrics, health: Health, failure_timeout_s: float,
                 patience_s: float = 5.0) -> None:
        self.labeller = labeller
        self.metrics = metrics
        self.health = health
        self.failure_timeout_s = failure_timeout_s
        # A pass slower than this is waited for with the partitions paused and the consumer polled.
        self.patience_s = patience_s
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.in_flight: tuple[Future, DecodedBatch] | None = None
        self.pass_started: float | None = None  # when the pass the worker runs now began (monotonic)
        self.hung = False  # a pass never returned: its thread cannot be joined

    def labelled(self) -> bool:
        """A batch is in flight and its pass has returned: `result` will not wait."""
        return self.in_flight is not None and self.in_flight[0].done()

    def submit(self, decoded: DecodedBatch | None) -> None:
        self.in_flight = (self.thread.submit(self._label, decoded), decoded) if decoded else None

    def _label(self, decoded: DecodedBatch) -> LabelledBatch:
        self.pass_started = time.monotonic()
        try:
            return self.labeller.label(decoded)
        finally:
            self.pass_started = None

    def result(self, waiter: Callable[[Span], Waiter], on_abandon: Callable[[Span, str], None]) -> LabelledBatch | None:
        """The in-flight batch, labelled; None when there is none or it was abandoned while waiting for the model."""
        if self.in_flight is None:
            return None
        future, decoded = self.in_flight
        self.in_flight = None
        try:
            with waiter(decoded.span) as wait:
                return self._labelled(future, decoded, wait)
        except Abandoned as abandoned:
            on_abandon(decoded.span, abandoned.reason)
            return None

    def _labelled(self, future: Future, decoded: DecodedBatch, wait: Waiter) -> LabelledBatch:
        delay = 1.0
        while True:
            try:
                batch = self._finished(future, wait)
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
                wait.idle(delay)
                delay = min(delay * 2, 30.0)
                future = self.thread.submit(self._label, decoded)

    def _finished(self, future: Future, wait: Waiter) -> LabelledBatch:
        """The future's result: a plain wait first, then paused waits until the running pass is declared hung."""
        try:
            return future.result(timeout=self.patience_s)
        except TimeoutError:
            pass
        log.warning("model pass slow; waiting with partitions paused", extra={"waited_s": self.patience_s})
        while True:
            wait.idle(0.1)
            if future.done():
                return future.result()
            started = self.pass_started  # this batch's pass, or a hung one it is queued behind
            running_for = 0.0 if started is None else time.monotonic() - started
            if running_for >= self.failure_timeout_s:
                self.hung = True
                self.health.trouble("model", f"a forward pass has run for {running_for:.0f} s")
                raise FatalStop(f"model hung: a forward pass has not returned for {running_for:.0f} s")

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker. A pass still running after `timeout_s` is left behind, and marks the stage hung."""
        deadline = time.monotonic() + timeout_s
        while self.pass_started is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        self.hung = self.hung or self.pass_started is not None
        self.thread.shutdown(wait=not self.hung, cancel_futures=True)
