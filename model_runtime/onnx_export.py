"""ONNX export of a checkpoint's classifier: an ORT-optimized fp32 graph and an int8 variant.

Uses torch's TorchScript exporter (`dynamo=False`): its BERT graphs are the ones ONNX
Runtime's transformer optimizer was written against, it needs no onnxscript, and it
handles dynamic batch and sequence axes with plain `dynamic_axes`. Optimum would add a
dependency tree for the same three calls. The optimizer fuses the embeddings
(EmbedLayerNormalization), LayerNorm + residual (SkipLayerNormalization), bias + GELU, and
each layer's self-attention with its padding mask (Attention: the eager attention's traced
mask subgraph is one ORT's fusion matches, for BERT and XLM-R alike); `quantize_dynamic` then
stores the MatMul weights as int8 (activations quantized per batch at run time) and turns
Attention into QAttention. Each graph's listing entry records its fused operators, and a
graph with fewer attention fusions than layers is logged: it runs, only slower.

`python -m model_runtime.onnx_export CHECKPOINT --out DIR` exports a checkpoint published
before checkpoints carried ONNX files; the consumer runs it in a subprocess so the
serving process itself never imports torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from schemas.checkpoint import ONNX_FILES, ONNX_LISTING, CheckpointError, file_digest

OPSET = 17
ORT_DOMAIN = "com.microsoft"  # the domain of ONNX Runtime's fused operators
ATTENTION = {"none": "Attention", "int8": "QAttention"}  # the fused attention operator of each graph

log = logging.getLogger("model_runtime")


def fused_ops(path: Path) -> dict[str, int]:
    """ONNX Runtime's fused operators in a graph, by type (Attention, SkipLayerNormalization, ...)."""
    import onnx

    graph = onnx.load(str(path)).graph
    return dict(sorted(Counter(node.op_type for node in graph.node if node.domain == ORT_DOMAIN).items()))


@contextmanager
def _root_logging_at(level: int) -> Iterator[None]:
    root = logging.getLogger()
    previous = root.level
    root.setLevel(max(level, previous))
    try:
        yield
    finally:
        root.setLevel(previous)


def export_onnx(model, tokenizer, directory: str | Path) -> dict[str, Any]:
    """Write model.onnx and model.int8.onnx into `directory`; the manifest's `onnx` entry, which
    lists each graph with its sha256 and size (what loaders check the bytes they load against)."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    out = Path(directory)
    model = model.to("cpu", dtype=torch.float32).eval()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")  # traceable attention; sdpa's mask path exports worse
    sample = tokenizer(["a short text", "a somewhat longer text to give the sequence axis a second length"],
                       padding=True, return_tensors="pt")
    names = [name for name in tokenizer.model_input_names if name in sample]

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).logits

    config = model.config
    with tempfile.TemporaryDirectory(dir=out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(Logits().eval(), tuple(sample[name] for name in names), str(raw), input_names=names,
                          output_names=["logits"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in names}, "logits": {0: "batch"}})
        optimized = optimize_model(str(raw), model_type="bert", num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size)
        optimized.save_model_to_file(str(out / ONNX_FILES["none"]))
    with _root_logging_at(logging.WARNING):  # the quantizer logs two INFO lines per tensor on the root logger
        quantize_dynamic(str(out / ONNX_FILES["none"]), str(out / ONNX_FILES["int8"]), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    files = {}
    for quantize, name in ONNX_FILES.items():
        ops = fused_ops(out / name)
        if ops.get(ATTENTION[quantize], 0) < config.num_hidden_layers:
            log.warning("%s: %d of %d attention layers fused into %s; the others run unfused, slower", name,
                        ops.get(ATTENTION[quantize], 0), config.num_hidden_layers, ATTENTION[quantize])
        files[quantize] = {"file": name, **file_digest(out / name), "fused_ops": ops}
    return {"opset": OPSET, "inputs": names, "files": files}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_runtime.onnx_export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint directory (or its latest symlink)")
    parser.add_argument("--out", required=True, help=f"directory for the ONNX files and {ONNX_LISTING}")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .loading import load_checkpoint

    try:
        loaded = load_checkpoint(args.checkpoint, "cpu")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        listing = export_onnx(loaded.model, loaded.tokenizer, out)
    except (CheckpointError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Written last: a listing means the files it names are complete.
    (out / ONNX_LISTING).write_bytes(orjson.dumps({"version": loaded.manifest["version"], **listing}))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
