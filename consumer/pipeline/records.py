"""What flows between the steps: a polled batch, its records, and the offsets it covers."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import ValidEvent

from ..kafka.output import Outgoing
from ..state.counters import Increment, RatedExample

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class Source:
    """Where an input message came from, and its bytes (kept for dead letters)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @classmethod
    def of(cls, msg) -> "Source":
        return cls(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())


@dataclass
class Span:
    """The offsets a batch covers per partition, and the partition epochs it was polled in.

    An epoch changes when a partition is revoked, lost, reassigned or rewound: a batch
    whose epochs are no longer current must not touch Redis or commit (it is abandoned).
    """

    first: dict[TopicPartition, int] = field(default_factory=dict)
    next: dict[TopicPartition, int] = field(default_factory=dict)
    epochs: dict[TopicPartition, int] = field(default_factory=dict)

    def add(self, source: Source, epoch: int) -> None:
        tp = (source.topic, source.partition)
        self.first.setdefault(tp, source.offset)
        self.next[tp] = source.offset + 1
        self.epochs.setdefault(tp, epoch)


@dataclass
class DecodedBatch:
    """A polled batch after validation: valid events to label, dead letters ready to send."""

    valid: list[tuple[Source, ValidEvent]]
    invalid: list["Record"]
    span: Span
    size: int
    received_ms: int


@dataclass
class Record:
    """One input message's outcome: the message to publish and its counter increments."""

    source: Source
    outgoing: Outgoing
    increments: list[Increment] = field(default_factory=list)
    rated: list[RatedExample] = field(default_factory=list)  # a review with stars: its version's rates


@dataclass
class LabelledBatch:
    """Everything a batch must get durably out before its offsets may be committed."""

    records: list[Record]
    span: Span
    size: int

    @property
    def increments(self) -> list[Increment]:
        return [inc for record in self.records for inc in record.increments]

    @property
    def rated(self) -> list[RatedExample]:
        return [example for record in self.records for example in record.rated]
