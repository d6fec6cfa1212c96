"""Checkpoint contract: directory layout, manifest checks, loading, batched inference.

A checkpoint is a directory with safetensors weights, config, tokenizer files and
`manifest.json`. `<output>/latest` is a symlink to the newest one. Torch and
transformers are imported lazily so the event validator stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import orjson

MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "model.safetensors"
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


@dataclass
class LoadedCheckpoint:
    path: Path
    manifest: dict[str, Any]
    model: Any
    tokenizer: Any
    device: Any

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])


def pick_device(requested: str = "auto"):
    """`auto` -> first CUDA device when there is one, else CPU; `cpu`, `cuda`, `cuda:N` as given."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"device {requested} requested but CUDA is not available")
    return device


QUANTIZE_CHOICES = ("none", "int8")


def load_checkpoint(directory: str | Path, device: str = "auto", quantize: str = "none") -> LoadedCheckpoint:
    """Load weights (safetensors only, never pickle), tokenizer and manifest, in eval mode.

    `quantize="int8"`: dynamic int8 quantization of the Linear layers (CPU only).
    """
    manifest = read_manifest(directory)
    path = Path(directory).resolve()
    if not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"checkpoint {directory} has no {WEIGHTS_FILE}; only safetensors weights are loaded")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch_device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, use_safetensors=True)
    model.to(torch_device).eval()
    if quantize == "int8":
        if torch_device.type != "cpu":
            raise CheckpointError("int8 dynamic quantization runs on the CPU only; use --device cpu")
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch marks the quantized-tensor API deprecated; it still works
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    elif quantize != "none":
        raise CheckpointError(f"unknown quantization {quantize!r}; use one of {', '.join(QUANTIZE_CHOICES)}")
    return LoadedCheckpoint(path, manifest, model, tokenizer, torch_device)


def encode(tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids truncated to max_length, and how many texts had to be truncated.

    Tokenizing to max_length + 1 tells truncation apart from a text of exactly
    max_length tokens; the cut keeps the final special token ([SEP] / </s>).
    """
    ids = tokenizer(list(texts), truncation=True, max_length=max_length + 1)["input_ids"]
    truncated = 0
    for i, row in enumerate(ids):
        if len(row) > max_length:
            ids[i] = row[: max_length - 1] + row[-1:]
            truncated += 1
    return ids, truncated


def forward_sorted(model, tokenizer, ids: Sequence[list[int]], *, batch_size: int, device=None, pin_memory: bool = False,
                   progress=None) -> np.ndarray:
    """Class probabilities (n, num_labels) in input order for pre-tokenized texts.

    Sorted by length and padded per batch, so batches of short texts do not pay for
    the longest one. With `pin_memory` (CUDA) host tensors are pinned and copied
    without blocking.
    """
    import torch

    device = device or next(model.parameters()).device
    order = np.argsort([len(row) for row in ids], kind="stable")
    out = np.empty((len(ids), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
            if pin_memory:
                batch = {k: v.pin_memory() for k, v in batch.items()}
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            logits = model(**batch).logits
            out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            if progress is not None:
                progress.update(len(idx))
    return out


def predict_probs(model, tokenizer, texts: Sequence[str], *, max_length: int, batch_size: int = 64, device=None,
                  progress=None) -> np.ndarray:
    """Class probabilities (n, num_labels) for raw texts, in input order."""
    ids, _ = encode(tokenizer, texts, max_length)
    return forward_sorted(model, tokenizer, ids, batch_size=batch_size, device=device, progress=progress)
