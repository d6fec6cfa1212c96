"""Step 4: apply a batch's increments to the Redis counters, retrying until Redis takes them.

Redis down, loading, read-only, failing over (a cluster moving slots), short of the
replicas --redis-wait-replicas asks for, out of memory, or without the scripts it was
just sent (its script cache emptied before the exec): all backpressure. The
partitions stay paused and the same increments are retried (the fences make the retry
exact). Anything else Redis says is a bug in this program, and is raised.
"""

from __future__ import annotations

import logging
import time

import redis

from ..observability import Metrics
from ..state.counters import CounterStore, Increment, RatedExample
from ..state.rates import RateStore
from ..state.routing import TOPOLOGY, TRANSIENT, NotReplicated
from .flow import Waiter

log = logging.getLogger("consumer.count")

RETRIABLE = (*TRANSIENT, redis.exceptions.OutOfMemoryError)


def _reason(exc: Exception) -> str:
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "out_of_memory"
    if isinstance(exc, NotReplicated):
        return "not_replicated"
    if isinstance(exc, redis.exceptions.NoScriptError):
        return "script_missing"
    if isinstance(exc, TOPOLOGY):
        return "failover"
    return "unavailable"


class CountStep:
    def __init__(self, store: CounterStore, rates: RateStore, metrics: Metrics, refresh_s: float = 600.0) -> None:
        self.store = store
        self.rates = rates
        self.metrics = metrics
        self.refresh_s = refresh_s
        self._serving: dict[str, tuple[list[str], dict]] = {}  # model key -> (labels, checkpoint rates by source)
        self._published_at = float("-inf")

    def serve(self, models: dict[str, tuple[list[str], dict]]) -> None:
        """The versions now labelling events (a swap changed them): publish their checkpoint rates with the
        next counter write. Each version's rates live under its own key; nobody else's are touched."""
        self._serving = dict(models)
        self._published_at = float("-inf")

    def run(self, increments: list[Increment], rated: list[RatedExample], waiter: Waiter) -> None:
        if not increments and not rated:
            return
        delay = 0.1
        while True:
            waiter.check()
            try:
                self.store.apply(increments, int(time.time() * 1000), rated)
                if time.monotonic() - self._published_at >= self.refresh_s:
                    for model, (labels, checkpoint) in self._serving.items():
                        self.rates.publish_checkpoint(model, labels, checkpoint)
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
