"""services.sh up / idempotent up / status / down, and a foreign port, on spare ports."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "services" / "services.sh"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=180)


def test_up_idempotent_status_down(tmp_path):
    kafka_port, controller_port, redis_port = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        "SERVICES_DIR": str(tmp_path),
        "KAFKA_PORT": str(kafka_port),
        "KAFKA_CONTROLLER_PORT": str(controller_port),
        "REDIS_PORT": str(redis_port),
    }
    resolved = ROOT / ".cache" / "services" / "kafka" / "libs"
    if resolved.is_dir():  # reuse the jars `make services-up` resolved instead of a second mvn run
        env["KAFKA_LIBS"] = str(resolved)
    try:
        first = _run(env, "up")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "formatting kafka storage" in first.stdout
        assert f"kafka ready at 127.0.0.1:{kafka_port}" in first.stdout
        assert f"redis ready at redis://127.0.0.1:{redis_port}/0" in first.stdout

        second = _run(env, "up")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "kafka already running" in second.stdout and "redis already running" in second.stdout
        assert "formatting" not in second.stdout

        status = _run(env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "kafka: running" in status.stdout and "PING -> PONG" in status.stdout
        assert (tmp_path / "kafka" / "kafka.pid").exists() and (tmp_path / "kafka" / "kafka.log").exists()
    finally:
        down = _run(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "kafka stopped" in down.stdout and "redis stopped" in down.stdout
    after = _run(env, "status")
    assert after.returncode != 0
    assert "kafka: stopped" in after.stdout and "redis: stopped" in after.stdout
    assert (tmp_path / "kafka" / "data" / "meta.properties").exists(), "kafka data must survive a stop"


def test_foreign_process_on_port_is_a_clear_error(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {**os.environ, "SERVICES_DIR": str(tmp_path), "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(_free_port())}
        result = _run(env, "up")
    assert result.returncode == 1
    assert f"port {port} for kafka is held by another process" in result.stderr
    assert "Traceback" not in result.stderr
