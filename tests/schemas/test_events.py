"""The input-event contract: the fast validator, its error codes, and the JSON Schema files."""

from __future__ import annotations

import copy

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource

from schemas import ErrorCode, EventError, Limits, decode_event, load_schema
from schemas.files import SCHEMA_NAMES

SEARCH_RESULT = {
    "event_id": "sr-1",
    "event_type": "search_result",
    "schema_version": 1,
    "ts": "2026-12-01T13:30:00.123Z",
    "query": "  Wireless  HEADPHONES ",
    "product_id": "p-42",
    "rank": 3,
    "title": "Acme ANC headphones",
    "text": "Battery died after two days, very disappointed.",
    "user_id": "u-9",
    "session_id": "s-1",
    "locale": "en-US",
}
REVIEW = {
    "event_id": "rv-1",
    "event_type": "review",
    "schema_version": 1,
    "ts": 1_796_131_800_000,
    "product_id": "p-42",
    "text": "物流很快，质量很好，非常满意！",
    "rating": 5,
    "query": "蓝牙耳机",
    "locale": "zh-CN",
}


def _registry() -> Registry:
    return Registry().with_resources(
        (f"https://schemas.sentiment.local/{name}.schema.json", Resource.from_contents(load_schema(name)))
        for name in SCHEMA_NAMES
    )


def json_schema_accepts(event: dict) -> bool:
    schema = load_schema(event["event_type"]) if event.get("event_type") in ("search_result", "review") else load_schema("review")
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    return validator.is_valid(event)


def encode(event) -> bytes:
    return orjson.dumps(event)


def test_valid_search_result_keeps_fields_and_normalizes_query():
    event = decode_event(encode(SEARCH_RESULT))
    assert event.event_type == "search_result"
    assert event.event_id == "sr-1"
    assert event.ts_ms == 1_796_131_800_123
    assert event.query_norm == "wireless headphones"
    assert event.data == SEARCH_RESULT


def test_valid_review_with_epoch_ms_and_chinese_text():
    event = decode_event(encode(REVIEW))
    assert (event.ts_ms, event.text, event.query_norm, event.product_id) == (REVIEW["ts"], REVIEW["text"], "蓝牙耳机", "p-42")


def test_review_without_optional_fields_and_unknown_fields_pass_through():
    minimal = {k: REVIEW[k] for k in ("event_id", "event_type", "schema_version", "ts", "product_id", "text")}
    minimal["x_campaign"] = {"nested": [1, 2]}
    event = decode_event(encode(minimal))
    assert event.query is None and event.query_norm is None
    assert event.data["x_campaign"] == {"nested": [1, 2]}
    assert json_schema_accepts(minimal)


@pytest.mark.parametrize(
    "ts, expected_ms",
    [
        ("2026-12-01T13:30:00Z", 1_796_131_800_000),
        ("2026-12-01T21:30:00+08:00", 1_796_131_800_000),
        ("2026-12-01 13:30:00.5z", 1_796_131_800_500),
        ("2026-12-01T13:30:00.123456789Z", 1_796_131_800_123),
        (1_796_131_800_000, 1_796_131_800_000),
    ],
)
def test_timestamp_forms(ts, expected_ms):
    assert decode_event(encode({**REVIEW, "ts": ts})).ts_ms == expected_ms


def _mutated(base: dict, **changes) -> dict:
    event = copy.deepcopy(base)
    for key, value in changes.items():
        if value is _DROP:
            event.pop(key)
        else:
            event[key] = value
    return event


_DROP = object()

