"""Calibration, rates and share estimation on synthetic classifiers with known error rates."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from model_runtime.calibration import apply_temperature, fit_temperature, temperature_of
from model_runtime.stats.rates import Rates, choose_rates, measure_rates, rates_from_sums
from model_runtime.stats.shares import Tally, estimate_negative_share, pacc

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


def tally(rows: np.ndarray) -> Tally:
    """What the counters hold for these calibrated probability rows."""
    return Tally(Counter(LABELS[i] for i in rows.argmax(axis=1)), {LABELS[j]: float(rows[:, j].sum()) for j in range(3)},
                 float((rows[:, 0] ** 2).sum()))


def _stream(rng, share, n, probs_by_label) -> Tally:
    """A stream with a known negative share; the rest split evenly between neutral and positive."""
    k = int(round(share * n))
    labels = [0] * k + [1] * ((n - k) // 2) + [2] * (n - k - (n - k) // 2)
    return tally(np.stack([probs_by_label[c][rng.integers(0, len(probs_by_label[c]))] for c in labels]))


def _model(rng, bias, n_rates=6000):
    """A calibrated synthetic model: its rates from n_rates labelled examples, and a pool to draw streams from."""
    y_val = rng.integers(0, 3, n_rates)
    val = _classifier(rng, y_val, bias=bias)
    t = fit_temperature(val, y_val)
    rates = measure_rates(apply_temperature(val, t), y_val, LABELS, "validation")
    y_pool = rng.integers(0, 3, 30000)
    pool = apply_temperature(_classifier(rng, y_pool, bias=bias), t)
    return rates, {c: pool[y_pool == c] for c in range(3)}


def test_pacc_corrects_the_bias_that_counting_has():
    rng = np.random.default_rng(2)
    rates, by_label = _model(rng, 0.6)
    errors = {"cc": [], "pcc": [], "pacc": []}
    for share in (0.02, 0.05, 0.1, 0.2, 0.35, 0.6):
        t = _stream(rng, share, 3000, by_label)
        errors["cc"].append(abs(t.counts["negative"] / t.n - share))
        errors["pcc"].append(abs(t.prob_sums["negative"] / t.n - share))
        estimate = estimate_negative_share({"en:v1": t}, {"en:v1": rates})
        assert estimate.estimator == "pacc"  # its interval: test_the_interval_covers_...
        errors["pacc"].append(abs(estimate.share - share))
    mean = {k: float(np.mean(v)) for k, v in errors.items()}
    assert mean["pacc"] < 0.02 and max(errors["pacc"]) < 0.05
    assert mean["cc"] > 2 * mean["pacc"] and mean["pcc"] > mean["pacc"]


def test_two_versions_each_corrected_with_their_own_rates():
    rng = np.random.default_rng(3)
    (rates_a, pool_a), (rates_b, pool_b) = _model(rng, 0.9), _model(rng, -0.4)
    own, swapped = [], []
    for share in (0.05, 0.2, 0.35, 0.6):
        tallies = {"en:a": _stream(rng, share, 2000, pool_a), "en:b": _stream(rng, share, 1000, pool_b)}
        combined = estimate_negative_share(tallies, {"en:a": rates_a, "en:b": rates_b})
        assert combined.estimator == "pacc" and combined.count == 3000
        assert [m["model"] for m in combined.as_dict()["models"]] == ["en:a", "en:b"]
        own.append(abs(combined.share - share))
        swapped.append(abs(estimate_negative_share(tallies, {"en:a": rates_b, "en:b": rates_b}).share - share))
    assert np.mean(own) < 0.02 and np.mean(swapped) > 2 * np.mean(own)  # one version's rates on another's sums are wrong


def _rows(rng, pool, labels: np.ndarray) -> np.ndarray:
    """Calibrated probability rows for these true labels, drawn from the model's pool (vectorised)."""
    out = np.empty((len(labels), 3), dtype=np.float32)
    for c in range(3):
        mask = labels == c
        out[mask] = pool[c][rng.integers(0, len(pool[c]), int(mask.sum()))]
    return out


