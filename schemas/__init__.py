"""Contracts shared by the consumer, the trainer and downstream services.

JSON Schema files live in `schemas/json/`; this package holds the fast validator,
the builders for the events the system writes, and query normalization.
"""

from .envelopes import dead_letter_envelope, labelled_event
from .errors import ErrorCode, EventError
from .events import DEFAULT_LIMITS, EVENT_TYPES, SCHEMA_VERSIONS, Limits, ValidEvent, decode_event, validate_event
from .files import load_schema, schema_path
from .normalize import normalize_query
from .timestamps import format_timestamp, parse_timestamp

__all__ = [
    "DEFAULT_LIMITS",
    "EVENT_TYPES",
    "SCHEMA_VERSIONS",
    "ErrorCode",
    "EventError",
    "Limits",
    "ValidEvent",
    "dead_letter_envelope",
    "decode_event",
    "format_timestamp",
    "labelled_event",
    "load_schema",
    "normalize_query",
    "parse_timestamp",
    "schema_path",
    "validate_event",
]
