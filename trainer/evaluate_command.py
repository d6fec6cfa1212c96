"""The `evaluate` command: load a checkpoint, score it on data, optionally write plots."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from model_runtime.calibration import apply_temperature, temperature_of
from model_runtime.inference import encode
from model_runtime.runners import open_runner

from .data import cap_per_source, rating_cutoffs, read_split_source
from .errors import TrainerError
from .evaluate import score, write_report

if TYPE_CHECKING:
    from .cli import EvaluateArguments

PROGRESS_STEP = 1024  # texts per progress update


def _examples(args: "EvaluateArguments", manifest: dict[str, Any]):
    """Rows to score. builtin:NAME defaults to its test split under the checkpoint's split settings."""
    cutoffs = rating_cutoffs(args.negative_max_rating, args.positive_min_rating)
    hyper = manifest["hyperparameters"]
    rows = []
    for spec in args.data:
        rows.extend(read_split_source(spec, cutoffs, seed=hyper.get("split_seed", 13), validation_ratio=hyper.get("validation_ratio", 0.1),
                                      test_ratio=hyper.get("test_ratio", 0.1)))
    return cap_per_source(rows, args.max_examples, 13)


def run_evaluate(args: "EvaluateArguments") -> dict[str, Any]:
    if not args.data:
        raise TrainerError("no evaluation data: pass --data PATH or --data builtin:NAME")
    runner = open_runner(args.checkpoint, backend=args.backend, device=args.device, quantize=args.quantize, batch_size=args.batch_size)
    manifest = runner.manifest
    examples = _examples(args, manifest)
    ids, _ = encode(runner.tokenizer, [e.text for e in examples], runner.max_length)
    parts = []
    with tqdm(total=len(examples), desc="evaluate", unit="text", dynamic_ncols=True) as bar:
        for start in range(0, len(ids), PROGRESS_STEP):
            chunk = ids[start : start + PROGRESS_STEP]  # sorted by length within each chunk
            parts.append(runner.forward_ids(chunk))
            bar.update(len(chunk))
    probs = np.concatenate(parts) if parts else np.empty((0, len(runner.labels)), dtype=np.float32)
    temperature = temperature_of(runner.fitted)  # the served model's own (an ONNX graph's, when it has one)
    report = score(apply_temperature(probs, temperature), [e.label for e in examples], runner.labels, runner.fitted["decision"])
    report = {"checkpoint": manifest["version"], "data": list(args.data), "runs": runner.detail, "temperature": temperature, **report}
    if args.report_dir:
        write_report(report, args.report_dir)
    report.pop("reliability", None)
    return report
