"""When to evaluate which subject: on events, and on time.

A subject is due at once when a batch first touches it, then every `interval_s` for as
long as its short window may still change the verdict (it was touched within the
window) or its alert is firing. So a burst replayed after downtime is evaluated again
after its last event lands, and a firing spike resolves when the window slides past
it, with or without new traffic.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import Iterable

from .state import Subject


class EvaluationSchedule:
    def __init__(self, interval_s: float, window_s: float, max_subjects: int = 200_000) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self.max_subjects = max_subjects
        self._due: dict[Subject, float] = {}
        # Last touch of each touched subject, least recently touched first: evicting costs what it evicts.
        self._touched: OrderedDict[Subject, float] = OrderedDict()
        self._heap: list[tuple[float, Subject]] = []

    def __len__(self) -> int:
        return len(self._due)

    def touched(self, subjects: Iterable[Subject], now: float) -> None:
        for subject in subjects:
            self._touched[subject] = now
            self._touched.move_to_end(subject)
            if subject not in self._due:
                self._at(subject, now)
        while len(self._due) > self.max_subjects and self._touched:  # under a flood of new subjects, keep the recent ones
            subject, _ = self._touched.popitem(last=False)
            self._due.pop(subject, None)

    def watch(self, subjects: Iterable[Subject], now: float) -> None:
        """Evaluate these (e.g. firing at start-up) now and while they stay firing."""
        for subject in subjects:
            if subject not in self._due:
                self._at(subject, now)

    def due(self, now: float, limit: int) -> list[Subject]:
        out: list[Subject] = []
        while self._heap and len(out) < limit and self._heap[0][0] <= now:
            at, subject = heapq.heappop(self._heap)
            if self._due.get(subject) == at:  # not rescheduled or dropped since
                out.append(subject)
        return out

    def evaluated(self, subjects: Iterable[Subject], firing: set[Subject], now: float) -> None:
        for subject in subjects:
            recent = now - self._touched.get(subject, float("-inf")) <= self.window_s + self.interval_s
            if subject in firing or recent:
                self._at(subject, now + self.interval_s)
            else:
                self._due.pop(subject, None)
                self._touched.pop(subject, None)

    def retry(self, subjects: Iterable[Subject], now: float) -> None:
        """Evaluation failed (Redis unavailable): try these again after the interval."""
        for subject in subjects:
            self._at(subject, now + self.interval_s)

    def _at(self, subject: Subject, when: float) -> None:
        self._due[subject] = when
        heapq.heappush(self._heap, (when, subject))