INTERVAL_SHARES = (0.05, 0.2, 0.4)


def _interval_trials(rng, pool, rate_examples: int, events: int, windows: int = 900) -> dict:
    """Simulated windows of a subject with a known negative share (INTERVAL_SHARES in turn): each window
    draws its events' true labels (share negative, the rest neutral or positive: a window is a sample of
    the subject's traffic, its composition not fixed at exactly the share) and is corrected with
    fresh rates from rate_examples rated examples per label. Per share: whether the 95% interval covered
    the true share; z: the error over the stated standard error; window_only: whether an interval from
    the window's sampling variance alone (the rates' error left out) covered."""
    y = np.repeat(np.arange(3), rate_examples)
    covered: dict[float, list[bool]] = {share: [] for share in INTERVAL_SHARES}
    window_only, z = [], []
    for i in range(windows):
        share = INTERVAL_SHARES[i % len(INTERVAL_SHARES)]
        rates = measure_rates(_rows(rng, pool, y), y, LABELS, "stream")
        truth = np.where(rng.random(events) < share, 0, rng.integers(1, 3, events))
        estimate = estimate_negative_share({"en:v": tally(_rows(rng, pool, truth))}, {"en:v": rates})
        assert estimate.estimator == "pacc"
        covered[share].append(estimate.low <= share <= estimate.high)
        (_, version, _), = estimate.versions
        window_only.append(abs(estimate.share - share) <= 1.96 * math.sqrt(version.sampling_variance))
        z.append((estimate.share - share) / math.sqrt(estimate.variance))
    return {"coverage": float(np.mean([c for cs in covered.values() for c in cs])),
            "by_share": {share: float(np.mean(c)) for share, c in covered.items()},
            "z_sd": float(np.std(z)), "z_mean": float(np.mean(z)), "window_only": float(np.mean(window_only))}


def _assert_covers(trials: dict) -> None:
    """The nominal 95% interval covers 93-97.5% of the time, and at least 91% at every share (not just on
    average; near 0 small windows over-cover, clipped there); its variance is the error's: errors over
    the stated standard error spread like a unit normal."""
    assert 0.93 <= trials["coverage"] <= 0.975, trials
    assert min(trials["by_share"].values()) >= 0.91, trials
    assert 0.88 <= trials["z_sd"] <= 1.12 and abs(trials["z_mean"]) <= 0.15, trials


def test_the_interval_covers_when_the_rates_come_from_few_examples():
    """Rates from 150 examples per label carry their own error, larger here than a 1,500-event window's:
    the interval must include it to cover (0.956 with this seed, 0.947-0.967 with ten others; README:
    0.93-0.95 on real reviews), and one that leaves it out covers about 0.7 (README: 79%)."""
    rng = np.random.default_rng(4)
    _, pool = _model(rng, 0.6)
    trials = _interval_trials(rng, pool, rate_examples=150, events=1500)
    _assert_covers(trials)
    assert trials["window_only"] <= 0.85 and trials["coverage"] - trials["window_only"] >= 0.1, trials


def test_the_interval_covers_small_windows_with_well_measured_rates():
    """The other regime: rates from 2,000 examples per label, windows of 200 events. The window's own
    error dominates, scaled by the correction's 1 / (m1 - m0)²; without that factor it covers about 0.75
    (0.957 with it, this seed; 0.948-0.967 with ten others)."""
    rng = np.random.default_rng(5)
    _, pool = _model(rng, 0.6)
    _assert_covers(_interval_trials(rng, pool, rate_examples=2000, events=200))


