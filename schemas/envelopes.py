"""Builders for the events this system writes: labelled events and dead-letter envelopes.

Building them in one place keeps every writer on the contract in `schemas/json/`.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Mapping

from .timestamps import format_timestamp


def labelled_event(
    event: Mapping[str, Any],
    *,
    query_norm: str | None,
    label: str,
    probs: Mapping[str, float],
    model_name: str,
    model_version: str,
    processed_at_ms: int,
) -> dict[str, Any]:
    """The input event, unknown fields included, plus the sentiment verdict."""
    score = probs.get("positive", 0.0) - probs.get("negative", 0.0)
    return {
        **event,
        "query_norm": query_norm,
        "sentiment": {
            "label": label,
            "score": round(max(-1.0, min(1.0, score)), 6),
            "probs": {name: round(float(p), 6) for name, p in probs.items()},
        },
        "model": {"name": model_name, "version": model_version},
        "processed_at": format_timestamp(processed_at_ms),
    }


# Cap on the copied original: the envelope must always fit the broker's message limit
# even when JSON escapes every byte (NUL -> 6 bytes) or base64 adds a third.
MAX_ORIGINAL_BYTES = 16 * 1024


def dead_letter_envelope(
    raw: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    error_code: str,
    error_message: str,
    received_at_ms: int,
    max_original_bytes: int = MAX_ORIGINAL_BYTES,
) -> dict[str, Any]:
    """Wrap a rejected message so nothing is lost: original bytes (a prefix when long,
    with the whole value's length and SHA-256), where it came from, why."""
    original, encoding, truncated = None, None, False
    if raw is not None:
        truncated = len(raw) > max_original_bytes
        kept = raw[:max_original_bytes]
        try:
            raw.decode("utf-8")
            # The whole value is UTF-8, so only a character cut at the prefix's end can be incomplete.
            original, encoding = kept.decode("utf-8", "ignore"), "utf-8"
        except UnicodeDecodeError:
            original, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    return {
        "original": original,
        "original_encoding": encoding,
        "original_bytes": None if raw is None else len(raw),
        "original_sha256": None if raw is None else hashlib.sha256(raw).hexdigest(),
        "truncated": truncated,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "error_code": str(error_code),
        "error_message": error_message[:1000],
        "received_at": format_timestamp(received_at_ms),
    }
