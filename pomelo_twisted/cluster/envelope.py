"""What nodes publish to each other: C{b"PT1" | kind | header length (u32) | header | payload}.

The header is a small JSON object (sender, ids, uids, reason...); the payload, for pushes and
broadcasts, is the exact Pomelo DATA package the sender encoded once, handed as-is to every
receiving connection. Sans-IO: no Twisted here. The PUSH script (scripts.py) builds push
envelopes in Lua too: a change of this layout changes both.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import orjson

__all__ = ["KINDS", "Envelope", "EnvelopeError", "decode_envelope", "encode_envelope"]

MAGIC = b"PT1"
_LENGTH = struct.Struct(">I")
#: P push to uids, B broadcast, K kick a uid, S kick a session, A acknowledgement,
#: H a probe a node sends to its own inbox to prove its subscriber still receives.
KINDS = frozenset(b"PBKSAH")


class EnvelopeError(ValueError):
    """A message on a cluster channel that is not an envelope of this version."""


class Envelope(NamedTuple):
    kind: str
    header: dict[str, Any]
    payload: bytes


def encode_envelope(kind: str, header: dict[str, Any], payload: bytes = b"") -> bytes:
    code = ord(kind)
    if code not in KINDS:
        raise ValueError(f"unknown envelope kind {kind!r}")
    head = orjson.dumps(header)
    return b"".join((MAGIC, bytes((code,)), _LENGTH.pack(len(head)), head, payload))


def decode_envelope(data: bytes) -> Envelope:
    """Parse an envelope.

    @raise EnvelopeError: wrong magic, unknown kind, truncated or non-object header.
    """
    if len(data) < 8 or data[:3] != MAGIC:
        raise EnvelopeError("not a PT1 envelope")
    code = data[3]
    if code not in KINDS:
        raise EnvelopeError(f"unknown envelope kind {code}")
    (length,) = _LENGTH.unpack_from(data, 4)
    end = 8 + length
    if end > len(data):
        raise EnvelopeError("truncated envelope header")
    try:
        header = orjson.loads(data[8:end])
    except orjson.JSONDecodeError as e:
        raise EnvelopeError(f"bad envelope header: {e}") from None
    if not isinstance(header, dict):
        raise EnvelopeError("envelope header is not an object")
    return Envelope(chr(code), header, data[end:])
