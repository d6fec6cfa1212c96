"""A model version's rates: the mean calibrated probability of each label per true label.

Adjusted counting inverts this matrix M (rows: true label, columns: predicted label) to
correct the mean probability a stream shows. Its value depends on where it was measured:
rates from the validation split of the training corpora did not transfer to the shop's
reviews (every share biased low). So three sources, best first:

  stream             rated reviews the consumer saw, per model version (stars are weak
                     labels from the shop's own domain), once every label has enough
  checkpoint_stream  the trainer's test split of reviews read from Kafka (kafka: data)
  validation         the trainer's validation split

Each row also keeps its size and the variance of P(negative) among its examples, so the
share interval can include the rates' own uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np

NEGATIVE = "negative"


@dataclass(frozen=True)
class RatingCutoffs:
    """Stars to labels: <= negative_max is negative, >= positive_min is positive, else neutral."""

    negative_max: int = 2
    positive_min: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.negative_max < self.positive_min <= 5:
            raise ValueError(f"rating cut-offs must satisfy 1 <= negative_max < positive_min <= 5, got {self.negative_max}, {self.positive_min}")

    def label(self, rating: int) -> str:
        if rating <= self.negative_max:
            return NEGATIVE
        return "positive" if rating >= self.positive_min else "neutral"


@dataclass(frozen=True)
class Rates:
    labels: tuple[str, ...]
    mean_probs: np.ndarray  # [true label][predicted label]
    support: tuple[int, ...]  # examples per true label
    negative_variance: tuple[float, ...]  # variance of P(negative) among each true label's examples
    source: str  # "stream" | "checkpoint_stream" | "validation"

    @property
    def examples(self) -> int:
        return int(sum(self.support))

    # Cached: a read of /top estimates hundreds of subjects with the same few Rates.
    @cached_property
    def present(self) -> list[int]:
        """The true labels the rates have examples of. A domain without one (a binary corpus, a shop
        without 3-star reviews) is solved over the others: its share of the missing label is taken as 0."""
        return [k for k, n in enumerate(self.support) if n > 0]

    @cached_property
    def solver(self) -> np.ndarray:
        """The least-squares inverse of the present rows' mean probabilities: π = solver · q (pacc)."""
        return np.linalg.pinv(self.mean_probs[self.present].T)

    def usable(self) -> bool:
        """Invertible for the negative share: a classifier barely better than chance cannot be corrected."""
        if NEGATIVE not in self.labels:
            return False
        i = self.labels.index(NEGATIVE)
        others = [self.mean_probs[k][i] for k in self.present if k != i]
        return i in self.present and bool(others) and self.mean_probs[i][i] - max(others) > 0.05

    def as_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "mean_probs": [[round(float(v), 6) for v in row] for row in self.mean_probs],
                "support": list(self.support), "negative_variance": [round(v, 6) for v in self.negative_variance]}

    @classmethod
    def from_dict(cls, params: Mapping[str, Any], source: str) -> "Rates":
        """From a manifest's rates (older manifests lack the variances: the Bernoulli bound m(1 - m) stands in)."""
        labels = tuple(params["labels"])
        m = np.array(params["mean_probs"], dtype=float)
        support = tuple(int(s) for s in params.get("support", [0] * len(labels)))
        i = labels.index(NEGATIVE) if NEGATIVE in labels else 0
        variance = params.get("negative_variance") or [float(m[k][i] * (1 - m[k][i])) for k in range(len(labels))]
        return cls(labels, m, support, tuple(float(v) for v in variance), source)


def measure_rates(probs: np.ndarray, y: np.ndarray, labels: Sequence[str], source: str) -> Rates:
    """Rates from calibrated probabilities of labelled examples (y: index of each true label)."""
    i = list(labels).index(NEGATIVE) if NEGATIVE in labels else 0
    rows, support, variance = [], [], []
    for k in range(len(labels)):
        mask = y == k
        support.append(int(mask.sum()))
        rows.append(probs[mask].mean(axis=0) if mask.any() else np.eye(len(labels))[k])
        variance.append(float(probs[mask, i].var()) if mask.any() else 0.0)
    return Rates(tuple(labels), np.array(rows, dtype=float), tuple(support), tuple(variance), source)


def rates_from_sums(labels: Sequence[str], sums: Mapping[str, Mapping[str, float]], source: str = "stream") -> Rates:
    """Rates from sums kept per true label: "n" (examples), "p:<label>" (sum of P(label)), "s:negative"
    (sum of P(negative)²). Labels without examples get an identity row and support 0 (not usable)."""
    rows, support, variance = [], [], []
    for k, true in enumerate(labels):
        row = sums.get(true, {})
        n = row.get("n", 0.0)
        support.append(int(n))
        if n <= 0:
            rows.append(np.eye(len(labels))[k])
            variance.append(0.0)
            continue
        means = [row.get(f"p:{label}", 0.0) / n for label in labels]
        rows.append(means)
        m_neg = row.get(f"p:{NEGATIVE}", 0.0) / n
        variance.append(max(0.0, row.get(f"s:{NEGATIVE}", 0.0) / n - m_neg * m_neg))
    return Rates(tuple(labels), np.array(rows, dtype=float), tuple(support), tuple(variance), source)


# A checkpoint's rates by source, best first, and the manifest field the trainer writes each to.
CHECKPOINT_RATES = {"checkpoint_stream": "stream_rates", "validation": "share_estimation"}


def checkpoint_rates(manifest: Mapping[str, Any]) -> dict[str, Rates]:
    """The rates a checkpoint carries, by source: its stream test split's (kafka: data) and its validation split's."""
    return {source: Rates.from_dict(manifest[field], source) for source, field in CHECKPOINT_RATES.items() if manifest.get(field)}


def choose_rates(stream: Rates | None, checkpoint: Sequence[Rates], min_per_label: int) -> Rates | None:
    """The best usable rates: the stream's once every label it has seen has min_per_label rated examples,
    else the checkpoint's (its stream test split before its validation split); None when nothing is usable."""
    if stream is not None and stream.usable() and min(stream.support[k] for k in stream.present) >= min_per_label:
        return stream
    for rates in checkpoint:
        if rates.usable():
            return rates
    return None
