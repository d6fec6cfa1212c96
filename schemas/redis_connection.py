"""How every command reaches Redis: the same flags and variables, one node or a Redis Cluster,
logged without secrets.

The consumer writes counters, alert state and the group's model rollout state; the
trainer reads and writes the rollout state. Both connect through here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

_SECRET_PARAMS = ("password", "secret", "token", "key")
# What a Redis read or write may raise: redis-py raises RedisClusterException (not a RedisError)
# when no cluster node answers, e.g. in a failover.
REDIS_ERRORS = (redis.RedisError, RedisClusterException)


class RedisSettingsError(ValueError):
    """A Redis URL that can't be used, or a Redis that can't be reached at start-up; one line."""


@dataclass
class RedisConnection:
    redis_url: str = field(default="redis://127.0.0.1:6379/0", metadata={"help": "Redis URL; redis://user:pass@host:port/db, rediss:// for TLS; with --redis-cluster, any one node of the cluster (db 0)"})
    redis_cluster: bool = field(default=False, metadata={"help": "the URL names a node of a Redis Cluster: discover the others and send each key to its slot's master"})
    redis_prefix: str = field(default="sentiment", metadata={"help": "prefix of every Redis key this system writes"})


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
        raise RedisSettingsError(f"bad Redis URL {redacted_url(url)}: {exc}") from None
    except redis.RedisError as exc:  # RedisCluster reads the slot map at construction
        raise RedisSettingsError(f"cannot reach the Redis Cluster at {redacted_url(url)}: {exc}") from None
    if check:
        try:
            client.ping()
        except redis.RedisError as exc:
            raise RedisSettingsError(f"cannot reach Redis at {redacted_url(url)}: {exc}") from None
    return client
