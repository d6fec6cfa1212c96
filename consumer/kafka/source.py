"""The Kafka side of the loop: subscription, rebalance callbacks, pausing, rewinding, commits.

Partition epochs: each owned partition has an epoch, bumped whenever its position may
have moved under an in-flight batch (assigned, revoked, lost, rewound). A batch records
the epochs it was polled in; if any has changed, the batch is stale and is abandoned.

THE INVARIANT that keeps commits and the Redis fences exact, under every protocol: each
owner of a partition applies (counts, then commits) one contiguous range of offsets that
starts at the partition's committed offset. The Redis fence of a subject holds the
highest offset applied per partition, so a later owner that replays part of the range
skips it, and nothing is counted twice or skipped. What keeps each owner contiguous:
  - a batch is counted and committed only while all its partition epochs are current;
  - an abandoned batch rewinds the partitions this process still owns to the batch's
    first offsets and bumps their epochs, so later in-flight batches of those partitions
    are abandoned too: nothing after an abandoned range is ever applied;
  - a revoked partition gets its delivered offsets committed (in the callback, before it
    moves) and its epoch dropped; a lost one commits nothing; either way the next owner
    starts from the last commit, and a zombie batch of the old owner fails its epoch check.
How each protocol meets the callbacks (all run inside poll, on the loop's thread, so no
Redis write or commit is ever in progress when a partition moves):
  - classic, eager (range, roundrobin): every rebalance revokes every partition; each
    assignment starts at the committed offsets.
  - classic, cooperative-sticky (the default) and KIP-848 (group.protocol=consumer):
    only the partitions that move are revoked or assigned; batches holding only kept
    partitions stay current and are delivered, a batch holding a revoked one is
    abandoned, and its kept partitions are rewound as above.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ..errors import ConfigError, FatalStop
from .span import Span

log = logging.getLogger("consumer.source")
TP = tuple[str, int]
# How long one consume call may block while a batch fills: how soon a labelled batch that became
# ready meanwhile is delivered.
POLL_SLICE_S = 0.005


class KafkaSource:
    def __init__(self, config: dict, topics: list[str]) -> None:
        self.config = config
        self.topics = topics
        self.epochs: dict[TP, int] = {}
        self.paused = False  # keepalive paused the assignment; pause once per wait, not per poll
        self._next_epoch = 0
        self.on_revoked: Callable[[set[TP]], None] = lambda partitions: None
        self.on_lost: Callable[[set[TP]], None] = lambda partitions: None
        self.on_commit_failed: Callable[[dict[TP, int]], None] = lambda offsets: None
        try:
            self.consumer = Consumer({**config, "on_commit": self._commit_reported})
        except KafkaException as exc:
            raise ConfigError(f"cannot create the Kafka consumer: {exc.args[0].str()}") from None
        self.consumer.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)

    def _bump(self, tp: TP) -> None:
        self._next_epoch += 1
        self.epochs[tp] = self._next_epoch

    # -- rebalance callbacks (run inside poll/consume) --------------------------------------
    def _assigned(self, consumer, partitions) -> None:
        self.paused = False  # new partitions arrive unpaused: the next keepalive pauses the whole assignment
        for p in partitions:
            self._bump((p.topic, p.partition))
        log.info("partitions assigned", extra={"partitions": [f"{p.topic}[{p.partition}]" for p in partitions]})

    def _drop(self, partitions) -> set[TP]:
        """Forget the epochs of partitions leaving this process: their in-flight batches turn stale."""
        gone = {(p.topic, p.partition) for p in partitions}
        for tp in gone:
            self.epochs.pop(tp, None)
        return gone

    def _revoked(self, consumer, partitions) -> None:
        revoked = self._drop(partitions)
        self.on_revoked(revoked)
        log.info("partitions revoked", extra={"partitions": sorted(f"{t}[{p}]" for t, p in revoked)})

    def _lost(self, consumer, partitions) -> None:
        lost = self._drop(partitions)
        self.on_lost(lost)
        log.warning("partitions lost", extra={"partitions": sorted(f"{t}[{p}]" for t, p in lost)})

    def _commit_reported(self, error, partitions) -> None:
        """Commit results (run inside poll): an asynchronous commit that failed is otherwise silent."""
        failed = {(p.topic, p.partition): p.offset for p in partitions if error is not None or p.error is not None}
        if failed:
            reason = error or next(p.error for p in partitions if p.error is not None)
            log.warning("commit failed; will retry", extra={"error": reason.str(), "partitions": sorted(f"{t}[{p}]" for t, p in failed)})
            self.on_commit_failed(failed)

    # -- polling ------------------------------------------------------------------------------
    def poll_batch(self, size: int, timeout_s: float, enough: Callable[[], bool] = lambda: False) -> tuple[list, dict[TP, int]]:
        """Up to `size` messages within `timeout_s`, and the epoch each partition had when its first
        message of the batch was polled (what the batch's span must record).

        Polls in short slices and stops early once `enough()` holds (the loop has a labelled batch
        to deliver: waiting on to fill this one would only delay that one). A rebalance served in
        a later slice leaves the earlier messages with their own, older epochs, so a partition
        revoked mid-batch makes the batch stale, exactly as one served after the poll does.
        """
        deadline = time.monotonic() + timeout_s
        messages: list = []
        epochs: dict[TP, int] = {}
        while True:
            stop = enough()
            wait = 0.0 if stop else min(POLL_SLICE_S, max(0.0, deadline - time.monotonic()))
            for msg in self.consumer.consume(num_messages=size - len(messages), timeout=wait):
                if self._usable(msg):
                    tp = (msg.topic(), msg.partition())
                    epochs.setdefault(tp, self.epochs.get(tp, -1))
                    messages.append(msg)
            if stop or len(messages) >= size or time.monotonic() >= deadline:
                return messages, epochs

    def _usable(self, msg) -> bool:
        error = msg.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error", extra={"error": error.str()})
        return False

    def is_stale(self, span: Span) -> bool:
        return any(self.epochs.get(tp) != epoch for tp, epoch in span.epochs.items())

    def rewind(self, span: Span) -> None:
        """Seek the partitions still owned back to an abandoned batch's first offsets."""
        for tp, epoch in span.epochs.items():
            if self.epochs.get(tp) != epoch:
                continue  # revoked, or already rewound to an earlier batch
            self._bump(tp)
            try:
                self.consumer.seek(TopicPartition(tp[0], tp[1], span.first[tp]))
            except KafkaException as exc:
                # Reading on past an abandoned range would skip it: restart from the last commit instead.
                raise FatalStop(f"cannot rewind {tp[0]}[{tp[1]}] to offset {span.first[tp]}: {exc.args[0].str()}") from None

    def keepalive(self) -> None:
        """Poll with partitions paused: serves rebalance callbacks and keeps the member alive."""
        if not self.paused:
            self.consumer.pause(self.consumer.assignment())
            self.paused = True
        msg = self.consumer.poll(0)
        if msg is not None and msg.error() is None:
            # Fetched before the pause took effect: put it back, it is not part of any batch.
            self.consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))

    def resume(self) -> None:
        # Unconditional: a rebalance during the wait may have left paused partitions behind the flag.
        self.consumer.resume(self.consumer.assignment())
        self.paused = False

    def commit(self, offsets: dict[TP, int], asynchronous: bool) -> None:
        self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=asynchronous)

    def close(self) -> None:
        self.consumer.close()
