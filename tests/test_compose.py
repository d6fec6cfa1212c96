"""docker-compose.yml stays consistent with the CLIs: every env var it sets is a real flag's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from consumer.cli import build_parser as consumer_parser
from trainer.cli import build_parser as trainer_parser

ROOT = Path(__file__).resolve().parents[1]
PLATFORM_VARS = {"HF_HUB_OFFLINE"}


def _env_names(parser) -> set[str]:
    names = set()
    for action in parser._subparsers._group_actions[0].choices.values():  # each subcommand
        for arg in action._actions:
            if arg.help and "[env " in arg.help:
                names.add(arg.help.split("[env ")[1].split(";")[0])
    return names


def test_compose_env_and_commands_match_the_clis():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    known = _env_names(consumer_parser()) | _env_names(trainer_parser()) | PLATFORM_VARS
    services = compose["services"]
    assert {"kafka", "redis", "consumer", "consumer-gpu", "trainer"} <= set(services)
    for name in ("consumer", "consumer-gpu", "consumer-cluster", "trainer"):
        env = services[name]["environment"]
        assert set(env) <= known, f"{name} sets unknown variables {set(env) - known}"
        command = services[name]["command"]
        command = command if isinstance(command, str) else " ".join(command)
        assert command.split()[0] in ("sentiment-consumer", "sentiment-trainer")
    gpu = services["consumer-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    # The cluster profile: three KRaft voters, each advertising itself; six Redis Cluster nodes.
    cluster = {name: svc for name, svc in services.items() if "cluster" in svc.get("profiles", [])}
    brokers = [svc for name, svc in cluster.items() if name.startswith("kafka-")]
    assert len(brokers) == 3
    for i, broker in enumerate(brokers, 1):
        env = broker["environment"]
        assert env["KAFKA_NODE_ID"] == i and env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://kafka-{i}:9092"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
    assert sum("--cluster-enabled" in svc.get("command", []) for svc in cluster.values()) == 6
    consumer = cluster["consumer-cluster"]["environment"]
    assert consumer["REDIS_CLUSTER"] == "1" and consumer["KAFKA_BOOTSTRAP_SERVERS"].count(",") == 2
    # Published ports bind to loopback only.
    for service in services.values():
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", []))


def test_compose_config_validates_with_a_compose_client():
    if shutil.which("docker-compose"):
        command = ["docker-compose", "config", "-q"]
    elif shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose", "config", "-q"]
    else:
        pytest.skip("no compose client on this machine (the YAML checks above still ran)")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_compose_monitoring_wires_prometheus_grafana_and_the_dashboard():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    # Prometheus scrapes the consumer's metrics port, which the consumer binds on all container interfaces.
    prometheus = yaml.safe_load((ROOT / "services/monitoring/prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert targets == ["consumer:9108"] and "--metrics-host" in services["consumer"]["command"]
    # Every host path Prometheus and Grafana mount exists in the repo.
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    datasource = yaml.safe_load((ROOT / "services/monitoring/grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["uid"] == "prometheus"
    provider = yaml.safe_load((ROOT / "services/monitoring/grafana/provisioning/dashboards/shop-sentiment.yml").read_text())["providers"][0]
    assert any(v.endswith(":" + provider["options"]["path"] + ":ro") for v in services["grafana"]["volumes"])
    # The dashboard service is `consumer serve` reading the consumer's metrics.
    command = services["dashboard"]["command"]
    assert command[:2] == ["sentiment-consumer", "serve"] and command[command.index("--metrics-url") + 1] == "http://consumer:9108/metrics"
    assert set(services["dashboard"]["environment"]) <= _env_names(consumer_parser()) | _env_names(trainer_parser()) | PLATFORM_VARS
