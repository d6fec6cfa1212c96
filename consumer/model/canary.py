"""Canary: a new version labels a sample of live traffic in shadow before it takes over.

The trainer's gate scores a candidate on held-out history; the canary asks what it would
change on today's traffic. For a share of each batch's texts the candidate runs next to
the active model (its outputs go nowhere). Once `min_events` are compared, the candidate
is promoted when it agrees with the active model on at least `min_agreement` of them,
and refused otherwise; either way the running model served every event meanwhile.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

Decision = Literal["promote", "refuse"] | None


@dataclass(frozen=True)
class CanaryPolicy:
    share: float  # of each batch's texts, per route
    min_events: int
    min_agreement: float

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1 or self.min_events < 1 or not 0 <= self.min_agreement <= 1:
            raise ValueError(f"canary needs 0 < --canary-share <= 1, --canary-min-events >= 1 and 0 <= --canary-min-agreement <= 1, "
                             f"got {self.share}, {self.min_events}, {self.min_agreement}")


@dataclass
class Canary:
    candidate: object
    policy: CanaryPolicy
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    compared: int = 0
    agreed: int = 0
    active_labels: Counter = field(default_factory=Counter)
    candidate_labels: Counter = field(default_factory=Counter)

    @property
    def agreement(self) -> float:
        return self.agreed / self.compared if self.compared else 0.0

    def share_difference(self) -> dict[str, float]:
        """Candidate's share of each label minus the active model's, on the compared sample."""
        names = set(self.active_labels) | set(self.candidate_labels)
        return {name: (self.candidate_labels[name] - self.active_labels[name]) / max(1, self.compared) for name in sorted(names)}

    def observe(self, texts: list[str], active_labels: list[str | None]) -> Decision:
        """Shadow a sample of one batch (the inference thread); the decision once enough is seen."""
        sample = [i for i, label in enumerate(active_labels) if label is not None and self.rng.random() < self.policy.share]
        if sample:
            shadow = self.candidate.classify([texts[i] for i in sample]).labels
            for i, label in zip(sample, shadow):
                self.compared += 1
                self.agreed += label == active_labels[i]
                self.active_labels[active_labels[i]] += 1
                self.candidate_labels[label] += 1
        if self.compared < self.policy.min_events:
            return None
        return "promote" if self.agreement >= self.policy.min_agreement else "refuse"
