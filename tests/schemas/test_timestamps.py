"""Durations every command reads (--windows, --alert-window, the trainer's --since)."""

from __future__ import annotations

import pytest

from schemas.timestamps import parse_duration


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("5m", 300), ("1h", 3600), ("2d", 172800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", "m", "0m", "-5m", "5y", "1.5h"])
def test_bad_durations_name_the_value(text):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)
