"""A checkpoint ready to run on one backend: its manifest, labels, tokenizer and forward pass.

`torch` runs the safetensors weights (CPU fp32, optional dynamic int8; CUDA with resident
half-precision weights). `onnxruntime` runs the checkpoint's ONNX graph (int8 or fp32) on
the CPU and never imports torch. `auto` picks onnxruntime on a CPU-only machine and torch
where there is a GPU (bench/bench_backends.py measured why); quantize `auto` is int8 on
onnxruntime and none on torch. An ONNX graph is served with the calibration, decision rule
and rates fitted on its own outputs when its listing has them (model_runtime/fitted.py).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from schemas.checkpoint import CheckpointError, resolve_checkpoint

from .fitted import has_own_fit, served_with
from .inference import encode
from .loading import QUANTIZE_CHOICES

if TYPE_CHECKING:
    from .onnx_backend import OnnxListing

log = logging.getLogger("model_runtime")

BACKENDS = ("auto", "torch", "onnxruntime")
# Texts per forward pass on each ONNX graph. The int8 graph quantizes activations with one scale per
# pass, so a text's probabilities would depend on the texts it shares a pass with (up to 0.10 apart
# for the same text in two random batchings of 400, 1% of argmax labels flipped): one text per pass
# makes its label its own, for about a fifth of int8's throughput. fp32 is batch-invariant.
ONNX_BATCH_SIZE = {"none": 16, "int8": 1}
QUANTIZE = ("auto", *QUANTIZE_CHOICES)
DEFAULT_ONNX_CACHE_DIR = ".cache/onnx"


def gpu_present() -> bool:
    """An NVIDIA GPU with its driver loaded, seen without importing torch."""
    return Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir())


def choose_backend(backend: str, device: str) -> str:
    if backend not in BACKENDS:
        raise CheckpointError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        on_cpu = device == "cpu" or (device == "auto" and not gpu_present())
        return "onnxruntime" if on_cpu else "torch"
    if backend == "onnxruntime" and device not in ("auto", "cpu"):
        raise CheckpointError(f"the onnxruntime backend runs on the CPU; --device {device} needs --backend torch")
    return backend


def choose_quantize(quantize: str, backend: str) -> str:
    """`auto`: the int8 graph on onnxruntime (its own calibration makes it the served model), none on torch."""
    if quantize not in QUANTIZE:
        raise CheckpointError(f"unknown quantization {quantize!r}; use one of {', '.join(QUANTIZE)}")
    if quantize == "auto":
        return "int8" if backend == "onnxruntime" else "none"
    return quantize


@dataclass
class Runner:
    manifest: dict[str, Any]
    device: str
    tokenizer: Any
    forward_ids: Callable[[Sequence[list[int]]], np.ndarray]  # pre-tokenized texts -> probabilities, input order
    detail: str  # what runs: "torch fp32", "onnxruntime model.int8.onnx", ...
    fitted: dict[str, Any]  # the manifest with what this model is served with: its own calibration, decision rule, rates

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    def forward(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Uncalibrated probabilities for raw texts, and how many were truncated."""
        ids, truncated = encode(self.tokenizer, texts, self.max_length)
        return self.forward_ids(ids), truncated


def open_runner(checkpoint: str | Path, *, backend: str = "auto", device: str = "auto", quantize: str = "auto",
                threads: int = 0, batch_size: int = 0, onnx_cache_dir: str = DEFAULT_ONNX_CACHE_DIR) -> Runner:
    """Load `checkpoint` for `backend`; `batch_size` texts per forward pass (0 = the backend's own: 512 on CUDA,
    16 on the CPU, one on the int8 graph)."""
    chosen = choose_backend(backend, device)
    quantize = choose_quantize(quantize, chosen)
    if chosen == "onnxruntime":
        return _onnx_runner(Path(checkpoint), quantize, threads, batch_size, Path(onnx_cache_dir))
    return _torch_runner(checkpoint, device, quantize, threads, batch_size)


def half_dtype(device):
    """bf16 where the GPU computes it natively (compute capability >= 8.0), else fp16: T4 and V100
    report bf16 as supported but only emulate it, slower than fp16."""
    import torch

    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16


def _torch_runner(checkpoint, device: str, quantize: str, threads: int, batch_size: int) -> Runner:
    import torch

    from .inference import forward_sorted
    from .loading import load_checkpoint

    if threads > 0:
        torch.set_num_threads(threads)
    elif not torch.cuda.is_available():
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    loaded = load_checkpoint(checkpoint, device, quantize)
    on_cuda = loaded.device.type == "cuda"
    if on_cuda:
        loaded.model.to(dtype=half_dtype(loaded.device))  # weights stay resident in half precision
    size = batch_size or (512 if on_cuda else 16)

    def forward_ids(ids):
        return forward_sorted(loaded.model, loaded.tokenizer, ids, batch_size=size, device=loaded.device, pin_memory=on_cuda)

    precision = str(next(loaded.model.parameters()).dtype).removeprefix("torch.") if on_cuda else ("int8" if quantize == "int8" else "fp32")
    return Runner(loaded.manifest, str(loaded.device), loaded.tokenizer, forward_ids, f"torch {precision}", loaded.manifest)


def _onnx_runner(checkpoint: Path, quantize: str, threads: int, batch_size: int, cache_dir: Path) -> Runner:
    from .onnx_backend import onnx_listing

    path, manifest = resolve_checkpoint(checkpoint)  # graphs and tokenizer from this version's directory only
    found = onnx_listing(path, manifest, cache_dir) or _export_to_cache(path, manifest["version"], cache_dir)
    runner = graph_runner(path, manifest, found, quantize, threads, batch_size)
    if not has_own_fit(found.listing["files"][quantize]):
        log.warning("%s (listed in %s) has no calibration of its own (exported after publishing, or by an older trainer): "
                    "serving it with the temperature, decision rule and rates fitted on the torch model",
                    runner.detail.removeprefix("onnxruntime "), found.listed_in)
    return runner


def graph_runner(path: Path, manifest: dict[str, Any], found: OnnxListing, quantize: str, threads: int = 0,
                 batch_size: int = 0) -> Runner:
    """The onnxruntime runner of one graph of `found`, with the tokenizer in `path`: the consumer's, and the
    trainer's on the graphs it has just exported (before their own calibration is in any manifest)."""
    from .onnx_backend import CheckpointTokenizer, OnnxModel

    model = OnnxModel(found, quantize, threads, len(manifest["labels"]))
    tokenizer = CheckpointTokenizer(path)
    size = batch_size or ONNX_BATCH_SIZE[quantize]

    def forward_ids(ids):
        return model.forward_sorted(ids, tokenizer.pad_id, size)

    fitted = served_with(manifest, found.listing["files"][quantize])
    return Runner(manifest, "cpu", tokenizer, forward_ids, f"onnxruntime {model.file}", fitted)


def _export_to_cache(checkpoint: Path, version: str, cache_dir: Path) -> OnnxListing:
    """A checkpoint published without ONNX graphs: export them once into the cache, in a
    subprocess, so this process never imports torch."""
    from .onnx_backend import onnx_listing

    out = cache_dir / version
    done = subprocess.run([sys.executable, "-m", "model_runtime.onnx_export", str(checkpoint), "--out", str(out)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CheckpointError(f"exporting {checkpoint} to ONNX failed: {last}")
    found = onnx_listing(checkpoint, {"version": version}, cache_dir)
    if found is None:
        raise CheckpointError(f"exporting {checkpoint} to ONNX wrote no listing in {out}")
    return found