def test_a_domain_without_neutral_examples_is_solved_over_the_labels_it_has():
    """Rated reviews without any 3-star one (or a binary corpus): the rates have no neutral row."""
    rng = np.random.default_rng(6)
    _, pool = _model(rng, 0.6)
    y = np.repeat([0, 2], 400)
    rates = measure_rates(np.stack([pool[c][rng.integers(0, len(pool[c]))] for c in y]), y, LABELS, "stream")
    assert rates.support == (400, 0, 400) and rates.present == [0, 2] and rates.usable()
    assert choose_rates(rates, [], 50) is rates
    for share in (0.05, 0.3, 0.6):
        k = int(share * 2000)
        rows = np.vstack([pool[0][rng.integers(0, len(pool[0]), k)], pool[2][rng.integers(0, len(pool[2]), 2000 - k)]])
        estimate = estimate_negative_share({"v": tally(rows)}, {"v": rates})
        assert estimate.estimator == "pacc" and abs(estimate.share - share) < 0.03


def test_fallbacks():
    assert estimate_negative_share({}, {}).share is None
    counted = Tally(Counter(negative=3, positive=7))  # counters without probability sums
    cc = estimate_negative_share({"": counted}, {})
    assert cc.estimator == "cc" and cc.share == pytest.approx(0.3)
    soft = Tally(Counter(negative=3, positive=7), {"negative": 3.5, "positive": 6.5}, 2.0)
    pcc = estimate_negative_share({"en:v": soft}, {"en:v": None})
    assert pcc.estimator == "pcc" and pcc.share == pytest.approx(0.35)
    mixed = estimate_negative_share({"en:v": soft, "": counted}, {})
    assert mixed.estimator == "cc" and mixed.count == 20  # the weakest estimator any version needed
    small = estimate_negative_share({"v": Tally(Counter(negative=3, positive=7), {"negative": 3.0, "positive": 7.0}, 3.0)}, {})
    large = estimate_negative_share({"v": Tally(Counter(negative=300, positive=700), {"negative": 300.0, "positive": 700.0}, 300.0)}, {})
    assert small.high - small.low > 5 * (large.high - large.low)
    zero = estimate_negative_share({"v": Tally(Counter(positive=20), {"negative": 0.0, "positive": 20.0}, 0.0)}, {})
    assert zero.high > 0.02  # no collapse at zero


def test_stream_rates_are_chosen_once_every_label_has_enough():
    validation = Rates.from_dict({"labels": LABELS, "mean_probs": [[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.1, 0.2, 0.7]],
                                  "support": [500, 500, 500]}, "validation")
    sums = {"negative": {"n": 80, "p:negative": 60.0, "p:neutral": 12.0, "p:positive": 8.0, "s:negative": 50.0},
            "neutral": {"n": 20, "p:negative": 5.0, "p:neutral": 10.0, "p:positive": 5.0, "s:negative": 2.0},
            "positive": {"n": 400, "p:negative": 20.0, "p:neutral": 40.0, "p:positive": 340.0, "s:negative": 4.0}}
    stream = rates_from_sums(LABELS, sums)
    assert stream.support == (80, 20, 400) and stream.mean_probs[0][0] == pytest.approx(0.75)
    assert stream.negative_variance[0] == pytest.approx(50 / 80 - 0.75 ** 2)
    assert choose_rates(stream, [validation], 50) is validation  # 20 neutral reviews: too few
    assert choose_rates(stream, [validation], 20) is stream
    useless = Rates.from_dict({"labels": LABELS, "mean_probs": [[0.34, 0.33, 0.33]] * 3, "support": [9, 9, 9]}, "validation")
    assert choose_rates(None, [useless], 50) is None  # no better than chance: pcc, not a wild inversion


def test_pacc_solution_is_clipped_and_renormalised():
    m = np.array([[0.8, 0.1, 0.1], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8]])
    shares = pacc(np.array([0.05, 0.1, 0.85]), np.linalg.pinv(m.T))  # below what even an all-positive stream gives for negative
    assert shares.min() >= 0 and shares.sum() == pytest.approx(1) and shares[0] == 0
