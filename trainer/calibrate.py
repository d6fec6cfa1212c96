"""Temperature scaling on the validation split, with ECE and a reliability diagram before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from model_runtime.calibration import apply_temperature, fit_temperature, negative_log_likelihood

from .errors import TrainerError
from .metrics import expected_calibration_error


def _ece(probs: np.ndarray, y: np.ndarray) -> tuple[float, list[dict[str, float]]]:
    predicted = probs.argmax(axis=1)
    return expected_calibration_error(probs.max(axis=1), predicted == y)


def calibrate(raw_probs: np.ndarray, y: np.ndarray, report_dir: str = "") -> dict[str, Any]:
    """Fit T on validation; the manifest's `calibration` entry (optionally with plots in report_dir)."""
    temperature = fit_temperature(raw_probs, y)
    calibrated = apply_temperature(raw_probs, temperature)
    (ece_before, bins_before), (ece_after, bins_after) = _ece(raw_probs, y), _ece(calibrated, y)
    entry = {"kind": "temperature", "temperature": round(temperature, 4), "fitted_on": "validation",
             "validation_ece_before": round(ece_before, 4), "validation_ece_after": round(ece_after, 4),
             "validation_nll_before": round(negative_log_likelihood(raw_probs, y), 4),
             "validation_nll_after": round(negative_log_likelihood(calibrated, y), 4)}
    if report_dir:
        _write(entry, bins_before, bins_after, Path(report_dir))
    return entry


def _write(entry: dict[str, Any], before: list[dict], after: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainerError(f"report dir {out} is not writable: {exc.strerror}") from None
    (out / "calibration.json").write_bytes(orjson.dumps({**entry, "bins_before": before, "bins_after": after},
                                                        option=orjson.OPT_INDENT_2))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for bins, name, colour in ((before, f"before (ECE {entry['validation_ece_before']:.3f})", "darkred"),
                               (after, f"after T={entry['temperature']:.2f} (ECE {entry['validation_ece_after']:.3f})", "navy")):
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", color=colour, label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title="validation reliability")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "reliability_calibration.png", dpi=120)
    plt.close(fig)
