"""Step 4: apply a batch's increments to the Redis counters, retrying until Redis takes them.

Redis down, loading, read-only (a failover) or out of memory are all backpressure: the
partitions stay paused and the same increments are retried (the fences make the retry
exact). Anything else Redis says is a bug in this program, and is raised.
"""

from __future__ import annotations

import logging
import time

import redis

from ..observability import Metrics
from ..state.counters import CounterStore, Increment
from .flow import Waiter

log = logging.getLogger("consumer.count")

RETRIABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError,
             redis.exceptions.OutOfMemoryError)


def _reason(exc: Exception) -> str:
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "out_of_memory"
    return "unavailable"


class CountStep:
    def __init__(self, store: CounterStore, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics

    def run(self, increments: list[Increment], waiter: Waiter) -> None:
        if not increments:
            return
        delay = 0.1
        while True:
            waiter.check()
            try:
                self.store.apply(increments, int(time.time() * 1000))
                waiter.recovered("redis")
                return
            except RETRIABLE as exc:
                reason = _reason(exc)
                self.metrics.redis_retries.labels(reason).inc()
                waiter.trouble("redis", f"{reason}: {str(exc)[:120]}")
                log.warning("redis update failed; retrying", extra={"reason": reason, "error": str(exc)[:200], "retry_in_s": delay})
                waiter.idle(delay)
                delay = min(delay * 2, 5.0)
