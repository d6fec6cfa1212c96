"""Step 6, the end of the chain: commit a batch's offsets once everything before it is done."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaException

from ..kafka.source import KafkaSource
from ..kafka.span import TopicPartition
from ..observability import Metrics
from .records import LabelledBatch

log = logging.getLogger("consumer.commit")


class CommitStep:
    def __init__(self, source: KafkaSource, metrics: Metrics) -> None:
        self.source = source
        self.metrics = metrics
        self.completed: dict[TopicPartition, int] = {}  # next offset per partition, delivered but maybe not yet committed
        self.failed: dict[TopicPartition, int] = {}  # offsets whose commit failed (e.g. during a rebalance): sent again
        self._retry_at = 0.0  # at most one retry a second while the coordinator keeps refusing
        source.on_revoked = self.revoked
        source.on_lost = self.lost
        source.on_commit_failed = self.commit_failed

    def run(self, batch: LabelledBatch) -> None:
        self.completed.update(batch.span.next)
        self.commit(batch.span.next, asynchronous=True)
        self.metrics.batches.inc()
        self.metrics.progressed()

    def commit_failed(self, offsets: dict[TopicPartition, int]) -> None:
        # Only offsets still the newest delivered for a partition still owned: a later commit supersedes.
        self.failed.update({tp: o for tp, o in offsets.items() if self.completed.get(tp) == o})

    def retry_failed(self) -> None:
        """From the loop: commit again what failed. Without it, the tail of a quiet stream stays
        uncommitted until the next batch (a rebalance in progress fails async commits)."""
        if self.failed and time.monotonic() >= self._retry_at:
            self._retry_at = time.monotonic() + 1.0
            offsets, self.failed = self.failed, {}
            self.commit({tp: o for tp, o in offsets.items() if self.completed.get(tp) == o}, asynchronous=True)

    def revoked(self, partitions: set[TopicPartition]) -> None:
        """Before a revoked partition moves on: commit what was delivered for it."""
        self.commit({tp: o for tp, o in self.completed.items() if tp in partitions}, asynchronous=False)
        self.lost(partitions)

    def lost(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.completed.pop(tp, None)
            self.failed.pop(tp, None)

    def commit(self, offsets: dict[TopicPartition, int], asynchronous: bool) -> None:
        if not offsets:
            return
        try:
            self.source.commit(offsets, asynchronous)
        except KafkaException as exc:  # a failed commit only means redelivery, which the fences absorb
            log.warning("commit failed; offsets will be redelivered", extra={"error": str(exc)[:200]})

    def close(self) -> None:
        self.commit(self.completed, asynchronous=False)
