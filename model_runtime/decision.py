"""The decision rule that turns class probabilities into a label.

The trainer tunes it on the validation split and stores it in the manifest; the
trainer's evaluation and the consumer both apply it through `decide`, never a copy.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

NEGATIVE, NEUTRAL, POSITIVE = "negative", "neutral", "positive"


def sentiment_score(probs: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """score = P(positive) - P(negative), in [-1, 1], one per row."""
    return probs[:, labels.index(POSITIVE)] - probs[:, labels.index(NEGATIVE)]


def decide(probs: np.ndarray, labels: Sequence[str], rule: Mapping[str, Any]) -> np.ndarray:
    """Label indices for a (n, len(labels)) probability matrix under a manifest rule.

    `argmax`: the most probable label.
    `neutral_band`: negative when score < negative_below, positive when score >
    positive_above, neutral in between (needs a neutral label).
    """
    kind = rule["kind"]
    if kind == "argmax":
        return probs.argmax(axis=1)
    if kind == "neutral_band":
        score = sentiment_score(probs, labels)
        out = np.full(len(probs), labels.index(NEUTRAL), dtype=np.int64)
        out[score < rule["negative_below"]] = labels.index(NEGATIVE)
        out[score > rule["positive_above"]] = labels.index(POSITIVE)
        return out
    raise ValueError(f"unknown decision rule kind {kind!r}")


def decide_binary(probs: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Binary verdict (0 = negative, 1 = positive) by comparing P(negative) with P(positive)."""
    return (probs[:, labels.index(POSITIVE)] > probs[:, labels.index(NEGATIVE)]).astype(np.int64)
