"""The offsets a polled batch covers, and the partition epochs it was polled in (see source.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


@dataclass
class Span:
    """The offsets a batch covers per partition, and the partition epochs it was polled in.

    An epoch changes when a partition is revoked, lost, reassigned or rewound: a batch
    whose epochs are no longer current must not touch Redis or commit (it is abandoned).
    """

    first: dict[TopicPartition, int] = field(default_factory=dict)
    next: dict[TopicPartition, int] = field(default_factory=dict)
    epochs: dict[TopicPartition, int] = field(default_factory=dict)

    def add(self, tp: TopicPartition, offset: int, epoch: int) -> None:
        self.first.setdefault(tp, offset)
        self.next[tp] = offset + 1
        self.epochs.setdefault(tp, epoch)
