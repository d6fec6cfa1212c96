"""The `evaluate` command: load a checkpoint, score it on data, optionally write plots."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from model_runtime.calibration import apply_temperature, temperature_of
from model_runtime.inference import predict_probs
from model_runtime.loading import load_checkpoint

from .data import RatingCutoffs, cap_per_source, load_examples, split_examples
from .errors import TrainerError
from .evaluate import score, write_report

if TYPE_CHECKING:
    from .cli import EvaluateArguments

SPLITS = ("train", "validation", "test", "all")


def _examples(args: "EvaluateArguments", manifest: dict[str, Any]):
    """Rows to score. builtin:NAME defaults to its test split under the checkpoint's split settings."""
    cutoffs = RatingCutoffs(args.negative_max_rating, args.positive_min_rating)
    rows = []
    hyper = manifest["hyperparameters"]
    for spec in args.data:
        split = None
        if spec.startswith("builtin:"):
            name, _, split = spec.removeprefix("builtin:").partition(":")
            split = split or "test"
            if split not in SPLITS:
                raise TrainerError(f"{spec}: unknown split {split!r}; use one of {', '.join(SPLITS)}")
            spec = f"builtin:{name}"
        examples, _ = load_examples([spec], cutoffs)
        if split and split != "all":
            examples = split_examples(examples, seed=hyper.get("split_seed", 13), validation_ratio=hyper.get("validation_ratio", 0.1),
                                      test_ratio=hyper.get("test_ratio", 0.1))[split]
        rows.extend(examples)
    return cap_per_source(rows, args.max_examples, 13)


def run_evaluate(args: "EvaluateArguments") -> dict[str, Any]:
    if not args.data:
        raise TrainerError("no evaluation data: pass --data PATH or --data builtin:NAME")
    checkpoint = load_checkpoint(args.checkpoint, args.device, args.quantize)
    manifest = checkpoint.manifest
    examples = _examples(args, manifest)
    with tqdm(total=len(examples), desc="evaluate", unit="text", dynamic_ncols=True) as bar:
        probs = predict_probs(checkpoint.model, checkpoint.tokenizer, [e.text for e in examples],
                              max_length=manifest["max_length"], batch_size=args.batch_size, progress=bar)
    probs = apply_temperature(probs, temperature_of(manifest))
    report = score(probs, [e.label for e in examples], checkpoint.labels, manifest["decision"])
    report = {"checkpoint": manifest["version"], "data": list(args.data), **report}
    if args.report_dir:
        write_report(report, args.report_dir)
    report.pop("reliability", None)
    return report
