"""Read-side views over the counters and alerts, shared by the CLI and the HTTP API."""

from __future__ import annotations

import time
from typing import Any

from schemas import normalize_query

from .alerts.state import AlertStore
from .config import parse_duration
from .state.counters import CounterStore

LABELS = ("negative", "neutral", "positive")


class BadRequest(ValueError):
    """A parameter a caller got wrong: 400 over HTTP, one line and exit 2 on the CLI."""


def window_seconds(store: CounterStore, window: str) -> int:
    try:
        seconds = parse_duration(window)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if seconds > store.layout.longest:
        raise BadRequest(f"window {window} is longer than the longest kept window ({store.layout.longest} s)")
    return seconds


def _summary(counts) -> dict[str, Any]:
    full = {label: counts.get(label, 0) for label in LABELS} | dict(counts)
    total = sum(full.values())
    return {"counts": full, "total": total, "negative_share": round(full["negative"] / total, 4) if total else None}


def query_sentiment(store: CounterStore, query: str, window: str) -> dict[str, Any]:
    seconds = window_seconds(store, window)
    name = normalize_query(query)
    if not name:
        raise BadRequest("query is empty")
    counts = store.window_counts("query", name, seconds, int(time.time() * 1000))
    return {"query": query, "query_norm": name, "window": window, **_summary(counts)}


def product_sentiment(store: CounterStore, product_id: str, window: str) -> dict[str, Any]:
    seconds = window_seconds(store, window)
    if not product_id.strip():
        raise BadRequest("product_id is empty")
    counts = store.window_counts("product", product_id, seconds, int(time.time() * 1000))
    return {"product_id": product_id, "window": window, **_summary(counts)}


def top(store: CounterStore, *, label: str = "negative", window: str = "1h", min_count: int = 10, limit: int = 10,
        kind: str = "query") -> dict[str, Any]:
    """Subjects ranked by the share of `label` in the window, among those with >= min_count events."""
    if label not in LABELS:
        raise BadRequest(f"label {label!r} is not one of {', '.join(LABELS)}")
    if min_count < 1 or not 1 <= limit <= 1000:
        raise BadRequest("min_count must be >= 1 and limit 1..1000")
    seconds = window_seconds(store, window)
    now = int(time.time() * 1000)
    # Candidates from the bounded per-hour rankings (the subjects with the most events of
    # the label), then exact counts for those only: the read costs O(limit), not O(subjects).
    candidates = min(store.layout.rank_size, max(100, 10 * limit))
    names = sorted(store.ranked_subjects(kind, label, seconds, now, candidates))
    rows = []
    for name, counts in zip(names, store.window_counts_many([(kind, n, seconds) for n in names], now)):
        total = sum(counts.values())
        if total >= min_count:
            rows.append({kind: name, "count": counts.get(label, 0), "total": total,
                         "share": round(counts.get(label, 0) / total, 4)})
    rows.sort(key=lambda r: (-r["share"], -r["total"], r[kind]))
    return {"label": label, "window": window, "min_count": min_count, "results": rows[:limit]}


def alerts(store: AlertStore, state: str | None) -> dict[str, Any]:
    if state not in (None, "firing", "resolved"):
        raise BadRequest(f"state {state!r} is not firing or resolved")
    return {"state": state, "alerts": store.read(state)}
