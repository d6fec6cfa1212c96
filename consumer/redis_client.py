"""The consumer's own demand on Redis: a maxmemory-policy that never evicts its offset fences.
(Connecting lives in schemas/redis_connection.py, shared with the trainer.)"""

from __future__ import annotations

import logging

import redis
from redis.cluster import RedisCluster

from .errors import ConfigError

log = logging.getLogger("consumer.redis")
# Only noeviction keeps every offset fence: an evicted fence lets a replayed range count twice.
SAFE_POLICY = "noeviction"


def eviction_policies(client: redis.Redis | RedisCluster) -> set[str]:
    """maxmemory-policy of the node, or of every master of a cluster; from CONFIG GET, or from INFO where
    CONFIG is disabled (managed Redis)."""
    def policies(reply: dict, field: str) -> set[str]:
        per_node = reply.values() if isinstance(client, RedisCluster) else [reply]
        return {str(node.get(field, "unknown")) for node in per_node}

    target = {"target_nodes": RedisCluster.PRIMARIES} if isinstance(client, RedisCluster) else {}
    try:
        return policies(client.config_get("maxmemory-policy", **target), "maxmemory-policy")
    except redis.ResponseError:
        return policies(client.info("memory", **target), "maxmemory_policy")


def refuse_evicting(client: redis.Redis | RedisCluster, allow: bool) -> None:
    """Refuse a Redis that may evict keys unless the user accepted the risk (--allow-evicting-redis)."""
    unsafe = sorted(eviction_policies(client) - {SAFE_POLICY})
    if not unsafe:
        return
    policy = ", ".join(unsafe)
    if not allow:
        raise ConfigError(f"Redis maxmemory-policy is {policy}: evicted offset fences would double-count replayed events; "
                          f"set it to {SAFE_POLICY} (CONFIG SET maxmemory-policy {SAFE_POLICY}) or pass --allow-evicting-redis")
    log.warning("redis may evict keys; counters can double-count after an eviction", extra={"maxmemory_policy": policy})
