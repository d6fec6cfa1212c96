"""Times every command reads: event timestamps (RFC 3339 or epoch ms) and durations (90s, 5m, 1h, 2d)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from .errors import ErrorCode, EventError

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)
# Epoch milliseconds accepted: 2000-01-01 .. 2100-01-01. Anything else is a unit mistake
# (seconds or microseconds) and would land in the wrong counter bucket.
MIN_EPOCH_MS = 946_684_800_000
MAX_EPOCH_MS = 4_102_444_800_000


def parse_timestamp(value: object) -> int:
    """Return epoch milliseconds or raise EventError(BAD_TIMESTAMP)."""
    if isinstance(value, int) and not isinstance(value, bool):
        millis = value
    elif isinstance(value, str):
        match = _RFC3339.match(value)
        if match is None:
            raise EventError(ErrorCode.BAD_TIMESTAMP, f"ts {value[:64]!r} is not RFC 3339 (e.g. 2026-12-01T13:30:00Z)")
        date, clock, fraction, offset = match.groups()
        micros = (fraction or "").ljust(6, "0")[:6]
        offset = "+00:00" if offset in ("Z", "z") else offset
        try:
            parsed = datetime.fromisoformat(f"{date}T{clock}.{micros}{offset}")
        except ValueError as exc:
            raise EventError(ErrorCode.BAD_TIMESTAMP, f"ts {value!r} is not a valid date/time: {exc}") from None
        millis = int(parsed.timestamp() * 1000)
    else:
        raise EventError(ErrorCode.BAD_TIMESTAMP, f"ts must be an RFC 3339 string or epoch milliseconds, got {type(value).__name__}")
    if not MIN_EPOCH_MS <= millis <= MAX_EPOCH_MS:
        raise EventError(ErrorCode.BAD_TIMESTAMP, f"ts {value!r} is outside 2000-01-01..2100-01-01 (epoch ms expected)")
    return millis


def format_timestamp(epoch_ms: int) -> str:
    """Epoch ms to RFC 3339 in UTC with millisecond precision."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_duration(text: str) -> int:
    """'90s', '5m', '1h', '2d' -> seconds; ValueError names the bad value."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise ValueError(f"{text!r} is not a duration like 90s, 5m, 1h or 2d")
    return int(text[:-1]) * units[text[-1]]
