"""Machine-readable validation errors shared by every part that reads events."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Why an input event was rejected; the dead-letter envelope carries this code."""

    MESSAGE_TOO_LARGE = "message_too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    WRONG_TYPE = "wrong_type"
    MISSING_FIELD = "missing_field"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    BAD_TIMESTAMP = "bad_timestamp"
    EMPTY_TEXT = "empty_text"
    TEXT_TOO_LONG = "text_too_long"
    FIELD_TOO_LONG = "field_too_long"
    EMPTY_FIELD = "empty_field"
    OUT_OF_RANGE = "out_of_range"
    # Not a validation error: the model failed on this event alone after batch splitting.
    INFERENCE_FAILED = "inference_failed"
    # Not a validation error: the broker permanently refused this event's labelled output.
    OUTPUT_REJECTED = "output_rejected"


class EventError(ValueError):
    """The one exception the validator raises: a code plus a message naming the problem."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
