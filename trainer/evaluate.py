"""Scoring predictions against gold labels, and the evaluate command's report + plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import orjson

from model_runtime.decision import decide, decide_binary

from .errors import TrainerError
from .metrics import classification_report

BINARY_LABELS = ("negative", "positive")


class Predictions(NamedTuple):
    mode: str  # binary or multiclass
    labels: Sequence[str]  # what the indices name
    y_true: np.ndarray
    y_pred: np.ndarray
    confidence: np.ndarray


def predictions(probs: np.ndarray, gold: Sequence[str], model_labels: Sequence[str], rule: dict[str, Any]) -> Predictions:
    """Gold and predicted label indices for one data set.

    Binary mode when the gold labels are only negative/positive but the model also
    has neutral: the verdict compares P(negative) with P(positive).
    """
    gold_set = set(gold)
    unknown = gold_set - set(model_labels)
    if unknown:
        raise TrainerError(f"data has labels {sorted(unknown)} that the model does not predict ({list(model_labels)})")
    if gold_set <= set(BINARY_LABELS) and "neutral" in model_labels:
        index = {name: i for i, name in enumerate(BINARY_LABELS)}
        pair = probs[:, [model_labels.index("negative"), model_labels.index("positive")]]
        confidence = pair.max(axis=1) / np.clip(pair.sum(axis=1), 1e-12, None)
        return Predictions("binary", BINARY_LABELS, np.array([index[g] for g in gold]), decide_binary(probs, model_labels), confidence)
    index = {name: i for i, name in enumerate(model_labels)}
    y_pred = decide(probs, model_labels, rule)
    return Predictions("multiclass", tuple(model_labels), np.array([index[g] for g in gold]), y_pred, probs[np.arange(len(probs)), y_pred])


def score(probs: np.ndarray, gold: Sequence[str], model_labels: Sequence[str], rule: dict[str, Any]) -> dict[str, Any]:
    """Metrics for one data set (binary mode as `predictions` says)."""
    p = predictions(probs, gold, model_labels, rule)
    return {"mode": p.mode, **classification_report(p.y_true, p.y_pred, p.labels, p.confidence)}


def write_report(report: dict[str, Any], report_dir: str | Path) -> list[Path]:
    """report.json, confusion_matrix.png and reliability.png in `report_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(report_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainerError(f"report dir {out} is not writable: {exc.strerror}") from None
    paths = [out / "report.json", out / "confusion_matrix.png", out / "reliability.png"]
    paths[0].write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))

    labels, matrix = report["labels"], np.array(report["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(4 + len(labels) * 0.6, 3.5 + len(labels) * 0.6))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > matrix.max() / 2 else "black")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true", title=f"{report['mode']}: accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)

    bins = report.get("reliability", [])
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    if bins:
        centers = [(b["low"] + b["high"]) / 2 for b in bins]
        ax.bar(centers, [b["accuracy"] for b in bins], width=1 / 15, edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", color="darkred", label="accuracy vs mean confidence")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=f"reliability (ECE {report.get('ece', 0):.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths
