"""Flow control between the steps: how a step waits, and how it gives a batch up (errors.FatalStop stops the consumer).

A step that cannot finish now (acks pending, Redis down or out of memory, the model
failing) waits through a Waiter: the assigned partitions are paused and the consumer
is polled, so the group keeps the member and rebalance callbacks run. The waiter
raises Abandoned as soon as the batch has gone stale (its partitions were revoked or
rewound) or the shutdown deadline has passed; nothing of an abandoned batch is
committed, and the source rewinds the partitions it still owns.

A Waiter is a context manager: leaving it, by any exit (done, abandoned, fatal),
resumes what its waits paused. A pause that outlives its wait would starve the
partitions a rebalance left with this process for good.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..kafka.span import Span
from ..observability import Health


class Abandoned(Exception):
    """The batch must not be counted or committed (reason: rebalance | shutdown)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Waiter:
    def __init__(self, keepalive: Callable[[], None], resume: Callable[[], None], is_stale: Callable[[Span], bool],
                 deadline: Callable[[], float], health: Health, span: Span | None = None) -> None:
        self.keepalive = keepalive
        self.resume = resume
        self.is_stale = is_stale
        self.deadline = deadline
        self.health = health
        self.span = span
        self.paused = False

    def __enter__(self) -> "Waiter":
        return self

    def __exit__(self, *exc_info) -> None:
        if self.paused:
            self.resume()
            self.paused = False

    def check(self) -> None:
        if self.span is not None and self.is_stale(self.span):
            raise Abandoned("rebalance")
        if time.monotonic() > self.deadline():
            raise Abandoned("shutdown")

    def idle(self, seconds: float = 0.0) -> None:
        """Keep the consumer alive (partitions paused) for `seconds`; raises Abandoned when due."""
        until = time.monotonic() + seconds
        while True:
            self.paused = True
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
