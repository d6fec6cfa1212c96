"""Fast validator for input events (`search_result`, `review`).

Hand-written on top of orjson: one pass over a dict, a few type checks per field.
The JSON Schema files in `schemas/json/` describe the same contract for producers
in other languages; tests check that both agree on the same examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .errors import ErrorCode, EventError
from .normalize import normalize_query
from .timestamps import parse_timestamp

EVENT_TYPES = ("search_result", "review")
SCHEMA_VERSIONS = (1,)


@dataclass(frozen=True, slots=True)
class Limits:
    """Size bounds on every input; bytes are UTF-8 bytes."""

    max_message_bytes: int = 64 * 1024
    max_text_bytes: int = 16 * 1024
    max_field_bytes: int = 1024  # ids, query, title, locale


@dataclass(frozen=True, slots=True)
class ValidEvent:
    """A validated input event. `data` is the decoded object, unknown fields included."""

    data: dict[str, Any]
    event_id: str
    event_type: str
    ts_ms: int
    text: str
    product_id: str
    query: str | None
    query_norm: str | None


DEFAULT_LIMITS = Limits()


def decode_event(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> ValidEvent:
    """Parse and validate one Kafka message value. Raises only EventError."""
    if raw is None:
        raise EventError(ErrorCode.NOT_JSON, "message has no value (tombstone)")
    if len(raw) > limits.max_message_bytes:
        raise EventError(ErrorCode.MESSAGE_TOO_LARGE, f"message is {len(raw)} bytes, limit {limits.max_message_bytes}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as utf8_error:
            raise EventError(ErrorCode.NOT_UTF8, f"message is not valid UTF-8: {utf8_error.reason} at byte {utf8_error.start}") from None
        raise EventError(ErrorCode.NOT_JSON, f"message is not JSON: {exc}") from None
    return validate_event(data, limits)


def validate_event(data: Any, limits: Limits = DEFAULT_LIMITS) -> ValidEvent:
    """Validate an already-decoded event object. Raises only EventError."""
    if not isinstance(data, dict):
        raise EventError(ErrorCode.WRONG_TYPE, f"event must be a JSON object, got {_json_type(data)}")
    event_type = data.get("event_type")
    if event_type is None:
        raise EventError(ErrorCode.MISSING_FIELD, "event_type is required")
    if event_type not in EVENT_TYPES:
        shown = event_type[:64] if isinstance(event_type, str) else event_type
        raise EventError(ErrorCode.UNKNOWN_EVENT_TYPE, f"event_type {shown!r} is not one of {', '.join(EVENT_TYPES)}")
    version = _required(data, "schema_version", int)
    if version not in SCHEMA_VERSIONS:
        raise EventError(ErrorCode.UNSUPPORTED_SCHEMA_VERSION, f"schema_version {version} is not supported (supported: {SCHEMA_VERSIONS})")
    event_id = _bounded(_required(data, "event_id", str), "event_id", limits.max_field_bytes, allow_empty=False)
    if "ts" not in data:
        raise EventError(ErrorCode.MISSING_FIELD, "ts is required")
    ts_ms = parse_timestamp(data["ts"])
    product_id = _bounded(_required(data, "product_id", str), "product_id", limits.max_field_bytes, allow_empty=False)
    text = _text(data, limits)

    if event_type == "search_result":
        query = _bounded(_required(data, "query", str), "query", limits.max_field_bytes, allow_empty=False)
        rank = _required(data, "rank", int)
        if rank < 0:
            raise EventError(ErrorCode.OUT_OF_RANGE, f"rank must be >= 0, got {rank}")
        _bounded(_required(data, "title", str), "title", limits.max_field_bytes, allow_empty=True)
        optional_strings = ("user_id", "session_id", "locale")
    else:
        query = _optional(data, "query", str)
        if query is not None:
            query = _bounded(query, "query", limits.max_field_bytes, allow_empty=True)
        rating = _optional(data, "rating", int)
        if rating is not None and not 1 <= rating <= 5:
            raise EventError(ErrorCode.OUT_OF_RANGE, f"rating must be 1..5, got {rating}")
        optional_strings = ("locale",)
    for name in optional_strings:
        value = _optional(data, name, str)
        if value is not None:
            _bounded(value, name, limits.max_field_bytes, allow_empty=True)

    query_norm = normalize_query(query) if query is not None else None
    if event_type == "search_result" and not query_norm:
        raise EventError(ErrorCode.EMPTY_FIELD, "query is blank after normalization")
    return ValidEvent(data, event_id, event_type, ts_ms, text, product_id, query, query_norm or None)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _check_type(name: str, value: Any, kind: type) -> Any:
    # bool is a subclass of int in Python but not an integer in JSON.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = "integer" if kind is int else "string"
        raise EventError(ErrorCode.WRONG_TYPE, f"{name} must be a {expected}, got {_json_type(value)}")
    return value


def _required(data: dict, name: str, kind: type) -> Any:
    if name not in data or data[name] is None:
        raise EventError(ErrorCode.MISSING_FIELD, f"{name} is required")
    return _check_type(name, data[name], kind)


def _optional(data: dict, name: str, kind: type) -> Any:
    value = data.get(name)
    return None if value is None else _check_type(name, value, kind)


def _bounded(value: str, name: str, max_bytes: int, *, allow_empty: bool) -> str:
    # len(str) <= bytes <= 4 * len(str): encode only when the cheap bound is inconclusive.
    if len(value) * 4 > max_bytes and len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise EventError(ErrorCode.FIELD_TOO_LONG, f"{name} is longer than {max_bytes} bytes")
    if not allow_empty and not value.strip():
        raise EventError(ErrorCode.EMPTY_FIELD, f"{name} is empty")
    return value


def _text(data: dict, limits: Limits) -> str:
    text = _required(data, "text", str)
    if len(text) * 4 > limits.max_text_bytes:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limits.max_text_bytes:
            raise EventError(ErrorCode.TEXT_TOO_LONG, f"text is {size} bytes, limit {limits.max_text_bytes}")
    text = text.strip()
    if not text:
        raise EventError(ErrorCode.EMPTY_TEXT, "text is empty or only whitespace")
    return text
