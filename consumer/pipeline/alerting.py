"""Step 5 (off the commit path): evaluate due subjects for spikes and pump the alert outbox.

Batches only say which subjects they touched, after their counters are written; the
evaluation runs on the loop's tick, so windows slide with or without traffic. Alerts
never hold up a commit: they are durable in the outbox before they are sent.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from ..alerts.detector import SpikeDetector
from ..alerts.outbox import AlertOutbox
from ..alerts.schedule import EvaluationSchedule
from schemas.redis_connection import REDIS_ERRORS
from ..state.counters import Increment

log = logging.getLogger("consumer.alerting")


class AlertStep:
    def __init__(self, detector: SpikeDetector, schedule: EvaluationSchedule, outbox: AlertOutbox,
                 max_per_tick: int = 500, rescan_every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.detector = detector
        self.schedule = schedule
        self.outbox = outbox
        self.max_per_tick = max_per_tick
        self.rescan_every_s = rescan_every_s
        self.clock = clock  # the schedule's time (a bench or test drives a simulated one)
        self._rescanned_at = float("-inf")

    def touched(self, increments: list[Increment]) -> None:
        self.schedule.touched({(inc.kind, inc.name) for inc in increments}, self.clock())

    def tick(self) -> None:
        now = self.clock()
        due = []
        try:
            if now - self._rescanned_at >= self.rescan_every_s:
                # Firing alerts of any process (a crashed one too) must resolve when their spike passes.
                self._rescanned_at = now
                self.schedule.watch(self.detector.alerts.firing(), now)
            due = self.schedule.due(now, self.max_per_tick)
            if due:
                self.outbox.add(self.detector.check(due))
                self.schedule.evaluated(due, self.detector.firing, now)
        except REDIS_ERRORS as exc:
            self.schedule.retry(due, now)
            log.warning("spike check skipped; retrying", extra={"error": str(exc)[:200]})
        self.outbox.pump()
