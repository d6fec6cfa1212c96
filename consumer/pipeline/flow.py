"""Flow control between the steps: how a step waits, gives a batch up, or stops the consumer.

A step that cannot finish now (acks pending, Redis down or out of memory, the model
failing) waits through a Waiter: the assigned partitions are paused and the consumer
is polled, so the group keeps the member and rebalance callbacks run. The waiter
raises Abandoned as soon as the batch has gone stale (its partitions were revoked or
rewound) or the shutdown deadline has passed; nothing of an abandoned batch is
committed, and the source rewinds the partitions it still owns.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..observability import Health
from .records import Span


class Abandoned(Exception):
    """The batch must not be counted or committed (reason: rebalance | shutdown)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FatalStop(Exception):
    """Continuing would lose data (e.g. the dead-letter topic refuses a message): stop, commit nothing more."""


class Waiter:
    def __init__(self, keepalive: Callable[[], None], is_stale: Callable[[Span], bool], deadline: Callable[[], float],
                 health: Health, span: Span | None = None) -> None:
        self.keepalive = keepalive
        self.is_stale = is_stale
        self.deadline = deadline
        self.health = health
        self.span = span

    def check(self) -> None:
        if self.span is not None and self.is_stale(self.span):
            raise Abandoned("rebalance")
        if time.monotonic() > self.deadline():
            raise Abandoned("shutdown")

    def idle(self, seconds: float = 0.0) -> None:
        """Keep the consumer alive (partitions paused) for `seconds`; raises Abandoned when due."""
        until = time.monotonic() + seconds
        while True:
            self.keepalive()
            self.check()
            left = until - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.05, left))

    def trouble(self, name: str, detail: str) -> None:
        self.health.trouble(name, detail)

    def recovered(self, name: str) -> None:
        self.health.recovered(name)
