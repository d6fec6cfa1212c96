"""What flows between the steps: a polled batch and its records (kafka/span.py: the offsets it covers)."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import ValidEvent

from ..kafka.output import Outgoing
from ..kafka.span import Span
from ..state.counters import Increment, RatedExample

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
