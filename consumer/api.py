"""A small read-only HTTP API over the counters and alerts, and the dashboard (`python -m consumer serve`).

Standard library server, bound to 127.0.0.1 by default. Routes:
  GET /                    the live dashboard (static page polling the JSON routes below)
  GET /queries/{query}/sentiment?window=1h
  GET /products/{product_id}/sentiment?window=1h
  GET /top?label=negative&window=1h&min_count=10&limit=10&kind=query
  GET /series?kind=query&name=...&window=24h
  GET /alerts?state=firing
  GET /status              the consumer's models, rates and lag (from --metrics-url)
  GET /openapi.json

Replies of the counter routes are shared for `cache_s` (serve --cache-s): every open
dashboard polls the same URLs, so N tabs cost Redis what one does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from . import views
from .alerts.state import AlertStore
from .dashboard.assets import PAGE_HEADERS, asset
from .dashboard.status import ConsumerStatus
from .httpserver import BoundedHTTPServer
from schemas.redis_connection import REDIS_ERRORS
from .state.counters import CounterStore
from .state.rates import RateStore

log = logging.getLogger("consumer.api")
MAX_URL = 4096
JSON = "application/json"

_WINDOW = {"name": "window", "in": "query", "schema": {"type": "string", "default": "1h", "pattern": "^[0-9]+[smhd]$"},
           "description": "window ending now, e.g. 5m, 1h, 24h (at most the longest counter window)"}
_SENTIMENT = {"type": "object", "properties": {
    "window": {"type": "string"}, "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
    "total": {"type": "integer"},
    "negative_share": {"type": ["number", "null"], "description": "estimated share of negative events (see estimator)"},
    "interval_95": {"type": ["array", "null"], "items": {"type": "number"}, "description": "95% interval of negative_share; wide when counts are small"},
    "estimator": {"enum": ["pacc", "pcc", "cc", "none"], "description": "the weakest estimator any model version needed. pacc: mean calibrated probability adjusted by that version's own rates; pcc: mean calibrated probability (no usable rates); cc: argmax counting (counters without probabilities)"},
    "models": {"type": "array", "description": "per model version that labelled events in the window: its events, estimate, and the rates that corrected it",
               "items": {"type": "object", "properties": {
                   "model": {"type": "string", "description": "<route>:<version>"}, "events": {"type": "integer"},
                   "estimator": {"enum": ["pacc", "pcc", "cc"]}, "negative_share": {"type": ["number", "null"]},
                   "rates": {"enum": ["stream", "checkpoint_stream", "validation", None], "description": "stream: the version's rated reviews in this stream; checkpoint_stream: the trainer's stream test split; validation: the trainer's validation split"},
                   "rate_examples": {"type": "integer", "description": "labelled examples behind the rates"}}}},
    "counted_negative_share": {"type": ["number", "null"], "description": "raw share of events labelled negative (biased toward the middle)"}}}
_ERROR = {"description": "bad parameter", "content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}}}}}


def _ok(schema: dict) -> dict:
    return {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}, "400": _ERROR}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "shop-sentiment read API", "version": "1.0.0",
             "description": "Rolling sentiment counts per normalized query and per product, top lists and negative-spike alerts."},
    "paths": {
        "/queries/{query}/sentiment": {"get": {"summary": "Counts for one query (normalized before lookup)", "parameters": [
            {"name": "query", "in": "path", "required": True, "schema": {"type": "string"}}, _WINDOW], "responses": _ok(_SENTIMENT)}},
        "/products/{product_id}/sentiment": {"get": {"summary": "Counts for one product", "parameters": [
            {"name": "product_id", "in": "path", "required": True, "schema": {"type": "string"}}, _WINDOW], "responses": _ok(_SENTIMENT)}},
        "/top": {"get": {"summary": "Queries (or products) ranked by the share of a label", "parameters": [
            {"name": "label", "in": "query", "schema": {"enum": list(views.LABELS), "default": "negative"}}, _WINDOW,
            {"name": "kind", "in": "query", "schema": {"enum": list(views.SUBJECT_FIELDS), "default": "query"}},
            {"name": "min_count", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 10}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10}}],
            "responses": _ok({"type": "object", "properties": {"results": {"type": "array"}}})}},
        "/alerts": {"get": {"summary": "Latest alert per subject", "parameters": [
            {"name": "state", "in": "query", "schema": {"enum": ["firing", "resolved"]}}],
            "responses": _ok({"type": "object", "properties": {"alerts": {"type": "array"}}})}},
        "/series": {"get": {"summary": "One subject's negative share per bucket, its alert baseline and firing periods", "parameters": [
            {"name": "kind", "in": "query", "schema": {"enum": list(views.SUBJECT_FIELDS), "default": "query"}},
            {"name": "name", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1},
             "description": "the query (normalized before lookup) or product id"},
            {**_WINDOW, "schema": {**_WINDOW["schema"], "default": "24h"},
             "description": "window ending now; up to the fine horizon (1h) in fine buckets, longer in hourly buckets"}],
            "responses": _ok({"type": "object", "properties": {
                "bucket_seconds": {"type": "integer"},
                "points": {"type": "array", "items": {"type": "object", "properties": {
                    "t": {"type": "integer", "description": "bucket start, epoch seconds"}, "total": {"type": "integer"},
                    "negative": {"type": "integer"}, "negative_share": {"type": ["number", "null"]},
                    "interval_95": {"type": ["array", "null"], "items": {"type": "number"}}}}},
                "baseline": {"type": "object", "description": "the alert baseline: --alert-baseline-window before now, excluding --alert-window"},
                "firing_periods": {"type": "array", "items": {"type": "object", "properties": {
                    "from": {"type": "integer"}, "to": {"type": ["integer", "null"], "description": "null: still firing"}}}}}})}},
        "/status": {"get": {"summary": "The consumer's models, events/s, lag and troubles, from its /metrics (serve --metrics-url)",
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object", "properties": {
                "configured": {"type": "boolean", "description": "false: serve has no --metrics-url; the dashboard hides the panel"},
                "available": {"type": "boolean"}, "models": {"type": "array"}, "events_in_per_s": {"type": ["number", "null"]},
                "events_out_per_s": {"type": ["number", "null"]}, "lag_total": {"type": "integer"}, "lag": {"type": "array"}}}}}}}}},
        "/": {"get": {"summary": "The live dashboard (HTML; polls the routes above)",
                      "responses": {"200": {"description": "OK", "content": {"text/html": {}}}}}},
    },
}


def _int(params: dict[str, list[str]], name: str, default: int) -> int:
    raw = params.get(name, [str(default)])[-1]
    try:
        return int(raw)
    except ValueError:
        raise views.BadRequest(f"{name} must be an integer, got {raw[:40]!r}") from None


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, body: Any) -> Reply:
    return Reply(status, orjson.dumps(body))


class SharedReplies:
    """The 200 replies of recent requests by URL, kept `ttl_s` and shared by every client: one
    computation per URL at a time (others asking meanwhile wait for it and share it), at most
    `max_entries` URLs (least recently computed dropped first)."""

    def __init__(self, ttl_s: float, max_entries: int = 256, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, "Reply"]] = OrderedDict()  # URL -> (computed at, reply)
        self._computing: dict[str, threading.Lock] = {}

    def get(self, key: str, compute: Callable[[], "Reply"]) -> "Reply":
        if self.ttl_s <= 0:
            return compute()
        with self._lock:
            turn = self._computing.setdefault(key, threading.Lock())
        with turn:
            with self._lock:
                hit = self._entries.get(key)
            if hit is not None and self.clock() - hit[0] < self.ttl_s:
                return hit[1]
            started = self.clock()
            reply = compute()
            with self._lock:
                if reply.status == 200:
                    self._entries[key] = (started, reply)
                    self._entries.move_to_end(key)
                    while len(self._entries) > self.max_entries:
                        self._computing.pop(self._entries.popitem(last=False)[0], None)
                elif key not in self._entries:
                    self._computing.pop(key, None)
            return reply


@dataclass
class ReadAPI:
    """Routes a request to its view; pure apart from the reads, so tests can call it without sockets."""

    store: CounterStore
    rates: RateStore
    alerts: AlertStore
    alert_window_s: int = 300
    baseline_s: int = 86400
    status: ConsumerStatus | None = None  # None: no --metrics-url, the dashboard hides the consumer panel
    cache_s: float = 0.0  # share each counter route's reply this long (0: every request reads Redis)
    _replies: SharedReplies = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._replies = SharedReplies(self.cache_s)

    def route(self, method: str, target: str) -> Reply:
        if method != "GET":
            return _json(405, {"error": f"{method} not allowed; this API is read-only"})
        if len(target) > MAX_URL:
            return _json(414, {"error": f"URL longer than {MAX_URL} bytes"})
        url = urlsplit(target)
        params = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts == [""] or parts[0] == "static":
            found = asset("/".join(parts[1:]) if parts[0] == "static" else "index.html")
            if found is None:
                return _json(404, {"error": f"no dashboard file {url.path}"})
            return Reply(200, found[1], found[0], PAGE_HEADERS)
        if parts == ["status"]:  # the consumer's own figures, not Redis: never shared stale
            return self._reply(url.path, parts, params)
        return self._replies.get(target, lambda: self._reply(url.path, parts, params))

    def _reply(self, path: str, parts: list[str], params: dict[str, list[str]]) -> Reply:
        try:
            body = self._view(parts, params)
        except views.BadRequest as exc:
            return _json(400, {"error": str(exc)})
        except REDIS_ERRORS as exc:
            log.warning("redis error", extra={"error": str(exc)[:200]})
            return _json(503, {"error": "counters unavailable (Redis)"})
        if body is None:
            return _json(404, {"error": f"no route for {path}; see /openapi.json"})
        return _json(200, body)

    def _view(self, parts: list[str], params: dict[str, list[str]]) -> Any:
        def param(name: str, default: str | None = None) -> str | None:
            return params.get(name, [default])[-1]

        window = param("window", "1h")
        if parts == ["openapi.json"]:
            return OPENAPI
        if len(parts) == 3 and parts[0] == "queries" and parts[2] == "sentiment":
            return views.query_sentiment(self.store, self.rates, parts[1], window)
        if len(parts) == 3 and parts[0] == "products" and parts[2] == "sentiment":
            return views.product_sentiment(self.store, self.rates, parts[1], window)
        if parts == ["top"]:
            return views.top(self.store, self.rates, label=param("label", "negative"), window=window, kind=param("kind", "query"),
                             min_count=_int(params, "min_count", 10), limit=_int(params, "limit", 10))
        if parts == ["series"]:
            return views.series(self.store, self.rates, self.alerts, kind=param("kind", "query"), name=param("name", ""),
                                window=param("window", "24h"), alert_window_s=self.alert_window_s, baseline_s=self.baseline_s)
        if parts == ["alerts"]:
            return views.alerts(self.alerts, param("state"))
        if parts == ["status"]:
            return {"configured": False} if self.status is None else {"configured": True, **self.status.read()}
        return None


def make_server(api: ReadAPI, host: str, port: int, max_threads: int = 16, request_timeout_s: float = 10.0) -> BoundedHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            reply = api.route(self.command, self.path)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = do_POST = do_PUT = do_DELETE = _reply  # noqa: N815 (http.server API)

        def log_message(self, fmt: str, *args) -> None:
            log.debug("request", extra={"line": fmt % args})

    return BoundedHTTPServer((host, port), Handler, max_threads, request_timeout_s)
