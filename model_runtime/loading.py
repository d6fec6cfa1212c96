"""Loading a checkpoint: weights (safetensors only), tokenizer and manifest, on a device.

Torch and transformers are imported lazily so importing this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.checkpoint import WEIGHTS_FILE, CheckpointError, read_verified, resolve_checkpoint, weights_digest


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

    Everything comes from the directory `directory` resolves to once; the weights are the
    bytes checked against the manifest's sha256. `quantize="int8"`: dynamic int8
    quantization of the Linear layers (CPU only).
    """
    path, manifest = resolve_checkpoint(directory)
    digest = weights_digest(path, manifest)
    from safetensors.torch import load
    from transformers import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING, AutoConfig, AutoTokenizer

    torch_device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        raise CheckpointError(f"checkpoint {path}: transformers has no sequence classifier for model type {config.model_type!r}")
    # From the checked bytes' state dict, not the path: what runs is what was hashed. The
    # class is the one AutoModelForSequenceClassification picks, which can't take a state dict.
    state_dict = load(read_verified(path / WEIGHTS_FILE, digest, "the manifest"))
    model = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)].from_pretrained(None, config=config, state_dict=state_dict)
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
