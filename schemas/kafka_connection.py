"""How every command reaches Kafka: the same flags, env vars and pass-through rules.

The consumer and the trainer both read topics; they share these settings so a
cluster's SASL/TLS file works unchanged for both, and secrets are redacted the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SECRET = re.compile(r"(password|secret|token|\.key\.pem|private|credentials|sasl\.jaas|oauthbearer\.config)", re.IGNORECASE)
REDACTED = "***"


class KafkaSettingsError(ValueError):
    """A connection setting that can't be used; the message names the flag or file line."""


@dataclass
class KafkaConnection:
    bootstrap_servers: str = field(default="127.0.0.1:9092", metadata={"env": "KAFKA_BOOTSTRAP_SERVERS", "help": "Kafka bootstrap servers, host:port[,host:port]"})
    kafka_config: list[str] = field(default_factory=list, metadata={"help": "librdkafka setting key=value passed to every client (security.protocol, sasl.*, ssl.*); repeatable", "metavar": "KEY=VALUE"})
    kafka_config_file: str = field(default="", metadata={"help": "file of librdkafka key=value lines (# comments), applied before --kafka-config"})


def redact(config: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to log: values of password/secret/key settings replaced."""
    return {key: REDACTED if _SECRET.search(key) else value for key, value in config.items()}


def _parse_pairs(lines: list[str], where: str) -> dict[str, str]:
    pairs = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise KafkaSettingsError(f"{where}{number}: expected key=value, got {line.split('=')[0][:40]!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def connection_config(settings: KafkaConnection, program: str, owned: dict[str, str]) -> dict[str, str]:
    """Bootstrap servers plus pass-through librdkafka keys; keys `program` sets itself (`owned`: key -> why) are refused."""
    config = {"bootstrap.servers": settings.bootstrap_servers}
    if settings.kafka_config_file:
        path = Path(settings.kafka_config_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise KafkaSettingsError(f"kafka config file {path}: {exc.strerror}") from None
        config.update(_parse_pairs(lines, f"{path}:"))
    config.update(_parse_pairs(settings.kafka_config, "--kafka-config #"))
    for key in sorted(config.keys() & owned.keys()):
        raise KafkaSettingsError(f"--kafka-config {key} is set by the {program} itself ({owned[key]}); remove it")
    return config
