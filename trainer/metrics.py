"""Classification metrics from one place: training's validation, the manifest, `evaluate`."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Rows are true labels, columns predicted labels."""
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width confidence bins, and the per-bin table for a reliability diagram."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    table, ece = [], 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high) if low > 0 else (confidence >= low) & (confidence <= high)
        count = int(in_bin.sum())
        if count == 0:
            continue
        accuracy, mean_conf = float(correct[in_bin].mean()), float(confidence[in_bin].mean())
        ece += count / len(confidence) * abs(accuracy - mean_conf)
        table.append({"low": float(low), "high": float(high), "count": count, "accuracy": accuracy, "confidence": mean_conf})
    return float(ece), table


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str],
                          confidence: np.ndarray | None = None) -> dict[str, Any]:
    """accuracy, macro_f1, per_class {precision, recall, f1, support}, confusion_matrix, ece."""
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    per_class, f1s = {}, []
    for i, name in enumerate(labels):
        tp, predicted, support = matrix[i, i], matrix[:, i].sum(), matrix[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(float(precision), 4), "recall": round(float(recall), 4),
                           "f1": round(float(f1), 4), "support": int(support)}
        if support:
            f1s.append(f1)
    report: dict[str, Any] = {
        "n": int(len(y_true)),
        "labels": list(labels),
        "accuracy": round(float((y_true == y_pred).mean()), 4) if len(y_true) else 0.0,
        "macro_f1": round(float(np.mean(f1s)), 4) if f1s else 0.0,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }
    if confidence is not None:
        ece, bins = expected_calibration_error(confidence, y_true == y_pred)
        report["ece"] = round(ece, 4)
        report["reliability"] = bins
    return report


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> float:
    """Macro F1 over labels present in y_true (fast path for threshold tuning)."""
    matrix = confusion_matrix(y_true, y_pred, n_labels)
    tp, predicted, support = np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(predicted + support > 0, 2 * tp / (predicted + support), 0.0)
    return float(f1[support > 0].mean())


def _macro_f1_weighted(weights: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro F1 of each row of example weights (a bootstrap resample's counts), over the labels it contains."""
    true_onehot = np.eye(n_labels)[y_true]
    pred_onehot = np.eye(n_labels)[y_pred]
    tp = weights @ (true_onehot * pred_onehot)
    support, predicted = weights @ true_onehot, weights @ pred_onehot
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    present = support > 0
    return (f1 * present).sum(axis=1) / present.sum(axis=1)


def paired_bootstrap_delta(y_true: np.ndarray, new_pred: np.ndarray, old_pred: np.ndarray, n_labels: int,
                           samples: int = 2000, seed: int = 13) -> np.ndarray:
    """Macro-F1(new) - macro-F1(old) on `samples` resamples of the same examples: paired, so the spread
    comes from where the two models disagree, not from how hard the examples are."""
    rng = np.random.default_rng(seed)
    deltas = []
    for start in range(0, samples, 250):  # resample counts in chunks: samples x n would not fit for large splits
        weights = rng.multinomial(len(y_true), np.full(len(y_true), 1 / len(y_true)), size=min(250, samples - start)).astype(np.float64)
        deltas.append(_macro_f1_weighted(weights, y_true, new_pred, n_labels) - _macro_f1_weighted(weights, y_true, old_pred, n_labels))
    return np.concatenate(deltas)
