"""The candidate against the deployed checkpoint, on the same held-out test split.

A model trained on this week's stream can be worse than the one serving (a noisy week,
a broken producer). Publishing moves `latest`, and every consumer follows it, so the
gate runs first: both models score the candidate's test split, each with its own
calibration and decision rule, and a candidate whose macro-F1 falls more than
`--max-regression` below the deployed one is kept on disk but not made `latest`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from model_runtime.calibration import apply_temperature, temperature_of
from model_runtime.inference import predict_probs
from model_runtime.loading import load_checkpoint
from schemas.checkpoint import CheckpointError

from .data import Example
from .errors import TrainerError
from .evaluate import score

log = logging.getLogger("trainer")


def scores_by_source(probs: np.ndarray, examples: Sequence[Example], labels: Sequence[str], rule: dict[str, Any]) -> dict[str, Any]:
    """{"overall": metrics, "per_source": {source: metrics}}, without the reliability table."""
    gold = [e.label for e in examples]
    sources = np.array([e.source for e in examples])
    per_source = {}
    for source in sorted({e.source for e in examples}):
        mask = sources == source
        per_source[source] = _summary(score(probs[mask], [g for g, m in zip(gold, mask) if m], labels, rule))
    return {"overall": _summary(score(probs, gold, labels, rule)), "per_source": per_source}


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "reliability"}


def score_deployed(directory: Path, examples: Sequence[Example], device: str, batch_size: int) -> dict[str, Any]:
    """The deployed checkpoint's scores on `examples`; raises TrainerError when it can't be scored."""
    try:
        deployed = load_checkpoint(directory, device)
    except CheckpointError as exc:
        raise TrainerError(f"deployed checkpoint {directory} can't be loaded for the comparison: {exc}") from None
    manifest = deployed.manifest
    probs = predict_probs(deployed.model, deployed.tokenizer, [e.text for e in examples], max_length=manifest["max_length"],
                          batch_size=batch_size, device=deployed.device)
    probs = apply_temperature(probs, temperature_of(manifest))
    return {"version": manifest["version"], **scores_by_source(probs, examples, deployed.labels, manifest["decision"])}


def compare(candidate: dict[str, Any], deployed_dir: Path | None, examples: Sequence[Example], *, device: str,
            batch_size: int, max_regression: float) -> dict[str, Any] | None:
    """The comparison recorded in the manifest; `passed` decides whether `latest` moves."""
    if deployed_dir is None:
        return None
    try:
        deployed = score_deployed(deployed_dir, examples, device, batch_size)
    except TrainerError as exc:
        # A deployed model that can't score this split (other labels, unreadable) is no bar to clear.
        log.warning("no comparison with the deployed checkpoint: %s", exc)
        return {"deployed": str(deployed_dir), "comparable": False, "reason": str(exc), "passed": True}
    new_f1, old_f1 = candidate["overall"]["macro_f1"], deployed["overall"]["macro_f1"]
    passed = new_f1 >= old_f1 - max_regression
    log.info("held-out test split (%d texts): deployed %s macro-F1 %.4f, candidate %.4f (%+.4f; publishing needs >= %.4f): %s",
             len(examples), deployed["version"], old_f1, new_f1, new_f1 - old_f1, old_f1 - max_regression,
             "passed" if passed else "refused")
    return {"deployed": deployed["version"], "comparable": True, "split": "test", "n": len(examples),
            "metric": "macro_f1", "max_regression": max_regression, "deployed_scores": deployed,
            "delta_macro_f1": round(new_f1 - old_f1, 4), "passed": passed}
