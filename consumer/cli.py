"""`python -m consumer run|stats`: the streaming sentiment consumer and its counter reader."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field

import orjson

from schemas.checkpoint import CheckpointError
from schemas.settings import add_dataclass_arguments, dataclass_from_args

from .config import AlertSettings, AlertWindowSettings, CounterSettings, KafkaSettings, ModelSettings, RedisSettings, RedisWriteSettings, RuntimeSettings
from .errors import ConfigError
from schemas.redis_connection import REDIS_ERRORS, RedisSettingsError

log = logging.getLogger("consumer")


@dataclass
class StatsArguments:
    query: str = field(default="", metadata={"help": "the query as users type it (normalized before lookup)"})
    product_id: str = field(default="", metadata={"help": "read a product's counters instead of a query's"})
    window: str = field(default="1h", metadata={"help": "window to sum, e.g. 5m, 1h, 24h"})


@dataclass
class TopArguments:
    label: str = field(default="negative", metadata={"help": "rank by the share of this label", "choices": ["negative", "neutral", "positive"]})
    window: str = field(default="1h", metadata={"help": "window to sum, e.g. 5m, 1h, 24h"})
    min_count: int = field(default=10, metadata={"help": "ignore queries with fewer events in the window"})
    limit: int = field(default=10, metadata={"help": "how many queries to list"})


@dataclass
class ServeArguments:
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind; 0.0.0.0 exposes the API to the network"})
    port: int = field(default=8080, metadata={"help": "port to listen on"})
    max_threads: int = field(default=16, metadata={"help": "requests served at once; more get 503 (bounds the load on Redis)"})
    request_timeout_s: float = field(default=10.0, metadata={"help": "close a connection whose request does not arrive within this time"})
    cache_s: float = field(default=2.0, metadata={"help": "share each reply of the counter routes (/top, /series, sentiment, /alerts) for this many seconds among all clients, so open dashboards cost Redis what one does (0: every request reads Redis)"})
    metrics_url: str = field(default="", metadata={"help": "the consumer's Prometheus endpoint (e.g. http://127.0.0.1:9108/metrics): the dashboard then shows its models, events/s and lag (empty: that panel is hidden)"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m consumer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="consume events, label them, publish and count, raise alerts",
                              description="Read search_result and review events from Kafka, label them with the checkpoint's model in micro-batches, publish labelled events and dead letters, keep exact rolling counters in Redis, alert on negative spikes. Every flag has an environment variable named in its help.")
    for cls, title in ((KafkaSettings, "kafka"), (RedisSettings, "redis"), (RedisWriteSettings, "redis writes"), (CounterSettings, "counters"),
                       (AlertSettings, "alerts"), (ModelSettings, "model and batching"), (RuntimeSettings, "runtime")):
        add_dataclass_arguments(run, cls, title)
    readers = {
        "stats": ("print one query's (or product's) rolling counts as JSON", StatsArguments),
        "top": ("print the queries with the highest share of a label as JSON", TopArguments),
        "serve": ("serve the live dashboard at / and the read API over HTTP (JSON; OpenAPI at /openapi.json)", ServeArguments),
    }
    for name, (help_text, cls) in readers.items():
        sub = commands.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        add_dataclass_arguments(sub, RedisSettings, "redis")
        add_dataclass_arguments(sub, CounterSettings, "counters")
        if name == "serve":  # the dashboard charts the alert baseline: give it the windows the consumer runs with
            add_dataclass_arguments(sub, AlertWindowSettings, "alert windows (as the consumer runs)")
        add_dataclass_arguments(sub, cls, name)
    return parser


def _read_stores(args: argparse.Namespace):
    from .app import Settings, alert_store, alert_times
    from schemas.redis_connection import connect
    from .state.counters import CounterStore
    from .state.rates import RateStore

    settings = Settings(KafkaSettings(), dataclass_from_args(RedisSettings, args), dataclass_from_args(CounterSettings, args),
                        ModelSettings(), RuntimeSettings())
    windows = dataclass_from_args(AlertWindowSettings, args) if args.command == "serve" else AlertWindowSettings()
    client, layout = connect(settings.redis.redis_url, settings.redis.redis_cluster), settings.layout()
    store = CounterStore(client, layout)
    return store, RateStore(store, settings.counters.rates_min_per_label), alert_store(client, layout, windows), alert_times(windows, layout)


def _read(args: argparse.Namespace) -> int:
    from . import views

    store, rates, alerts, times = _read_stores(args)
    try:
        if args.command == "stats":
            query = dataclass_from_args(StatsArguments, args)
            if bool(query.query) == bool(query.product_id):
                raise ConfigError("pass exactly one of --query or --product-id")
            result = (views.query_sentiment(store, rates, query.query, query.window) if query.query
                      else views.product_sentiment(store, rates, query.product_id, query.window))
        elif args.command == "top":
            t = dataclass_from_args(TopArguments, args)
            result = views.top(store, rates, label=t.label, window=t.window, min_count=t.min_count, limit=t.limit)
        else:
            from .api import ReadAPI, make_server
            from .dashboard.status import ConsumerStatus
            from .observability import configure_logging

            serve = dataclass_from_args(ServeArguments, args)
            if serve.metrics_url and not serve.metrics_url.startswith(("http://", "https://")):
                raise ConfigError("--metrics-url must be an http:// or https:// URL")
            configure_logging("INFO")
            if serve.cache_s < 0:
                raise ConfigError("--cache-s must be >= 0")
            api = ReadAPI(store, rates, alerts, times.window_s, times.baseline_s, ConsumerStatus(serve.metrics_url) if serve.metrics_url else None,
                          serve.cache_s)
            try:
                server = make_server(api, serve.host, serve.port, serve.max_threads, serve.request_timeout_s)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            except OSError as exc:
                raise ConfigError(f"cannot listen on {serve.host}:{serve.port}: {exc.strerror}") from None
            log.info("serving the dashboard and the read API", extra={"url": f"http://{serve.host}:{serve.port}/", "openapi": "/openapi.json"})
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
            return 0
    except views.BadRequest as exc:
        raise ConfigError(str(exc)) from None
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            from .app import Settings, StreamProcessor
            from .observability import configure_logging

            runtime = dataclass_from_args(RuntimeSettings, args)
            configure_logging(runtime.log_level)
            settings = Settings(dataclass_from_args(KafkaSettings, args), dataclass_from_args(RedisSettings, args),
                                dataclass_from_args(CounterSettings, args), dataclass_from_args(ModelSettings, args), runtime,
                                dataclass_from_args(AlertSettings, args), dataclass_from_args(RedisWriteSettings, args))
            processor = StreamProcessor(settings)
            processor.start()
            return processor.run()
        return _read(args)
    except (ConfigError, CheckpointError, RedisSettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except REDIS_ERRORS as exc:
        print(f"error: redis: {exc}", file=sys.stderr)
        return 2
