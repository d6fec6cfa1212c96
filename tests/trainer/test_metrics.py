"""Metrics, the decision rule and evaluation scoring on hand-built cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from model_runtime.decision import decide, decide_binary
from trainer.evaluate import score
from trainer.metrics import classification_report, expected_calibration_error
from trainer.thresholds import tune_decision_rule

LABELS = ["negative", "neutral", "positive"]


def test_known_confusion_matrix_and_f1():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 2])
    report = classification_report(y_true, y_pred, LABELS)
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [1, 0, 4]]
    assert report["accuracy"] == 0.7
    assert report["per_class"]["negative"] == {"precision": 0.6667, "recall": 0.6667, "f1": 0.6667, "support": 3}
    assert report["per_class"]["positive"] == {"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 5}
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.8) / 3, abs=1e-4)


def test_ece_of_known_bins():
    confidence = np.array([0.9, 0.9, 0.9, 0.9, 0.6, 0.6])
    correct = np.array([True, True, True, False, True, False])
    ece, bins = expected_calibration_error(confidence, correct)
    # bin 0.9: accuracy 0.75 vs 0.9 (4 of 6); bin 0.6: 0.5 vs 0.6 (2 of 6)
    assert ece == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.1)
    assert [b["count"] for b in bins] == [2, 4]


def test_neutral_band_rule():
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8], [0.45, 0.1, 0.45]])
    rule = {"kind": "neutral_band", "negative_below": -0.2, "positive_above": 0.2}
    assert decide(probs, LABELS, rule).tolist() == [0, 1, 2, 1]
    assert decide(probs, LABELS, {"kind": "argmax"}).tolist() == [0, 2, 2, 0]
    assert decide_binary(probs, LABELS).tolist() == [0, 1, 1, 0]


def test_tuning_finds_a_band_when_neutral_hides_in_the_middle():
    rng = np.random.default_rng(0)
    # Neutral texts get a flat-ish distribution whose argmax is rarely "neutral".
    neg = rng.dirichlet([8, 3, 1], 200)
    pos = rng.dirichlet([1, 3, 8], 200)
    neu = rng.dirichlet([4, 3.5, 4], 200)
    probs = np.vstack([neg, neu, pos])
    y = np.repeat([0, 1, 2], 200)
    rule, tuned = tune_decision_rule(probs, y, LABELS)
    argmax_f1 = classification_report(y, probs.argmax(1), LABELS)["macro_f1"]
    assert rule["kind"] == "neutral_band"
    assert tuned > argmax_f1 + 0.05


def test_score_binary_mode_when_data_lacks_neutral():
    probs = np.array([[0.5, 0.4, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.35, 0.4, 0.25]])
    report = score(probs, ["negative", "positive", "positive", "positive"], LABELS, {"kind": "argmax"})
    assert report["mode"] == "binary"
    assert report["labels"] == ["negative", "positive"]
    assert report["confusion_matrix"] == [[1, 0], [1, 2]]
    multi = score(probs, ["negative", "neutral", "positive", "neutral"], LABELS, {"kind": "argmax"})
    assert multi["mode"] == "multiclass" and multi["accuracy"] == 1.0
