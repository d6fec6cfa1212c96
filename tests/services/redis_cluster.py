"""A private Redis Cluster (3 masters + 3 replicas, six redis-server processes) on free ports,
for tests that write through the cluster or kill one of its masters."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.services.redis_server import wait_for_ping

NODES = 6


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_base() -> int:
    """A first port with six free ports after it, and their cluster-bus ports (+10000) free too."""
    for _ in range(200):
        base = random.randrange(20000, 30000 - NODES)
        if all(_free(base + i) and _free(base + i + 10000) for i in range(NODES)):
            return base
    raise RuntimeError("no six free ports for a Redis Cluster")


class LocalRedisCluster:
    def __init__(self, directory: Path, node_timeout_ms: int = 1000) -> None:
        self.dir = directory
        self.node_timeout_ms = node_timeout_ms
        self.base = _free_base()
        self.ports = [self.base + i for i in range(NODES)]
        self.url = f"redis://127.0.0.1:{self.base}/0"

    def _node_dir(self, port: int) -> Path:
        return self.dir / f"node-{port}"

    def start_node(self, port: int) -> None:
        d = self._node_dir(port)
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(d), "--daemonize", "yes",
                        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(self.node_timeout_ms), "--appendonly", "yes", "--save", "",
                        "--pidfile", str(d / "redis.pid"), "--logfile", str(d / "redis.log")], check=True)
        wait_for_ping(port)

    def start(self) -> "LocalRedisCluster":
        for port in self.ports:
            self.start_node(port)
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        self.wait_ok(replicated=True)
        return self

    def _replicated(self, port: int) -> bool:
        info = redis.Redis(port=port).info("replication")
        return info.get("connected_slaves", 0) >= 1 and info["slave0"]["state"] == "online"

    def wait_ok(self, timeout: float = 60, replicated: bool = False) -> None:
        """Until every live node says cluster_state:ok and sees three masters with slots (and, with
        `replicated`, every master has an online replica)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(redis.Redis(port=p).cluster("info")["cluster_state"] == "ok" for p in self.live_ports()) \
                        and len(self.masters()) == 3 and (not replicated or all(map(self._replicated, self.masters()))):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the Redis Cluster did not become ok")

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if self._alive(p)]

    def _pid(self, port: int) -> int:
        return int((self._node_dir(port) / "redis.pid").read_text())

    def _alive(self, port: int) -> bool:
        try:
            os.kill(self._pid(port), 0)
            return True
        except (OSError, ValueError):
            return False

    def masters(self) -> list[int]:
        """Ports of the live masters that hold slots."""
        nodes = redis.Redis(port=self.live_ports()[0]).cluster("nodes")
        return sorted(int(addr.split(":")[1].split("@")[0]) for addr, info in nodes.items()
                      if "master" in info["flags"] and "fail" not in info["flags"] and info["slots"] and info["connected"])

    def kill(self, port: int) -> None:
        os.kill(self._pid(port), signal.SIGKILL)

    def stop(self) -> None:
        for port in self.live_ports():
            try:
                os.kill(self._pid(port), signal.SIGKILL)
            except OSError:
                pass

    def __enter__(self) -> "LocalRedisCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
