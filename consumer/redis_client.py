"""Redis connections from a URL (auth and TLS via redis:// / rediss://), logged without secrets."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis

from .errors import ConfigError


def redacted_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.hostname or ""
    netloc = f"{user}***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


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
