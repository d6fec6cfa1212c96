"""Inference cache: probabilities keyed by (model version, exact text).

Search snippets and popular reviews repeat; a repeated text needs no second
forward pass. Bounded LRU, so memory stays flat on an endless stream. The key is the
text as the model reads it: a cased tokenizer (multilingual-e5, XLM-R) tells "GOOD" from "good".
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np


class InferenceCache:
    def __init__(self, capacity: int, model_version: str) -> None:
        self.capacity = capacity
        self._salt = model_version.encode("utf-8") + b"\0"
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def key(self, text: str) -> bytes:
        return hashlib.blake2b(self._salt + text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def get(self, key: bytes) -> np.ndarray | None:
        probs = self._entries.get(key)
        if probs is not None:
            self._entries.move_to_end(key)
        return probs

    def put(self, key: bytes, probs: np.ndarray) -> None:
        if self.capacity <= 0:
            return
        self._entries[key] = probs.copy()  # owned: a row view would keep its whole batch's array alive
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
