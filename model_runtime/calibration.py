"""Calibration of class probabilities.

Temperature scaling (Guo et al. 2017): one scalar T > 0 divides the logits before the
softmax. It is applied to probabilities here (softmax(log p / T) equals softmax(z / T)
for the logits z that produced p), so any stored probability can be re-calibrated.
It never changes the argmax. Fitted on the validation split by minimising the negative
log-likelihood; T = 1 for manifests written before calibration existed.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)).mean())


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises validation NLL: a log-spaced grid, then a finer one around the best."""
    grid = np.geomspace(0.05, 20.0, 121)
    best = min(grid, key=lambda t: negative_log_likelihood(apply_temperature(probs, float(t)), y))
    fine = np.geomspace(best / 1.06, best * 1.06, 41)
    return float(min(fine, key=lambda t: negative_log_likelihood(apply_temperature(probs, float(t)), y)))


def temperature_of(manifest: Mapping[str, Any]) -> float:
    return float(manifest.get("calibration", {}).get("temperature", 1.0))
