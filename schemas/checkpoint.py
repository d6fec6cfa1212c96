"""Checkpoint contract: directory layout and manifest checks.

A checkpoint is a directory with safetensors weights, config, tokenizer files,
ONNX graphs (fp32 and int8; absent in checkpoints published before them) and
`manifest.json`. `<output>/latest` is a symlink to the newest one. Loading and running
it is the model runtime's job (`model_runtime/`).

Every weight file's sha256 is in the manifest (safetensors: WEIGHT_DIGESTS, written at
publishing; ONNX graphs: their listing). Loaders resolve the checkpoint once, read each
weight file once, check those bytes and build the model from them (`read_verified`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "model.safetensors"
# ONNX graphs of the classifier by quantization, listed with checksums in the manifest's
# `onnx` entry (or, for a checkpoint exported after publishing, in ONNX_LISTING beside them).
# A graph's manifest entry also holds what it is served with (model_runtime/fitted.py).
ONNX_FILES = {"none": "model.onnx", "int8": "model.int8.onnx"}
ONNX_LISTING = "onnx.json"
# Manifest field: {WEIGHTS_FILE: {"sha256": hex, "bytes": size}}, recorded by trainer/publish.py.
WEIGHT_DIGESTS = "weights"
FORMAT_VERSION = 1
_REQUIRED = ("format_version", "version", "created_at", "base_model", "labels", "max_length", "decision",
             "metrics", "data", "hyperparameters", "training")


class CheckpointError(Exception):
    """A checkpoint that cannot be used, with a message naming why."""


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The checked manifest in `directory` (a `latest` symlink is followed for this one read;
    loaders use `resolve_checkpoint`, so the rest comes from the same version)."""
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


def resolve_checkpoint(directory: str | Path) -> tuple[Path, dict[str, Any]]:
    """The directory `directory` points to, symlinks resolved once, and its checked manifest.

    Load weights and tokenizer from the returned path only: a publish can swap `latest` at
    any moment, and following it twice could pair one version's manifest with another's weights.
    """
    path = Path(directory).resolve()
    return path, read_manifest(path)


def file_digest(path: Path) -> dict[str, Any]:
    """What a manifest records of a weight file: its sha256 and size in bytes."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return {"sha256": digest, "bytes": handle.tell()}


def weights_digest(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's digest of the safetensors weights; a checkpoint without one is refused,
    since nothing could tell its weights from a corrupted or replaced file."""
    digest = manifest.get(WEIGHT_DIGESTS, {}).get(WEIGHTS_FILE)
    if digest is None:
        raise CheckpointError(f"checkpoint {path} was published without a sha256 of {WEIGHTS_FILE} in its manifest, so its "
                              "weights can't be checked; re-train it (python -m trainer train) to publish it with digests")
    return digest


def read_verified(path: Path, digest: dict[str, Any], listed_in: str) -> bytes:
    """The bytes of `path`, read once and checked against `digest` (from `listed_in`).

    Callers build the model from these bytes, never by opening `path` again: a file replaced
    between a check and a second open would run unchecked.
    """
    if not digest.get("sha256"):
        raise CheckpointError(f"{listed_in} records no sha256 of {path.name}, so its bytes can't be checked")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path} is listed in {listed_in} but missing") from None
    if hashlib.sha256(data).hexdigest() != digest["sha256"]:
        raise CheckpointError(f"{path} ({len(data)} bytes) does not match its sha256 in {listed_in}: "
                              "it was corrupted or replaced after it was hashed")
    return data
