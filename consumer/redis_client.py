"""Redis connections from a URL (auth and TLS via redis:// / rediss://), one node or a Redis Cluster,
logged without secrets."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from .errors import ConfigError

log = logging.getLogger("consumer.redis")
_SECRET_PARAMS = ("password", "secret", "token", "key")
# Only noeviction keeps every offset fence: an evicted fence lets a replayed range count twice.
SAFE_POLICY = "noeviction"
# What a Redis read or write may raise: redis-py raises RedisClusterException (not a RedisError)
# when no cluster node answers, e.g. in a failover.
REDIS_ERRORS = (redis.RedisError, RedisClusterException)


def redacted_url(url: str) -> str:
    """The URL with its password (userinfo or ?password=) and other secret parameters masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = f"{parts.username}:" if parts.username else ":"
        netloc = f"{user}***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if any(s in k.lower() for s in _SECRET_PARAMS) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def connect(url: str, cluster: bool = False, check: bool = True) -> redis.Redis | RedisCluster:
    """A client for `url`: one node (db number honoured), or with `cluster` a RedisCluster that
    discovers every node from this one. With `check`, PING first for a clear start-up error."""
    options = {"socket_timeout": 5, "socket_connect_timeout": 5}
    try:
        if cluster:
            if urlsplit(url).path.strip("/") not in ("", "0"):
                raise ValueError("a Redis Cluster has only db 0")
            client = RedisCluster.from_url(url, **options)
        else:
            client = redis.Redis.from_url(url, health_check_interval=30, **options)
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {redacted_url(url)}: {exc}") from None
    except redis.RedisError as exc:  # RedisCluster reads the slot map at construction
        raise ConfigError(f"cannot reach the Redis Cluster at {redacted_url(url)}: {exc}") from None
    if check:
        try:
            client.ping()
        except redis.RedisError as exc:
            raise ConfigError(f"cannot reach Redis at {redacted_url(url)}: {exc}") from None
    return client


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
