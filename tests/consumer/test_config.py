"""Configuration: librdkafka pass-through, secret redaction, env vars with flag names."""

from __future__ import annotations

import pytest

from consumer.cli import build_parser
from consumer.config import KafkaSettings
from consumer.errors import ConfigError
from consumer.kafka.clients import client_config, consumer_config
from schemas.redis_connection import redacted_url
from schemas.kafka_connection import redact


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
    shown = redacted_url("redis://cache:6379/0?password=s3cret&socket_timeout=5")
    assert "s3cret" not in shown and "password=***" in shown and "socket_timeout=5" in shown


def test_oauthbearer_config_is_redacted():
    shown = redact({"sasl.oauthbearer.config": "principal=svc clientSecret=abc123", "sasl.mechanism": "OAUTHBEARER"})
    assert shown == {"sasl.oauthbearer.config": "***", "sasl.mechanism": "OAUTHBEARER"}


@pytest.mark.parametrize("key", ["acks", "enable.idempotence", "enable.auto.commit", "enable.auto.offset.store", "transactional.id"])
def test_settings_the_consumer_owns_are_refused(key):
    with pytest.raises(ConfigError, match=f"--kafka-config {key} is set by the consumer itself"):
        client_config(KafkaSettings(kafka_config=[f"{key}=1"]))


def test_kip848_protocol_drops_the_classic_assignment_strategy():
    classic = consumer_config(KafkaSettings())
    assert classic["partition.assignment.strategy"] == "cooperative-sticky"
    kip848 = consumer_config(KafkaSettings(kafka_config=["group.protocol=consumer"]))
    assert "partition.assignment.strategy" not in kip848 and kip848["group.protocol"] == "consumer"
    assert kip848["enable.auto.commit"] is False


def test_cli_refuses_owned_setting_with_one_line(tmp_path):
    import subprocess
    import sys

    from .harness import ROOT

    result = subprocess.run([sys.executable, "-m", "consumer", "run", "--kafka-config", "acks=1", "--checkpoint", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "acks is set by the consumer itself" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--batch-size", "0", "--batch-size 0 must be at least 1"),
    ("--inference-batch-size", "-1", "--inference-batch-size -1 must be >= 0"),
    ("--max-wait-ms", "-5", "--max-wait-ms -5 must be >= 0"),
])
def test_cli_refuses_batching_it_cant_use_with_one_line(tmp_path, flag, value, message):
    import subprocess
    import sys

    from .harness import ROOT

    # No broker, Redis or checkpoint behind these: the refusal comes before any of them is touched.
    result = subprocess.run([sys.executable, "-m", "consumer", "run", flag, value, "--bootstrap-servers", "127.0.0.1:1",
                             "--redis-url", "redis://127.0.0.1:1/0", "--checkpoint", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: {message}"


def test_flags_take_defaults_from_env(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:19092")
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/3")
    monkeypatch.setenv("BATCH_SIZE", "128")
    monkeypatch.setenv("INPUT_TOPICS", "a,b")
    args = build_parser().parse_args(["run"])
    assert (args.bootstrap_servers, args.redis_url, args.batch_size) == ("broker:19092", "redis://r:6379/3", 128)
    assert args.input_topics == ["a", "b"]
    assert build_parser().parse_args(["run", "--batch-size", "8"]).batch_size == 8


def test_created_topics_replicate_to_three_with_two_in_sync_when_the_cluster_allows():
    from consumer.kafka.clients import replication

    assert replication(KafkaSettings(), brokers=1) == (1, 1)
    assert replication(KafkaSettings(), brokers=3) == (3, 2)
    assert replication(KafkaSettings(), brokers=5) == (3, 2)
    assert replication(KafkaSettings(topic_replication=2, topic_min_insync_replicas=2), brokers=3) == (2, 2)
    with pytest.raises(ConfigError, match="needs 3 brokers"):
        replication(KafkaSettings(topic_replication=3), brokers=1)
    with pytest.raises(ConfigError, match="between 1 and the replication factor 3"):
        replication(KafkaSettings(topic_min_insync_replicas=4), brokers=3)
