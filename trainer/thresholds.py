"""Tune the decision rule on the validation split for macro-F1."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from model_runtime.decision import decide

from .metrics import macro_f1

GRID = np.round(np.arange(-0.95, 0.951, 0.05), 2)


def tune_decision_rule(probs: np.ndarray, y_true: np.ndarray, labels: Sequence[str]) -> tuple[dict[str, Any], float]:
    """Best of argmax and every neutral band (lo < hi on a 0.05 grid) by validation macro-F1.

    Argmax wins ties, so a band is only used when it measurably helps.
    """
    best_rule: dict[str, Any] = {"kind": "argmax"}
    best = macro_f1(y_true, decide(probs, labels, best_rule), len(labels))
    if "neutral" not in labels:
        return best_rule, best
    for lo in GRID:
        for hi in GRID[GRID >= lo]:
            rule = {"kind": "neutral_band", "negative_below": float(lo), "positive_above": float(hi)}
            score = macro_f1(y_true, decide(probs, labels, rule), len(labels))
            if score > best + 1e-9:
                best_rule, best = rule, score
    return best_rule, best
