"""ONNX Runtime backend: a checkpoint's forward pass on the CPU without torch.

Imports only onnxruntime, `tokenizers` and numpy: a consumer serving through it never
loads torch (about 1 GB of resident memory less per process). The tokenizer is the
checkpoint's own `tokenizer.json` run by `tokenizers` directly, since transformers would
import torch; the ids are the same as the trainer's (tested).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import orjson

from schemas.checkpoint import ONNX_LISTING, CheckpointError, read_verified

from .inference import sorted_batches


class CheckpointTokenizer:
    """The subset of a transformers fast tokenizer `encode` uses, on `tokenizers` alone."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        path = directory / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"checkpoint {directory} has no tokenizer.json; the onnxruntime backend needs a fast tokenizer")
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        config_path = directory / "tokenizer_config.json"
        config = orjson.loads(config_path.read_bytes()) if config_path.is_file() else {}
        pad = config.get("pad_token") or "[PAD]"
        pad = pad.get("content") if isinstance(pad, dict) else pad
        self.pad_id = self._tokenizer.token_to_id(pad) or 0
        self._max_length: int | None = None

    def __call__(self, texts: list[str], truncation: bool = True, max_length: int | None = None) -> dict[str, list[list[int]]]:
        if max_length != self._max_length:
            if max_length:
                self._tokenizer.enable_truncation(max_length)
            else:
                self._tokenizer.no_truncation()
            self._max_length = max_length
        return {"input_ids": [encoding.ids for encoding in self._tokenizer.encode_batch(texts)]}


class OnnxListing(NamedTuple):
    directory: Path  # where the graphs are
    listing: dict[str, Any]  # the manifest's `onnx` entry or the cache's ONNX_LISTING
    listed_in: str  # where their sha256s come from, for errors


def onnx_listing(checkpoint: Path, manifest: dict[str, Any], cache_dir: Path | None) -> OnnxListing | None:
    """Where the checkpoint's ONNX files are, and their listing: in the checkpoint (manifest), or
    in `cache_dir/<version>/` when exported after publishing; None when there are none yet."""
    if "onnx" in manifest:
        return OnnxListing(checkpoint, manifest["onnx"], "the manifest")
    if cache_dir is not None:
        listing = cache_dir / manifest["version"] / ONNX_LISTING
        if listing.is_file():
            return OnnxListing(listing.parent, orjson.loads(listing.read_bytes()), str(listing))
    return None


class OnnxModel:
    """One InferenceSession on the CPU: intra-op threads = `threads` (default: every core), which
    sleep rather than spin between passes; no inter-op parallelism, since one inference thread drives it."""

    device = "cpu"

    def __init__(self, found: OnnxListing, quantize: str, threads: int, num_labels: int) -> None:
        import onnxruntime as ort

        entry = found.listing["files"].get(quantize)
        if entry is None:
            raise CheckpointError(f"no ONNX graph for --quantize {quantize} in {found.directory} (have: {', '.join(found.listing['files'])})")
        graph = read_verified(found.directory / entry["file"], entry, found.listed_in)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or max(1, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No spin-waiting between parallel sections: the pool's threads would burn the cores the loop
        # thread, librdkafka and a co-located broker need. Under load on 2 cores the consumer spent
        # 5.1 instead of 8.9 CPU ms per event, and ran at 135 instead of 87 events/s (bench_pipeline).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # From the checked bytes, not the path: what runs is what was hashed.
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.num_labels = num_labels
        self.file = entry["file"]

    def forward_sorted(self, ids: Sequence[list[int]], pad_id: int, batch_size: int) -> np.ndarray:
        """Class probabilities (n, num_labels) in input order, length-sorted sub-batches padded per batch."""
        out = np.empty((len(ids), self.num_labels), dtype=np.float32)
        for idx in sorted_batches(ids, batch_size):
            rows = [ids[i] for i in idx]
            width = max(len(row) for row in rows)
            input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, row in enumerate(rows):
                input_ids[j, : len(row)] = row
                mask[j, : len(row)] = 1
            feed = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
            logits = self.session.run(None, {name: feed[name] for name in self.inputs})[0].astype(np.float32)
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            out[idx] = probs / probs.sum(axis=1, keepdims=True)
        return out
