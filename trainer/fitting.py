"""Fitting what a model is served with on its own outputs, and scoring it.

From the validation split: the temperature, the decision rule and the share rates; on the
test split: scores per source. Run once on the torch model (the manifest's top level) and
once on each exported ONNX graph through the consumer's runner (its `onnx.files` entry), so
the int8 graph the consumer serves by default is calibrated on what it computes
(model_runtime/fitted.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from model_runtime.calibration import apply_temperature
from model_runtime.stats.rates import CHECKPOINT_RATES, measure_rates

from .calibrate import calibrate
from .compare import scores_by_source
from .data import Example
from .stream import KAFKA_PREFIX
from .thresholds import tune_decision_rule


@dataclass
class Fit:
    fields: dict[str, Any]  # manifest fields: calibration, decision, share_estimation (and stream_rates from kafka: data)
    metrics: dict[str, Any]  # validation, test, test_per_source

    @property
    def temperature(self) -> float:
        return self.fields["calibration"]["temperature"]

    @property
    def decision(self) -> dict[str, Any]:
        return self.fields["decision"]


def _truth(rows: Sequence[Example], labels: Sequence[str]) -> np.ndarray:
    return np.array([list(labels).index(e.label) for e in rows])


def _stream_rates(test: Sequence[Example], test_probs: np.ndarray, labels: Sequence[str]) -> dict:
    """The rates of the test split's reviews read from Kafka: the shop's own domain, which the
    validation split's rates do not transfer to (model_runtime/stats/rates.py)."""
    mask = np.array([e.source.startswith(KAFKA_PREFIX) for e in test], dtype=bool)
    if not mask.any():
        return {}
    y = _truth(test, labels)[mask]
    return {CHECKPOINT_RATES["checkpoint_stream"]: measure_rates(test_probs[mask], y, labels, "checkpoint_stream").as_dict()}


def fit_and_score(raw_val: np.ndarray, raw_test: np.ndarray, validation: Sequence[Example], test: Sequence[Example],
                  labels: Sequence[str], report_dir: str = "") -> Fit:
    """Everything fitted on one model's uncalibrated validation probabilities, and its scores."""
    val_true = _truth(validation, labels)
    calibration = calibrate(raw_val, val_true, report_dir)
    val_probs = apply_temperature(raw_val, calibration["temperature"])
    decision, _ = tune_decision_rule(val_probs, val_true, labels)
    test_probs = apply_temperature(raw_test, calibration["temperature"])
    test_scores = scores_by_source(test_probs, test, labels, decision)
    fields = {"decision": decision, "calibration": calibration,
              CHECKPOINT_RATES["validation"]: measure_rates(val_probs, val_true, labels, "validation").as_dict(),
              **_stream_rates(test, test_probs, labels)}
    metrics = {"validation": scores_by_source(val_probs, validation, labels, decision)["overall"],
               "test": test_scores["overall"], "test_per_source": test_scores["per_source"]}
    return Fit(fields, metrics)


def accuracy_line(metrics: dict[str, Any]) -> str:
    """Test accuracy / macro-F1 overall and per source, for the log."""
    parts = [("overall", metrics["test"]), *sorted(metrics["test_per_source"].items())]
    return ", ".join(f"{name} {m['accuracy']:.4f} / {m['macro_f1']:.4f}" for name, m in parts)
