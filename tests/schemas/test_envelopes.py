"""Events the system writes validate against their JSON Schema files."""

from __future__ import annotations

import base64

import jsonschema
import orjson
import pytest

from schemas import ErrorCode, EventError, dead_letter_envelope, decode_event, labelled_event, load_schema

from .test_events import REVIEW, SEARCH_RESULT, _registry, encode


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema(name), registry=_registry())


@pytest.mark.parametrize("source", [SEARCH_RESULT, REVIEW])
def test_labelled_event_keeps_input_and_adds_verdict(source):
    event = decode_event(encode(source))
    out = labelled_event(
        event.data, query_norm=event.query_norm, label="negative",
        probs={"negative": 0.8, "neutral": 0.15, "positive": 0.05},
        model_name="minilm-sentiment", model_version="20261201-abc", processed_at_ms=1_796_131_801_000,
    )
    _validator("labelled").validate(out)
    assert {k: out[k] for k in source} == source
    assert out["sentiment"]["score"] == pytest.approx(-0.75)
    assert out["processed_at"] == "2026-12-01T13:30:01.000Z"


def test_labelled_event_rejected_by_schema_when_score_out_of_range():
    out = labelled_event(REVIEW, query_norm="x", label="positive", probs={"negative": 0.0, "positive": 1.0},
                         model_name="m", model_version="v", processed_at_ms=1_796_131_801_000)
    out["sentiment"]["score"] = 1.5
    assert not _validator("labelled").is_valid(out)


@pytest.mark.parametrize(
    "raw, encoding",
    [(b'{"event_type": "review"', "utf-8"), (b"\xff\x00binary", "base64")],
)
def test_dead_letter_envelope_keeps_original_bytes(raw, encoding):
    with pytest.raises(EventError) as caught:
        decode_event(raw)
    error = caught.value
    # Built as the consumer builds its dead letters (consumer/pipeline/validate.py), read back from the JSON it sends.
    envelope = orjson.loads(orjson.dumps(dead_letter_envelope(raw, topic="reviews", partition=3, offset=17, error_code=error.code,
                                                              error_message=error.message, received_at_ms=1_796_131_800_000)))
    _validator("dead_letter").validate(envelope)
    assert envelope["original_encoding"] == encoding
    restored = base64.b64decode(envelope["original"]) if encoding == "base64" else envelope["original"].encode()
    assert restored == raw
    assert envelope["source"] == {"topic": "reviews", "partition": 3, "offset": 17}
    assert envelope["error_code"] in {c.value for c in ErrorCode}


def test_alert_schema_accepts_firing_and_rejects_unknown_state():
    alert = {
        "alert_id": "a-1", "query": "wireless headphones", "state": "firing", "window": "5m",
        "negative_share": 0.62, "baseline_share": 0.18, "count": 57, "statistic": 8.4,
        "fired_at": "2026-12-01T13:35:00Z", "resolved_at": None,
    }
    _validator("alert").validate(alert)
    assert not _validator("alert").is_valid({**alert, "state": "maybe"})
