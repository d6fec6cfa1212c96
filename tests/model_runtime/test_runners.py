"""Backend choice and the CUDA precision rule, checked on a CPU-only machine."""

from __future__ import annotations

import pytest
import torch

import model_runtime.runners as runners
from model_runtime.runners import choose_backend, half_dtype
from schemas.checkpoint import CheckpointError


def test_backend_choice(monkeypatch):
    monkeypatch.setattr(runners, "gpu_present", lambda: False)
    assert choose_backend("auto", "auto") == "onnxruntime"
    assert choose_backend("auto", "cpu") == "onnxruntime"
    assert choose_backend("torch", "cpu") == "torch"
    assert choose_backend("onnxruntime", "auto") == "onnxruntime"
    assert choose_backend("auto", "cuda") == "torch"
    monkeypatch.setattr(runners, "gpu_present", lambda: True)
    assert choose_backend("auto", "auto") == "torch"  # a GPU: torch with resident half-precision weights
    with pytest.raises(CheckpointError, match="runs on the CPU"):
        choose_backend("onnxruntime", "cuda:0")
    with pytest.raises(CheckpointError, match="unknown backend"):
        choose_backend("tensorrt", "cpu")


@pytest.mark.parametrize("capability, dtype", [((7, 0), torch.float16), ((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                               ((9, 0), torch.bfloat16)])
def test_bf16_only_where_the_gpu_computes_it(monkeypatch, capability, dtype):
    # V100 (7.0) and T4 (7.5) report bf16 as supported but emulate it: fp16 there.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert half_dtype(torch.device("cuda:0")) is dtype
