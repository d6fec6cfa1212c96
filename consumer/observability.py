"""Prometheus metrics, /healthz, and structured JSON logs."""

from __future__ import annotations

import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .httpserver import BoundedHTTPServer

# librdkafka fetch states of a partition not assigned here (others: offset-query, offset-wait,
# validate-epoch-wait while an assigned one starts or changes leader, then active).
NOT_FETCHING = frozenset({"none", "stopping", "stopped"})
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.Formatter.converter = time.gmtime
    for noisy in ("transformers", "huggingface_hub", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter("sentiment_events_in", "Messages read from input topics", ["topic"], registry=r)
        self.events_out = Counter("sentiment_events_out", "Labelled events published", ["label"], registry=r)
        self.dead_lettered = Counter("sentiment_events_dead_lettered", "Invalid events sent to the DLQ", ["error_code"], registry=r)
        self.not_counted = Counter("sentiment_events_not_counted", "Labelled but outside the counter windows", ["reason"], registry=r)
        self.truncated = Counter("sentiment_texts_truncated", "Texts cut to the model's max_length", registry=r)
        self.cache_hits = Counter("sentiment_inference_cache_hits", "Texts answered by the inference cache", registry=r)
        self.redis_retries = Counter("sentiment_redis_retries", "Redis update attempts that failed and were retried", ["reason"], registry=r)
        self.model_failures = Counter("sentiment_model_failures", "Batches the model failed on systemically (retried whole)", registry=r)
        self.troubles = Gauge("sentiment_trouble", "1 while a dependency keeps failing (model, redis, kafka_produce, alerts)", ["name"], registry=r)
        self.batches = Counter("sentiment_batches", "Micro-batches committed", registry=r)
        self.abandoned = Counter("sentiment_batches_abandoned", "Batches dropped uncommitted (rebalance, shutdown)", ["reason"], registry=r)
        self.alerts = Counter("sentiment_alerts", "Alert events acknowledged by the broker", ["state"], registry=r)
        self.alerts_pending = Gauge("sentiment_alerts_pending", "Alert events in the outbox, not yet acknowledged", registry=r)
        self.webhook = Counter("sentiment_alert_webhook", "Webhook deliveries by outcome", ["outcome"], registry=r)
        self.batch_size = Histogram("sentiment_batch_size", "Messages per micro-batch", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
        self.inference_seconds = Histogram("sentiment_inference_seconds", "Model time per micro-batch", registry=r,
                                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.e2e_latency = Histogram("sentiment_end_to_end_latency_seconds", "Event ts to labelled output", registry=r,
                                     buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600))
        self.lag = Gauge("sentiment_consumer_lag", "Messages behind the high watermark", ["topic", "partition"], registry=r)
        self.model = Gauge("sentiment_model_info", "Loaded model per route (value 1)", ["route", "name", "version", "device"], registry=r)
        self.model_reloads = Counter("sentiment_model_reloads", "New checkpoint versions swapped in or refused", ["route", "outcome"], registry=r)
        self.canary_compared = Gauge("sentiment_canary_events", "Events the candidate version labelled in shadow so far, summed over the consumer group", ["route", "version"], registry=r)
        self.canary_agreement = Gauge("sentiment_canary_agreement", "Share of the group's shadowed events where the candidate agrees with the version in service", ["route", "version"], registry=r)
        self.canary_shadowed = Counter("sentiment_canary_shadowed", "Events this process shadowed and added to the group's canary tally", ["route", "version"], registry=r)
        self.canary_share_difference = Gauge("sentiment_canary_share_difference", "Candidate's share of a label minus the running model's, on the shadowed events", ["route", "version", "label"], registry=r)
        self.events_routed = Counter("sentiment_events_routed", "Valid events sent to each route's model (english, multilingual)", ["route"], registry=r)
        self.last_progress = time.monotonic()
        self.total_lag = 0
        self._lag_labels: set[tuple[str, str]] = set()  # (topic, partition) of the lag gauges set

    def progressed(self) -> None:
        self.last_progress = time.monotonic()

    def on_stats(self, stats_json: str) -> None:
        """librdkafka statistics callback: consumer lag per assigned partition; the gauges of
        partitions no longer assigned here are removed, so no one alerts on a lag nobody here reads."""
        stats = orjson.loads(stats_json)
        lags: dict[tuple[str, str], int] = {}
        for topic, info in stats.get("topics", {}).items():
            for partition, p in info.get("partitions", {}).items():
                lag = p.get("consumer_lag", -1)
                # A revoked partition can stay in the report, stopped, with a lag from its last committed offset.
                if partition == "-1" or lag < 0 or p.get("fetch_state") in NOT_FETCHING:
                    continue
                lags[(topic, partition)] = lag
        for labels in self._lag_labels - lags.keys():
            self.lag.remove(*labels)
        for labels, lag in lags.items():
            self.lag.labels(*labels).set(lag)
        self._lag_labels = set(lags)
        self.total_lag = sum(lags.values())



class Health:
    """What /healthz reports: stalled progress, or a dependency failing for longer than its grace."""

    def __init__(self, metrics: Metrics, stall_s: float) -> None:
        self.metrics = metrics
        self.stall_s = stall_s
        self.troubles: dict[str, tuple[float, str]] = {}  # name -> (since, detail)
        # The model failing is never normal: unhealthy at once. Sinks get the stall grace.
        self.grace = {"model": 0.0}

    def trouble(self, name: str, detail: str) -> None:
        if name not in self.troubles:
            self.metrics.troubles.labels(name).set(1)
        self.troubles[name] = (self.troubles.get(name, (time.monotonic(), ""))[0], detail)

    def recovered(self, name: str) -> None:
        if self.troubles.pop(name, None) is not None:
            self.metrics.troubles.labels(name).set(0)

    def since(self, name: str) -> float | None:
        found = self.troubles.get(name)
        return None if found is None else time.monotonic() - found[0]

    def report(self) -> dict:
        now = time.monotonic()
        failing = {name: {"for_s": round(now - since, 1), "detail": detail} for name, (since, detail) in self.troubles.items()
                   if now - since >= self.grace.get(name, self.stall_s)}
        stalled = self.metrics.total_lag > 0 and now - self.metrics.last_progress >= self.stall_s
        status = "failing" if failing else "stalled" if stalled else "ok"
        return {"status": status, "lag": self.metrics.total_lag, "seconds_since_progress": round(now - self.metrics.last_progress, 1),
                "failing": failing}


def serve_metrics(metrics: Metrics, health: Health, host: str, port: int) -> BoundedHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path == "/metrics":
                body, status, ctype = generate_latest(metrics.registry), 200, CONTENT_TYPE_LATEST
            elif self.path == "/healthz":
                report = health.report()
                body, status, ctype = orjson.dumps(report), (200 if report["status"] == "ok" else 503), "application/json"
            else:
                body, status, ctype = b'{"error": "not found"}', 404, "application/json"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = BoundedHTTPServer((host, port), Handler, max_threads=4, request_timeout_s=5)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
