"""Redis connections from a URL (auth and TLS via redis:// / rediss://), logged without secrets."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from .errors import ConfigError

log = logging.getLogger("consumer.redis")
_SECRET_PARAMS = ("password", "secret", "token", "key")
# Only noeviction keeps every offset fence: an evicted fence lets a replayed range count twice.
SAFE_POLICY = "noeviction"


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


def connect(url: str, check: bool = True) -> redis.Redis:
    """A client for `url` (db number honoured); with `check`, PING first for a clear start-up error."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {redacted_url(url)}: {exc}") from None
    if check:
        try:
            client.ping()
        except redis.RedisError as exc:
            raise ConfigError(f"cannot reach Redis at {redacted_url(url)}: {exc}") from None
    return client


def eviction_policy(client: redis.Redis) -> str:
    """maxmemory-policy from CONFIG GET, or from INFO where CONFIG is disabled (managed Redis)."""
    try:
        return str(client.config_get("maxmemory-policy").get("maxmemory-policy", "unknown"))
    except redis.ResponseError:
        return str(client.info("memory").get("maxmemory_policy", "unknown"))


def refuse_evicting(client: redis.Redis, allow: bool) -> None:
    """Refuse a Redis that may evict keys unless the user accepted the risk (--allow-evicting-redis)."""
    policy = eviction_policy(client)
    if policy == SAFE_POLICY:
        return
    if not allow:
        raise ConfigError(f"Redis maxmemory-policy is {policy}: evicted offset fences would double-count replayed events; "
                          f"set it to {SAFE_POLICY} (CONFIG SET maxmemory-policy {SAFE_POLICY}) or pass --allow-evicting-redis")
    log.warning("redis may evict keys; counters can double-count after an eviction", extra={"maxmemory_policy": policy})
