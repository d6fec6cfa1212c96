"""`python -m consumer run|stats`: the streaming sentiment consumer and its counter reader."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import orjson
import redis

from schemas import normalize_query
from schemas.checkpoint import CheckpointError
from schemas.settings import add_dataclass_arguments, dataclass_from_args

from .config import CounterSettings, KafkaSettings, ModelSettings, RedisSettings, RuntimeSettings, parse_duration
from .errors import ConfigError

log = logging.getLogger("consumer")


@dataclass
class StatsArguments:
    query: str = field(default="", metadata={"help": "the query as users type it (normalized before lookup)"})
    product_id: str = field(default="", metadata={"help": "read a product's counters instead of a query's"})
    window: str = field(default="1h", metadata={"help": "window to sum, e.g. 5m, 1h, 24h"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m consumer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="consume events, label them, publish and count",
                              description="Read search_result and review events from Kafka, label them with the checkpoint's model in micro-batches, publish labelled events and dead letters, keep exact rolling counters in Redis. Every flag has an environment variable named in its help.")
    for cls, title in ((KafkaSettings, "kafka"), (RedisSettings, "redis"), (CounterSettings, "counters"),
                       (ModelSettings, "model and batching"), (RuntimeSettings, "runtime")):
        add_dataclass_arguments(run, cls, title)
    stats = commands.add_parser("stats", help="print one query's (or product's) rolling counts as JSON",
                                description="Read rolling sentiment counts from Redis and print one JSON object.")
    add_dataclass_arguments(stats, RedisSettings, "redis")
    add_dataclass_arguments(stats, CounterSettings, "counters")
    add_dataclass_arguments(stats, StatsArguments, "query")
    return parser


def _stats(args: argparse.Namespace) -> dict:
    from .app import Settings
    from .redis_client import connect
    from .state.counters import CounterStore

    query_args = dataclass_from_args(StatsArguments, args)
    if bool(query_args.query) == bool(query_args.product_id):
        raise ConfigError("pass exactly one of --query or --product-id")
    try:
        window_s = parse_duration(query_args.window)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings = Settings(KafkaSettings(), dataclass_from_args(RedisSettings, args), dataclass_from_args(CounterSettings, args),
                        ModelSettings(), RuntimeSettings())
    layout = settings.layout()
    if window_s > layout.longest:
        raise ConfigError(f"window {query_args.window} is longer than the longest kept window ({max(settings.counters.windows, key=parse_duration)})")
    store = CounterStore(connect(settings.redis.redis_url), layout)
    if query_args.query:
        kind, name = "query", normalize_query(query_args.query)
        head = {"query": query_args.query, "query_norm": name}
    else:
        kind, name = "product", query_args.product_id
        head = {"product_id": name}
    counts = store.window_counts(kind, name, window_s, int(time.time() * 1000))
    full = {label: counts.get(label, 0) for label in ("negative", "neutral", "positive")} | dict(counts)
    total = sum(full.values())
    return {**head, "window": query_args.window, "counts": full, "total": total,
            "negative_share": round(full["negative"] / total, 4) if total else None}


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
                                dataclass_from_args(CounterSettings, args), dataclass_from_args(ModelSettings, args), runtime)
            processor = StreamProcessor(settings)
            processor.start()
            return processor.run()
        sys.stdout.buffer.write(orjson.dumps(_stats(args)) + b"\n")
        return 0
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"error: redis: {exc}", file=sys.stderr)
        return 2
