"""The one place JSON is encoded and decoded.

orjson is used because it is an order of magnitude faster than the standard library on
Pomelo-sized bodies (see the commit that introduced it), and its output matches what Pomelo's
C{JSON.stringify} writes for the common cases: compact, keys in insertion order, non-ASCII
characters unescaped.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["JSONDecodeError", "dumps", "loads"]

JSONDecodeError = orjson.JSONDecodeError

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    """Encode C{value} as compact UTF-8 JSON (non-string keys, e.g. dictionary codes, allowed)."""
    return orjson.dumps(value, option=_OPTIONS)


def loads(data: bytes | str) -> Any:
    """Decode UTF-8 JSON; raises L{JSONDecodeError} (a C{ValueError}) on bad input."""
    return orjson.loads(data)
