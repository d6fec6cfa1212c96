"""Checkpoint contract: directory layout and manifest checks.

A checkpoint is a directory with safetensors weights, config, tokenizer files,
ONNX graphs (fp32 and int8; absent in checkpoints published before them) and
`manifest.json`. `<output>/latest` is a symlink to the newest one. Loading and running
it is the model runtime's job (`model_runtime/`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "model.safetensors"
# ONNX graphs of the classifier by quantization, listed with checksums in the manifest's
# `onnx` entry (or, for a checkpoint exported after publishing, in ONNX_LISTING beside them).
ONNX_FILES = {"none": "model.onnx", "int8": "model.int8.onnx"}
ONNX_LISTING = "onnx.json"
FORMAT_VERSION = 1
_REQUIRED = ("format_version", "version", "created_at", "base_model", "labels", "max_length", "decision",
             "metrics", "data", "hyperparameters", "training")


class CheckpointError(Exception):
    """A checkpoint that cannot be used, with a message naming why."""


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Resolve `directory` (symlinks such as `latest` included) and return its checked manifest."""
    path = Path(directory)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {directory} is not a directory")
    manifest_path = path / MANIFEST_FILE
    try:
        manifest = orjson.loads(manifest_path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {directory} has no {MANIFEST_FILE}") from None
    except orjson.JSONDecodeError as exc:
        raise CheckpointError(f"{manifest_path} is not JSON: {exc}") from None
    missing = [key for key in _REQUIRED if key not in manifest]
    if missing:
        raise CheckpointError(f"{manifest_path} lacks {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{manifest_path} has format_version {manifest['format_version']}, this code reads {FORMAT_VERSION}")
    labels = manifest["labels"]
    if "negative" not in labels or "positive" not in labels:
        raise CheckpointError(f"{manifest_path} labels {labels} must include negative and positive")
    if manifest["decision"].get("kind") == "neutral_band" and "neutral" not in labels:
        raise CheckpointError(f"{manifest_path} uses a neutral band but has no neutral label")
    return manifest
