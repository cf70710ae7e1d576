"""Redis URLs (C{redis://}, C{rediss://}, C{unix://}), parsed without importing txredisapi,
so that options can be checked before the reactor is installed."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import unquote, urlsplit

__all__ = ["RedisURL", "parse_redis_url"]


class RedisURL(NamedTuple):
    """Where Redis is: C{redis://[user[:password]@]host[:port][/db]}, C{rediss://} (TLS) or
    C{unix:///path/to/socket[?db=N]}."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool
    path: str | None = None
    #: With C{tls}: a PEM file of the certificate authority to trust instead of the system's.
    ca_file: str | None = None

    def __str__(self) -> str:
        """The address without the password, for logs and errors."""
        if self.path is not None:
            return f"unix://{self.path}"
        scheme = "rediss" if self.tls else "redis"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}/{self.db}"


def parse_redis_url(url: str, password: str | None = None) -> RedisURL:
    """Parse a Redis URL; C{password} (read from a file) overrides one in the URL.

    @raise ValueError: not a redis://, rediss:// or unix:// URL, or a bad port or db.
    """
    parts = urlsplit(url)
    db_text = ""
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"{url!r}: unix:// needs a socket path")
        for item in parts.query.split("&"):
            if item.startswith("db="):
                db_text = item[3:]
    elif parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ValueError(f"{url!r}: no host")
        db_text = parts.path.lstrip("/")
    else:
        raise ValueError(f"{url!r} is not a redis://, rediss:// or unix:// URL")
    try:
        port = 0 if parts.scheme == "unix" else (parts.port or 6379)
        db = int(db_text) if db_text else 0
    except ValueError as e:
        raise ValueError(f"{url!r}: {e}") from None
    if db < 0:
        raise ValueError(f"{url!r}: negative database number")
    username = unquote(parts.username) if parts.username else None
    if password is None and parts.password is not None:
        password = unquote(parts.password)
    return RedisURL(
        host=parts.hostname or "",
        port=port,
        db=db,
        username=username,
        password=password,
        tls=parts.scheme == "rediss",
        path=parts.path if parts.scheme == "unix" else None,
    )
