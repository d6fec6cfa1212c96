"""librdkafka configuration: pass-through settings, secret redaction, topic creation."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.kafka_connection import KafkaSettingsError, connection_config

from ..config import KafkaSettings
from ..errors import ConfigError

log = logging.getLogger("consumer.kafka")
# Settings the consumer's delivery guarantee rests on: a user value would silently break it.
OWNED = {
    "enable.auto.commit": "offsets are committed only after outputs are acked and Redis is written",
    "enable.auto.offset.store": "offsets are stored only after outputs are acked and Redis is written",
    "auto.commit.enable": "offsets are committed only after outputs are acked and Redis is written",
    "enable.idempotence": "the producer must be idempotent so broker retries never duplicate or reorder",
    "acks": "every output must be acknowledged by all in-sync replicas (acks=all)",
    "request.required.acks": "every output must be acknowledged by all in-sync replicas (acks=all)",
    "transactional.id": "the pipeline is at-least-once with fenced counters, not transactional",
}


def client_config(settings: KafkaSettings) -> dict[str, str]:
    """Settings common to every client: bootstrap servers plus pass-through librdkafka keys."""
    try:
        return connection_config(settings, "consumer", OWNED)
    except KafkaSettingsError as exc:
        raise ConfigError(str(exc)) from None


def consumer_config(settings: KafkaSettings, on_stats=None) -> dict[str, Any]:
    passed = client_config(settings)
    config: dict[str, Any] = {
        "group.id": settings.group_id,
        "auto.offset.reset": "earliest",
        "statistics.interval.ms": 5000,
        "max.poll.interval.ms": 300000,
        **passed,
        # Offsets are committed by the consumer loop only after outputs and Redis are done.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
    }
    # KIP-848 (group.protocol=consumer) assigns on the broker and refuses the classic
    # client-side strategy setting. The classic protocol defaults to cooperative-sticky: a
    # rebalance revokes only the partitions that move, so the other members keep working.
    if passed.get("group.protocol", "classic") == "classic":
        config.setdefault("partition.assignment.strategy", "cooperative-sticky")
    if on_stats is not None:
        config["stats_cb"] = on_stats
    return config


# How long librdkafka keeps trying one message before reporting it failed. The callers retry
# failed messages themselves (outputs: the batch's round; alerts: the outbox), so a short
# timeout only brings the report, and a health signal, sooner. --kafka-config message.timeout.ms=...
# overrides both with one value.
OUTPUT_DELIVERY_TIMEOUT_MS = 60_000
ALERT_DELIVERY_TIMEOUT_MS = 30_000


def producer_config(settings: KafkaSettings, delivery_timeout_ms: int) -> dict[str, Any]:
    return {
        "message.timeout.ms": delivery_timeout_ms,
        **client_config(settings),
        # Idempotent: broker-side retries never duplicate or reorder within a partition.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 200_000,
    }


def replication(settings: KafkaSettings, brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for topics created at start-up."""
    factor = settings.topic_replication or min(3, brokers)
    min_insync = settings.topic_min_insync_replicas or max(1, factor - 1)
    if factor > brokers:
        raise ConfigError(f"--topic-replication {factor} needs {factor} brokers; the cluster has {brokers}")
    if not 1 <= min_insync <= factor:
        raise ConfigError(f"--topic-min-insync-replicas {min_insync} must be between 1 and the replication factor {factor}")
    return factor, min_insync


def ensure_topics(settings: KafkaSettings, topics: list[str]) -> list[str]:
    """Create missing topics; returns the ones created."""
    admin = AdminClient(client_config(settings))
    try:
        metadata = admin.list_topics(timeout=15)
    except KafkaException as exc:
        raise ConfigError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc.args[0].str()}") from None
    missing = [t for t in dict.fromkeys(topics) if t not in metadata.topics]
    if not missing:
        return []
    factor, min_insync = replication(settings, len(metadata.brokers))
    futures = admin.create_topics([NewTopic(t, num_partitions=settings.topic_partitions, replication_factor=factor,
                                            config={"min.insync.replicas": str(min_insync)}) for t in missing])
    for topic, future in futures.items():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # another process won the race
                raise ConfigError(f"cannot create topic {topic}: {exc.args[0].str()}") from None
    log.info("created topics", extra={"topics": missing, "partitions": settings.topic_partitions,
                                      "replication_factor": factor, "min_insync_replicas": min_insync})
    return missing