INVALID = [
    ("missing event_id", _mutated(SEARCH_RESULT, event_id=_DROP), ErrorCode.MISSING_FIELD),
    ("null text", _mutated(SEARCH_RESULT, text=None), ErrorCode.MISSING_FIELD),
    ("missing query", _mutated(SEARCH_RESULT, query=_DROP), ErrorCode.MISSING_FIELD),
    ("missing ts", _mutated(REVIEW, ts=_DROP), ErrorCode.MISSING_FIELD),
    ("missing event_type", _mutated(REVIEW, event_type=_DROP), ErrorCode.MISSING_FIELD),
    ("unknown type", _mutated(REVIEW, event_type="click"), ErrorCode.UNKNOWN_EVENT_TYPE),
    ("version 2", _mutated(REVIEW, schema_version=2), ErrorCode.UNSUPPORTED_SCHEMA_VERSION),
    ("version as string", _mutated(REVIEW, schema_version="1"), ErrorCode.WRONG_TYPE),
    ("rank as string", _mutated(SEARCH_RESULT, rank="3"), ErrorCode.WRONG_TYPE),
    ("rank as bool", _mutated(SEARCH_RESULT, rank=True), ErrorCode.WRONG_TYPE),
    ("negative rank", _mutated(SEARCH_RESULT, rank=-1), ErrorCode.OUT_OF_RANGE),
    ("rating 6", _mutated(REVIEW, rating=6), ErrorCode.OUT_OF_RANGE),
    ("rating 4.5", _mutated(REVIEW, rating=4.5), ErrorCode.WRONG_TYPE),
    ("text as number", _mutated(REVIEW, text=42), ErrorCode.WRONG_TYPE),
    ("blank text", _mutated(REVIEW, text=" \n\t "), ErrorCode.EMPTY_TEXT),
    ("blank query", _mutated(SEARCH_RESULT, query="   "), ErrorCode.EMPTY_FIELD),
    ("empty product", _mutated(REVIEW, product_id=""), ErrorCode.EMPTY_FIELD),
    ("huge title", _mutated(SEARCH_RESULT, title="t" * 2000), ErrorCode.FIELD_TOO_LONG),
    ("bad ts string", _mutated(REVIEW, ts="yesterday"), ErrorCode.BAD_TIMESTAMP),
    ("ts without offset", _mutated(REVIEW, ts="2026-12-01T13:30:00"), ErrorCode.BAD_TIMESTAMP),
    ("ts in seconds", _mutated(REVIEW, ts=1_796_131_800), ErrorCode.BAD_TIMESTAMP),
    ("ts as float", _mutated(REVIEW, ts=1_796_131_800_000.5), ErrorCode.BAD_TIMESTAMP),
]


@pytest.mark.parametrize("name, event, code", INVALID, ids=[case[0] for case in INVALID])
def test_invalid_events_get_precise_codes_and_json_schema_agrees(name, event, code):
    with pytest.raises(EventError) as caught:
        decode_event(encode(event))
    assert caught.value.code == code, caught.value.message
    assert not json_schema_accepts(event), f"JSON Schema accepts {name} but the validator rejects it"


def test_impossible_calendar_date_is_caught_where_json_schema_cannot():
    # A regex cannot know February has no 30th; the fast validator parses the date.
    with pytest.raises(EventError) as caught:
        decode_event(encode({**REVIEW, "ts": "2026-02-30T00:00:00Z"}))
    assert caught.value.code == ErrorCode.BAD_TIMESTAMP


def test_valid_examples_pass_json_schema():
    assert json_schema_accepts(SEARCH_RESULT)
    assert json_schema_accepts(REVIEW)


@pytest.mark.parametrize(
    "raw, code",
    [
        (b"\xff\xfe{not utf8", ErrorCode.NOT_UTF8),
        (b'{"event_type": "review",', ErrorCode.NOT_JSON),
        (b"", ErrorCode.NOT_JSON),
        (None, ErrorCode.NOT_JSON),
        (b"[1, 2]", ErrorCode.WRONG_TYPE),
        (b'"just a string"', ErrorCode.WRONG_TYPE),
    ],
)
def test_undecodable_messages(raw, code):
    with pytest.raises(EventError) as caught:
        decode_event(raw)
    assert caught.value.code == code


def test_byte_limits_are_configurable():
    limits = Limits(max_message_bytes=4096, max_text_bytes=30, max_field_bytes=64)
    chinese = "很" * 11  # 11 characters, 33 UTF-8 bytes
    with pytest.raises(EventError) as caught:
        decode_event(encode({**REVIEW, "text": chinese}), limits)
    assert caught.value.code == ErrorCode.TEXT_TOO_LONG
    assert decode_event(encode({**REVIEW, "text": "很" * 10}), limits).text == "很" * 10
    with pytest.raises(EventError) as caught:
        decode_event(encode({**REVIEW, "padding": "x" * 5000}), limits)
    assert caught.value.code == ErrorCode.MESSAGE_TOO_LARGE


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_arbitrary_bytes_raise_only_event_error(raw):
    try:
        decode_event(raw)
    except EventError as exc:
        assert isinstance(exc.code, ErrorCode)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([SEARCH_RESULT, REVIEW]), st.sampled_from(sorted(set(SEARCH_RESULT) | set(REVIEW))), _json_values)
def test_fuzz_field_values_raise_only_event_error(base, field, value):
    event = {**base, field: value}
    try:
        decode_event(encode(event))
    except EventError as exc:
        assert isinstance(exc.code, ErrorCode)
