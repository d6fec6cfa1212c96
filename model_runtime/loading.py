"""Loading a checkpoint: weights (safetensors only), tokenizer and manifest, on a device.

Torch and transformers are imported lazily so importing this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.checkpoint import WEIGHTS_FILE, CheckpointError, read_manifest


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
