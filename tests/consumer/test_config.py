"""Configuration: librdkafka pass-through, secret redaction, env vars with flag names."""

from __future__ import annotations

import pytest

from consumer.cli import build_parser
from consumer.config import KafkaSettings, parse_duration
from consumer.errors import ConfigError
from consumer.kafka.clients import client_config, redact
from consumer.redis_client import redacted_url


def test_pass_through_from_file_and_flags(tmp_path):
    conf = tmp_path / "client.properties"
    conf.write_text("# SASL over TLS\nsecurity.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.password=from-file\n")
    settings = KafkaSettings(kafka_config_file=str(conf), kafka_config=["sasl.username=svc", "sasl.password=from-flag"])
    config = client_config(settings)
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.password"] == "from-flag"
    shown = redact(config)
    assert shown["sasl.password"] == "***" and shown["sasl.username"] == "svc"
    assert "from-flag" not in repr(shown)


def test_bad_pass_through_is_a_clear_error():
    with pytest.raises(ConfigError, match="expected key=value"):
        client_config(KafkaSettings(kafka_config=["no-equals-sign"]))


def test_redis_url_password_is_redacted():
    assert redacted_url("rediss://svc:s3cret@cache.internal:6380/2") == "rediss://svc:***@cache.internal:6380/2"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_flags_take_defaults_from_env(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:19092")
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/3")
    monkeypatch.setenv("BATCH_SIZE", "128")
    monkeypatch.setenv("INPUT_TOPICS", "a,b")
    args = build_parser().parse_args(["run"])
    assert (args.bootstrap_servers, args.redis_url, args.batch_size) == ("broker:19092", "redis://r:6379/3", 128)
    assert args.input_topics == ["a", "b"]
    assert build_parser().parse_args(["run", "--batch-size", "8"]).batch_size == 8


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("5m", 300), ("1h", 3600), ("2d", 172800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", "m", "0m", "-5m", "5y", "1.5h"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)
