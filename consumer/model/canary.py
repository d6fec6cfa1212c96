"""Canary: a candidate version labels a sample of live traffic in shadow before it takes over.

The trainer's gate scores a candidate on held-out history; the canary asks what it would
change on today's traffic. For the group's share of each batch's texts the candidate runs
next to the model in service (its outputs go nowhere). Each process adds what it compared
to the group's tally (model_runtime/rollout.py), and the group decides once.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from model_runtime.rollout import CanaryRule


@dataclass
class Canary:
    candidate: object
    rule: CanaryRule
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    active_labels: Counter = field(default_factory=Counter)
    candidate_labels: Counter = field(default_factory=Counter)
    counted: int = 0  # shadowed events this process added to the group's tally

    def share_difference(self) -> dict[str, float]:
        """Candidate's share of each label minus the active model's, on this process's shadowed sample."""
        compared = sum(self.active_labels.values())
        names = set(self.active_labels) | set(self.candidate_labels)
        return {name: (self.candidate_labels[name] - self.active_labels[name]) / max(1, compared) for name in sorted(names)}

    def shadow(self, texts: list[str], active_labels: list[str | None]) -> tuple[int, int]:
        """Shadow a sample of one batch (the inference thread): (compared, agreed) on it."""
        sample = [i for i, label in enumerate(active_labels) if label is not None and self.rng.random() < self.rule.share]
        if not sample:
            return 0, 0
        shadow = self.candidate.classify([texts[i] for i in sample]).labels
        agreed = 0
        for i, label in zip(sample, shadow):
            agreed += label == active_labels[i]
            self.active_labels[active_labels[i]] += 1
            self.candidate_labels[label] += 1
        return len(sample), agreed
