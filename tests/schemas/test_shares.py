"""Calibration and share estimation on synthetic classifiers with known error rates."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from model_runtime.calibration import apply_temperature, fit_temperature, share_parameters, temperature_of
from schemas.shares import estimate_negative_share, pacc, wilson

LABELS = ["negative", "neutral", "positive"]


def _classifier(rng, y, sharpness=2.0, bias=0.6):
    """Noisy logits that over-call 'negative' (bias), like an asymmetric real model; overconfident (sharpness)."""
    logits = rng.normal(0, 1.0, (len(y), 3))
    logits[np.arange(len(y)), y] += 1.6
    logits[:, 0] += bias
    logits *= sharpness
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def test_temperature_preserves_argmax_and_fits_an_overconfident_model():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 4000)
    probs = _classifier(rng, y, sharpness=3.0)
    t = fit_temperature(probs, y)
    assert t > 1.5  # overconfident: the fitted temperature softens it
    calibrated = apply_temperature(probs, t)
    assert (calibrated.argmax(axis=1) == probs.argmax(axis=1)).all()
    assert np.allclose(calibrated.sum(axis=1), 1, atol=1e-5)
    assert apply_temperature(probs, 1.0) is probs
    assert temperature_of({}) == 1.0 and temperature_of({"calibration": {"temperature": 2.5}}) == 2.5


def _stream(rng, share, n, probs_by_label):
    """A stream with a known negative share; the rest split evenly between neutral and positive."""
    k = int(round(share * n))
    labels = [0] * k + [1] * ((n - k) // 2) + [2] * (n - k - (n - k) // 2)
    rows = np.stack([probs_by_label[c][rng.integers(0, len(probs_by_label[c]))] for c in labels])
    counts = Counter(LABELS[i] for i in rows.argmax(axis=1))
    sums = {LABELS[j]: float(rows[:, j].sum()) for j in range(3)}
    return counts, sums


def test_pacc_corrects_the_bias_that_counting_has():
    rng = np.random.default_rng(2)
    y_val = rng.integers(0, 3, 6000)
    val = apply_temperature(_classifier(rng, y_val), 1.0)
    t = fit_temperature(val, y_val)
    val = apply_temperature(val, t)
    params = share_parameters(val, y_val, LABELS)
    y_pool = rng.integers(0, 3, 30000)
    pool = apply_temperature(_classifier(rng, y_pool), t)
    by_label = {c: pool[y_pool == c] for c in range(3)}
    errors = {"cc": [], "pcc": [], "pacc": []}
    for share in (0.02, 0.05, 0.1, 0.2, 0.35, 0.6):
        counts, sums = _stream(rng, share, 3000, by_label)
        n = sum(counts.values())
        errors["cc"].append(abs(counts["negative"] / n - share))
        errors["pcc"].append(abs(sums["negative"] / n - share))
        estimate = estimate_negative_share(counts, sums, params)
        assert estimate.estimator == "pacc" and estimate.low <= estimate.share <= estimate.high
        errors["pacc"].append(abs(estimate.share - share))
    mean = {k: float(np.mean(v)) for k, v in errors.items()}
    assert mean["pacc"] < 0.02 and max(errors["pacc"]) < 0.05
    assert mean["cc"] > 2 * mean["pacc"] and mean["pcc"] > mean["pacc"]


def test_fallbacks_and_intervals():
    assert estimate_negative_share(Counter(), {}, None).share is None
    cc = estimate_negative_share(Counter(negative=3, positive=7), {}, None)  # counters without probability sums
    assert cc.estimator == "cc" and cc.share == pytest.approx(0.3)
    pcc = estimate_negative_share(Counter(negative=3, positive=7), {"negative": 3.5, "positive": 6.5}, None)
    assert pcc.estimator == "pcc" and pcc.share == pytest.approx(0.35)
    small, large = wilson(0.3, 10), wilson(0.3, 1000)
    assert small[1] - small[0] > 3 * (large[1] - large[0])
    assert wilson(0.0, 20)[1] > 0.1  # no collapse at zero


def test_pacc_solution_is_clipped_and_renormalised():
    m = np.array([[0.8, 0.1, 0.1], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8]])
    shares = pacc(np.array([0.05, 0.1, 0.85]), m)  # below what even an all-positive stream gives for negative
    assert shares.min() >= 0 and shares.sum() == pytest.approx(1) and shares[0] == 0
