# -*- test-case-name: tests.ops.test_endpoints -*-
"""Endpoint descriptions (``tcp:3010:interface=127.0.0.1``) as the operator writes them."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["DEFAULT_BACKLOG", "split_endpoint", "with_backlog"]

#: The listen backlog given to an endpoint that names none: Node's (and so Pomelo's) default.
#: Twisted's own, 50, drops connections when thousands of clients reconnect at once.
DEFAULT_BACKLOG: Final = 511

#: Endpoint types that take a C{backlog=} argument.
_BACKLOG_TYPES: Final = frozenset({"tcp", "tcp6", "ssl", "unix", "reuseport"})

_UNESCAPED_COLON = re.compile(r"(?<!\\):")


def split_endpoint(description: str) -> tuple[str, list[str], dict[str, str]]:
    """The type, positional arguments and keyword arguments of an endpoint description.

    Colons escaped with a backslash stay in their argument (as Twisted reads them); the
    arguments are returned as written, escapes included.
    """
    kind, *parts = _UNESCAPED_COLON.split(description)
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in parts:
        name, sep, value = part.partition("=")
        if sep and "\\" not in name:
            kwargs[name] = value
        else:
            args.append(part)
    return kind, args, kwargs


def with_backlog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """C{description} with C{backlog=} added when its type takes one and it names none."""
    kind, _, kwargs = split_endpoint(description)
    if kind in _BACKLOG_TYPES and "backlog" not in kwargs:
        return f"{description}:backlog={backlog}"
    return description
