"""Training rows from Kafka: the shop's own `review` events with a star rating.

Reads by assignment, never by subscription: the group id is throwaway and nothing is
ever committed, so no consumer group (the consumer's included) sees its offsets move.
Each partition is read from the start of the range (`--since`, or its first offset) up
to its end offset as it stood when the read began, so a run ends while producers
keep writing and the manifest can name exactly what was read.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tqdm import tqdm

from schemas import Limits, decode_event
from schemas.errors import EventError
from schemas.kafka_connection import KafkaConnection, KafkaSettingsError, connection_config
from schemas.timestamps import parse_duration

from .data import RatingCutoffs, SourceRow
from .errors import TrainerError

KAFKA_PREFIX = "kafka:"
_FILE_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv")
# The trainer reads by assignment with a throwaway group: a user value for these would
# commit offsets in a real group or hide events from the read.
OWNED = {
    "group.id": "the trainer reads by assignment with a throwaway group and never commits",
    "enable.auto.commit": "the trainer never commits offsets",
    "auto.commit.enable": "the trainer never commits offsets",
    "enable.auto.offset.store": "the trainer never commits offsets",
    "isolation.level": "the trainer reads committed events only (read_committed)",
}


@dataclass(frozen=True)
class PartitionRange:
    topic: str
    partition: int
    start: int  # first offset read
    end: int  # one past the last offset read (the end offset when the read began)


@dataclass
class StreamReport:
    """What a read saw: the ranges (for the manifest) and why events were not used."""

    ranges: list[PartitionRange] = field(default_factory=list)
    events: int = 0
    used: int = 0
    invalid: Counter = field(default_factory=Counter)
    not_review: int = 0
    unrated: int = 0
    duplicate_event_ids: int = 0

    def as_dict(self) -> dict[str, Any]:
        topics: dict[str, dict[str, list[int]]] = {}
        for r in self.ranges:
            topics.setdefault(r.topic, {})[str(r.partition)] = [r.start, r.end]
        return {"topics": topics, "events": self.events, "used": self.used, "invalid": dict(self.invalid),
                "not_review": self.not_review, "unrated": self.unrated, "duplicate_event_ids": self.duplicate_event_ids}


def split_kafka_sources(specs: list[str]) -> tuple[list[str], list[str]]:
    """(topics, other specs). `kafka:a,b` arrives comma-split as ['kafka:a', 'b']: a bare name
    right after a kafka source, without a path separator or data-file suffix, is one more topic."""
    topics: list[str] = []
    others: list[str] = []
    in_kafka = False
    for spec in specs:
        if spec.startswith(KAFKA_PREFIX):
            topic, in_kafka = spec.removeprefix(KAFKA_PREFIX), True
        elif in_kafka and ":" not in spec and "/" not in spec and not spec.lower().endswith(_FILE_SUFFIXES):
            topic = spec
        else:
            others.append(spec)
            in_kafka = False
            continue
        if not topic:
            raise TrainerError(f"{spec!r}: name a topic after kafka:")
        if topic not in topics:
            topics.append(topic)
    return topics, others


def since_ms(since: str, now_ms: int) -> int | None:
    """`--since`: a duration back from now (7d, 12h) or an RFC 3339 time; '' = from the first offset."""
    if not since:
        return None
    try:
        return now_ms - parse_duration(since) * 1000
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        raise TrainerError(f"--since {since!r} is neither a duration (7d, 12h) nor a time (2026-11-01T00:00:00Z)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _consumer(connection: KafkaConnection):
    from confluent_kafka import Consumer

    try:
        config = connection_config(connection, "trainer", OWNED)
    except KafkaSettingsError as exc:
        raise TrainerError(str(exc)) from None
    return Consumer({**config, "group.id": f"sentiment-trainer-{uuid.uuid4().hex}", "enable.auto.commit": False,
                     "enable.auto.offset.store": False, "auto.offset.reset": "earliest", "isolation.level": "read_committed"})


def _ranges(consumer, topics: list[str], start_ms: int | None, timeout_s: float) -> list[PartitionRange]:
    from confluent_kafka import KafkaException, TopicPartition

    ranges = []
    try:
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
            if metadata.error is not None:
                raise TrainerError(f"topic {topic!r}: {metadata.error.str()}")
            partitions = sorted(metadata.partitions)
            starts = {}
            if start_ms is not None:
                found = consumer.offsets_for_times([TopicPartition(topic, p, start_ms) for p in partitions], timeout=timeout_s)
                starts = {tp.partition: tp.offset for tp in found}
            for partition in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
                start = starts.get(partition, low)
                start = high if start < 0 else max(start, low)  # -1: nothing at or after --since
                ranges.append(PartitionRange(topic, partition, start, high))
    except KafkaException as exc:
        raise TrainerError(f"cannot read topics {', '.join(topics)}: {exc.args[0].str()}") from None
    return ranges


def newest(ranges: list[PartitionRange], max_events: int) -> list[PartitionRange]:
    """Trim each range's start so at most `max_events` offsets are read, keeping the newest of each partition."""
    total = sum(r.end - r.start for r in ranges)
    if not max_events or total <= max_events:
        return ranges
    return [PartitionRange(r.topic, r.partition, r.end - (r.end - r.start) * max_events // total, r.end) for r in ranges]


def read_reviews(topics: list[str], connection: KafkaConnection, cutoffs: RatingCutoffs, *, since: str = "",
                 max_events: int = 0, limits: Limits = Limits(), timeout_s: float = 30.0) -> tuple[list[SourceRow], StreamReport]:
    """Rated reviews from `topics`, validated as the consumer validates them, first of each event_id kept.

    Rows come back in (topic, partition, offset) order, whatever order the partitions arrived
    in, so the same offsets give the same training order and the same run."""
    from confluent_kafka import TopicPartition

    consumer = _consumer(connection)
    report = StreamReport()
    by_partition: dict[tuple[str, int], list[SourceRow]] = defaultdict(list)
    try:
        report.ranges = newest(_ranges(consumer, topics, since_ms(since, int(time.time() * 1000)), timeout_s), max_events)
        pending = {(r.topic, r.partition): r.end for r in report.ranges if r.start < r.end}
        consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in report.ranges if r.start < r.end])
        total = sum(r.end - r.start for r in report.ranges)
        idle_since = time.monotonic()
        with tqdm(total=total, desc="read " + ",".join(topics), unit="event", dynamic_ncols=True) as bar:
            while pending:
                messages = consumer.consume(500, timeout=1.0)
                if not messages:
                    if time.monotonic() - idle_since > timeout_s:
                        left = ", ".join(f"{t}[{p}]" for t, p in sorted(pending))
                        raise TrainerError(f"no events for {timeout_s:.0f} s from {left} before their end offsets; is the broker reachable?")
                    continue
                idle_since = time.monotonic()
                for message in messages:
                    if message.error() is not None:
                        if message.error().fatal():
                            raise TrainerError(f"reading {message.topic()}: {message.error().str()}")
                        continue
                    key = (message.topic(), message.partition())
                    end = pending.get(key)
                    if end is None or message.offset() >= end:
                        continue
                    report.events += 1
                    bar.update(1)
                    row = _row(message, report, cutoffs, limits)
                    if row is not None:
                        by_partition[key].append(row)
                    if message.offset() >= end - 1:
                        del pending[key]
                # Transaction markers and compacted gaps take offsets no message carries.
                for key in list(pending):
                    position = consumer.position([TopicPartition(*key)])[0].offset
                    if position >= pending[key]:
                        del pending[key]
    finally:
        consumer.close()
    rows: list[SourceRow] = []
    seen_ids: set[str] = set()
    for key in sorted(by_partition):
        for row in by_partition[key]:
            if row.split_key in seen_ids:  # a redelivered event: the first copy counts
                report.duplicate_event_ids += 1
                continue
            seen_ids.add(row.split_key)
            rows.append(row)
    report.used = len(rows)
    return rows, report


def _row(message, report: StreamReport, cutoffs: RatingCutoffs, limits: Limits) -> SourceRow | None:
    """The training row of a rated review; None (counted in `report`) for anything else."""
    try:
        event = decode_event(message.value(), limits)
    except EventError as exc:
        report.invalid[str(exc.code)] += 1
        return None
    if event.event_type != "review":
        report.not_review += 1
        return None
    rating = event.data.get("rating")
    if rating is None:
        report.unrated += 1
        return None
    return SourceRow(event.text, cutoffs.label(rating), f"{KAFKA_PREFIX}{message.topic()}", f"event:{event.event_id}")
