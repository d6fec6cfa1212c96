"""Batched inference: tokenize with truncation accounting, length-sorted forward passes."""

from __future__ import annotations

from typing import Sequence

import numpy as np


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


def sorted_batches(ids: Sequence[list[int]], batch_size: int):
    """Index arrays of `batch_size` texts in length order, so each batch pads to a similar length."""
    order = np.argsort([len(row) for row in ids], kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def forward_sorted(model, tokenizer, ids: Sequence[list[int]], *, batch_size: int, device=None, pin_memory: bool = False,
                   progress=None) -> np.ndarray:
    """Class probabilities (n, num_labels) in input order for pre-tokenized texts.

    Sorted by length and padded per batch, so batches of short texts do not pay for
    the longest one. With `pin_memory` (CUDA) host tensors are pinned and copied
    without blocking.
    """
    import torch

    device = device or next(model.parameters()).device
    out = np.empty((len(ids), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for idx in sorted_batches(ids, batch_size):
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
