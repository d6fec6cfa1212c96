"""What a model is served with besides its weights: the temperature, decision rule and share
rates the trainer fitted on that model's own validation outputs.

The manifest's top level holds the torch model's. Each ONNX graph's `onnx.files` entry holds its
own, fitted on the graph's outputs through the same runner the consumer uses: int8 shifts the
probabilities, so torch's temperature, thresholds and rates are not the int8 graph's. A graph
without its own (exported after publishing, into the ONNX cache, or by a trainer before this)
is served with the top-level ones.
"""

from __future__ import annotations

from typing import Any, Mapping

from .stats.rates import CHECKPOINT_RATES

FITTED_FIELDS = ("calibration", "decision", *CHECKPOINT_RATES.values())


def has_own_fit(entry: Mapping[str, Any]) -> bool:
    """Whether a graph's listing entry carries its own calibration and decision rule."""
    return "calibration" in entry and "decision" in entry


def served_with(manifest: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest as the graph of `entry` is served: its own fitted fields in place of the top-level ones
    (all of them, so no torch rate survives next to the graph's own)."""
    if not has_own_fit(entry):
        return dict(manifest)
    return {**{k: v for k, v in manifest.items() if k not in FITTED_FIELDS}, **{k: entry[k] for k in FITTED_FIELDS if k in entry}}
