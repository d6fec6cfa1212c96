"""A small read-only HTTP JSON API over the counters and alerts (`python -m consumer serve`).

Standard library server, bound to 127.0.0.1 by default. Routes:
  GET /queries/{query}/sentiment?window=1h
  GET /products/{product_id}/sentiment?window=1h
  GET /top?label=negative&window=1h&min_count=10&limit=10
  GET /alerts?state=firing
  GET /openapi.json
"""

from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from . import views
from .alerts.state import AlertStore
from .httpserver import BoundedHTTPServer
from .redis_client import REDIS_ERRORS
from .state.counters import CounterStore

log = logging.getLogger("consumer.api")
MAX_URL = 4096

_WINDOW = {"name": "window", "in": "query", "schema": {"type": "string", "default": "1h", "pattern": "^[0-9]+[smhd]$"},
           "description": "window ending now, e.g. 5m, 1h, 24h (at most the longest counter window)"}
_SENTIMENT = {"type": "object", "properties": {
    "window": {"type": "string"}, "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
    "total": {"type": "integer"},
    "negative_share": {"type": ["number", "null"], "description": "estimated share of negative events (see estimator)"},
    "interval_95": {"type": ["array", "null"], "items": {"type": "number"}, "description": "95% interval of negative_share; wide when counts are small"},
    "estimator": {"enum": ["pacc", "pcc", "cc", "none"], "description": "pacc: mean calibrated probability adjusted by the model's validation rates; pcc: mean calibrated probability; cc: argmax counting"},
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
        "/top": {"get": {"summary": "Queries ranked by the share of a label", "parameters": [
            {"name": "label", "in": "query", "schema": {"enum": list(views.LABELS), "default": "negative"}}, _WINDOW,
            {"name": "min_count", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 10}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10}}],
            "responses": _ok({"type": "object", "properties": {"results": {"type": "array"}}})}},
        "/alerts": {"get": {"summary": "Latest alert per subject", "parameters": [
            {"name": "state", "in": "query", "schema": {"enum": ["firing", "resolved"]}}],
            "responses": _ok({"type": "object", "properties": {"alerts": {"type": "array"}}})}},
    },
}


def _int(params: dict[str, list[str]], name: str, default: int) -> int:
    raw = params.get(name, [str(default)])[-1]
    try:
        return int(raw)
    except ValueError:
        raise views.BadRequest(f"{name} must be an integer, got {raw[:40]!r}") from None


def route(store: CounterStore, alerts: AlertStore, method: str, target: str) -> tuple[int, Any]:
    """(status, JSON body) for one request; pure, so tests can call it without sockets."""
    if method != "GET":
        return 405, {"error": f"{method} not allowed; this API is read-only"}
    if len(target) > MAX_URL:
        return 414, {"error": f"URL longer than {MAX_URL} bytes"}
    url = urlsplit(target)
    params = parse_qs(url.query)
    parts = [unquote(p) for p in url.path.strip("/").split("/")]
    window = params.get("window", ["1h"])[-1]
    try:
        if parts == ["openapi.json"]:
            return 200, OPENAPI
        if len(parts) == 3 and parts[0] == "queries" and parts[2] == "sentiment":
            return 200, views.query_sentiment(store, parts[1], window)
        if len(parts) == 3 and parts[0] == "products" and parts[2] == "sentiment":
            return 200, views.product_sentiment(store, parts[1], window)
        if parts == ["top"]:
            return 200, views.top(store, label=params.get("label", ["negative"])[-1], window=window,
                                  min_count=_int(params, "min_count", 10), limit=_int(params, "limit", 10))
        if parts == ["alerts"]:
            return 200, views.alerts(alerts, params.get("state", [None])[-1])
    except views.BadRequest as exc:
        return 400, {"error": str(exc)}
    except REDIS_ERRORS as exc:
        log.warning("redis error", extra={"error": str(exc)[:200]})
        return 503, {"error": "counters unavailable (Redis)"}
    return 404, {"error": f"no route for {url.path}; see /openapi.json"}


def make_server(store: CounterStore, alerts: AlertStore, host: str, port: int, max_threads: int = 16, request_timeout_s: float = 10.0) -> BoundedHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            status, body = route(store, alerts, self.command, self.path)
            data = orjson.dumps(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _reply  # noqa: N815 (http.server API)

        def log_message(self, fmt: str, *args) -> None:
            log.debug("request", extra={"line": fmt % args})

    return BoundedHTTPServer((host, port), Handler, max_threads, request_timeout_s)
