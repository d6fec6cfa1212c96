"""Read-side views over the counters and alerts, shared by the CLI and the HTTP API."""

from __future__ import annotations

import time
from typing import Any

from model_runtime.stats.rates import Rates
from model_runtime.stats.shares import estimate_negative_share
from schemas import normalize_query
from schemas.timestamps import parse_duration

from .alerts.state import AlertStore
from .state.counters import CounterStore, WindowStats
from .state.rates import RateStore

LABELS = ("negative", "neutral", "positive")
SUBJECT_FIELDS = {"query": "query", "product": "product_id"}  # subject kind -> its field in responses


class BadRequest(ValueError):
    """A parameter a caller got wrong: 400 over HTTP, one line and exit 2 on the CLI."""


def subject_field(kind: str) -> str:
    """The response field naming a subject of this kind; a 400 for an unknown kind."""
    if kind not in SUBJECT_FIELDS:
        raise BadRequest(f"kind {kind!r} is not query or product")
    return SUBJECT_FIELDS[kind]


def window_seconds(store: CounterStore, window: str) -> int:
    try:
        seconds = parse_duration(window)
    except ValueError as exc:
        raise BadRequest(f"window {exc}") from None
    if seconds > store.layout.longest:
        raise BadRequest(f"window {window} is longer than the longest kept window ({store.layout.longest} s)")
    return seconds


def _summary(stats: WindowStats, rates: dict[str, Rates | None]) -> dict[str, Any]:
    """Counts, and the negative share from the best estimator (not the raw argmax share) with its interval;
    per model version, which rates corrected it and on how many rated examples."""
    counts = stats.counts
    full = {label: counts.get(label, 0) for label in LABELS} | dict(counts)
    total = sum(full.values())
    estimate = estimate_negative_share(stats.tallies, rates)
    return {"counts": full, "total": total, **estimate.as_dict(),
            "counted_negative_share": round(full["negative"] / total, 4) if total else None}


def query_sentiment(store: CounterStore, rates: RateStore, query: str, window: str) -> dict[str, Any]:
    seconds = window_seconds(store, window)
    name = normalize_query(query)
    if not name:
        raise BadRequest("query is empty")
    stats = store.window_stats_many([("query", name, seconds)], int(time.time() * 1000))[0]
    return {"query": query, "query_norm": name, "window": window, **_summary(stats, rates.read(stats.tallies))}


def product_sentiment(store: CounterStore, rates: RateStore, product_id: str, window: str) -> dict[str, Any]:
    seconds = window_seconds(store, window)
    if not product_id.strip():
        raise BadRequest("product_id is empty")
    stats = store.window_stats_many([("product", product_id, seconds)], int(time.time() * 1000))[0]
    return {"product_id": product_id, "window": window, **_summary(stats, rates.read(stats.tallies))}


def top(store: CounterStore, rates: RateStore, *, label: str = "negative", window: str = "1h", min_count: int = 10, limit: int = 10,
        kind: str = "query") -> dict[str, Any]:
    """Subjects ranked by the share of `label` in the window, among those with >= min_count events."""
    if label not in LABELS:
        raise BadRequest(f"label {label!r} is not one of {', '.join(LABELS)}")
    field = subject_field(kind)
    if min_count < 1 or not 1 <= limit <= 1000:
        raise BadRequest("min_count must be >= 1 and limit 1..1000")
    seconds = window_seconds(store, window)
    now = int(time.time() * 1000)
    # Candidates from the bounded per-hour rankings (the subjects with the most events of the
    # label over the window's hours), then exact counts for those only: the read costs O(limit),
    # not O(subjects) nor O(hours).
    candidates = min(store.layout.rank_size, max(100, 10 * limit))
    names = store.ranked_subjects(kind, label, seconds, now, candidates)
    windows = store.window_stats_many([(kind, n, seconds) for n in names], now)
    versions = rates.read(model for stats in windows for model in stats.tallies)
    rows = []
    for name, stats in zip(names, windows):
        counts = stats.counts
        total = sum(counts.values())
        if total < min_count:
            continue
        row = {field: name, "count": counts.get(label, 0), "total": total, "counted_share": round(counts.get(label, 0) / total, 4)}
        if label == "negative":  # the estimated share, as everywhere the negative share is reported
            estimate = estimate_negative_share(stats.tallies, versions)
            row |= {"share": round(estimate.share, 4), "interval_95": estimate.as_dict()["interval_95"], "estimator": estimate.estimator}
        else:
            row |= {"share": row["counted_share"], "estimator": "cc"}
        rows.append(row)
    rows.sort(key=lambda r: (-r["share"], -r["total"], r[field]))
    return {"kind": kind, "label": label, "window": window, "min_count": min_count, "results": rows[:limit]}


def alerts(store: AlertStore, state: str | None) -> dict[str, Any]:
    if state not in (None, "firing", "resolved"):
        raise BadRequest(f"state {state!r} is not firing or resolved")
    return {"state": state, "alerts": store.read(state)}


def series(store: CounterStore, rates: RateStore, alert_store: AlertStore, *, kind: str, name: str, window: str, alert_window_s: int,
           baseline_s: int) -> dict[str, Any]:
    """One subject's estimated negative share per bucket over the window, with what its alerts compare
    against (the baseline share: `baseline_s` before now, excluding the alert window) and its firing periods."""
    field = subject_field(kind)
    seconds = window_seconds(store, window)
    subject = normalize_query(name) if kind == "query" else name
    if not subject.strip():
        raise BadRequest(f"{field} is empty")
    now = int(time.time() * 1000)
    # One round trip: the chart's buckets and the baseline's share their hours, each read once.
    (size, buckets), *sums = store.bucket_series_many(
        [(kind, subject, seconds), (kind, subject, baseline_s + alert_window_s), (kind, subject, alert_window_s)], now)
    longer, short = WindowStats(), WindowStats()
    for total, (_, parts) in zip((longer, short), sums):
        for _, stats in parts:
            total.add(stats)
    versions = rates.read([*longer.tallies, *(model for _, stats in buckets for model in stats.tallies)])
    points = []
    for start, stats in buckets:
        summary = _summary(stats, versions)
        points.append({"t": start, "total": summary["total"], "negative": summary["counts"]["negative"],
                       "negative_share": summary["negative_share"], "interval_95": summary["interval_95"]})
    baseline = _summary(longer.minus(short), versions)
    since_s = now // 1000 - seconds
    periods = [{"from": fired // 1000, "to": None if resolved is None else resolved // 1000}
               for fired, resolved in alert_store.periods((kind, subject)) if resolved is None or resolved // 1000 >= since_s]
    return {"kind": kind, field: subject, "window": window, "bucket_seconds": size, "points": points,
            "baseline": {"seconds": baseline_s, "total": baseline["total"], "negative_share": baseline["negative_share"],
                         "interval_95": baseline["interval_95"]},
            "firing_periods": periods}
