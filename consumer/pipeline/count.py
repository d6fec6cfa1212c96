"""Step 4: apply a batch's increments to the Redis counters, retrying until Redis takes them.

Redis down, loading, read-only, failing over (a cluster moving slots), short of the
replicas --redis-wait-replicas asks for, or out of memory: all backpressure. The
partitions stay paused and the same increments are retried (the fences make the retry
exact). Anything else Redis says is a bug in this program, and is raised.
"""

from __future__ import annotations

import logging
import time

import redis

from ..observability import Metrics
from ..state.counters import CounterStore, Increment
from ..state.routing import TOPOLOGY, TRANSIENT, NotReplicated
from .flow import Waiter

log = logging.getLogger("consumer.count")

RETRIABLE = (*TRANSIENT, redis.exceptions.OutOfMemoryError)


def _reason(exc: Exception) -> str:
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "out_of_memory"
    if isinstance(exc, NotReplicated):
        return "not_replicated"
    if isinstance(exc, TOPOLOGY):
        return "failover"
    return "unavailable"


class CountStep:
    def __init__(self, store: CounterStore, metrics: Metrics, estimation: dict | None = None, model_version: str = "",
                 refresh_s: float = 600.0) -> None:
        self.store = store
        self.metrics = metrics
        self.estimation = estimation
        self.model_version = model_version
        self.refresh_s = refresh_s
        self._published_at = float("-inf")

    def use_estimation(self, estimation: dict | None, model_version: str) -> None:
        """A new model took over: publish its rates with the next counter write."""
        self.estimation, self.model_version = estimation, model_version
        self._published_at = float("-inf")

    def run(self, increments: list[Increment], waiter: Waiter) -> None:
        if not increments:
            return
        delay = 0.1
        while True:
            waiter.check()
            try:
                self.store.apply(increments, int(time.time() * 1000))
                if time.monotonic() - self._published_at >= self.refresh_s:
                    # The read side corrects shares with the labelling model's validation rates.
                    self.store.publish_estimation(self.estimation, self.model_version)
                    self._published_at = time.monotonic()
                waiter.recovered("redis")
                return
            except RETRIABLE as exc:
                reason = _reason(exc)
                self.metrics.redis_retries.labels(reason).inc()
                waiter.trouble("redis", f"{reason}: {str(exc)[:120]}")
                log.warning("redis update failed; retrying", extra={"reason": reason, "error": str(exc)[:200], "retry_in_s": delay})
                waiter.idle(delay)
                delay = min(delay * 2, 5.0)
