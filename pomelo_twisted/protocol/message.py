"""Pomelo messages: the body of a DATA package (protocol.md §7).

Layout: a flag byte (bit 0: route compressed, bits 1-3: type, bit 4: Pomelo's unused gzip bit),
an id varint (requests and responses), a route (requests, notifies, pushes: a 2-byte dictionary
code or a length-prefixed UTF-8 string), then the body bytes. Bodies are left encoded here; the
codec module turns them into Python values.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import NamedTuple

from .errors import EncodeError, MessageError

__all__ = [
    "MAX_ID",
    "Message",
    "MessageType",
    "decode_message",
    "decode_varint",
    "encode_message",
    "encode_push",
    "encode_response",
    "encode_varint",
]

#: Ids are unsigned 32-bit: at most five varint bytes.
MAX_ID = 0xFFFFFFFF
_MAX_ID_BYTES = 5
_FLAG_COMPRESS_ROUTE = 0x01
_FLAG_GZIP = 0x10


class MessageType(IntEnum):
    """Message types; only REQUEST and NOTIFY are valid from a client."""

    REQUEST = 0
    NOTIFY = 1
    RESPONSE = 2
    PUSH = 3


_TYPES = {int(t): t for t in MessageType}
_HAS_ID = frozenset({MessageType.REQUEST, MessageType.RESPONSE})


class Message(NamedTuple):
    """A decoded message.

    C{route} is the route string, the dictionary code (an C{int}) when C{compress_route} is
    set (unless it was expanded on decoding), or C{None} for a response or an unknown code.
    C{id} is 0 for messages that carry none.
    """

    type: MessageType
    id: int
    route: str | int | None
    body: bytes
    compress_route: bool = False
    compress_gzip: bool = False


def encode_varint(value: int) -> bytes:
    """Base-128 varint, least significant group first (protobuf style)."""
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:  # ids of a long-lived connection: the common case after the first 127
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes, offset: int, max_bytes: int) -> tuple[int, int]:
    """Read a varint at C{offset}; return C{(value, next offset)}.

    @raise MessageError: truncated, or longer than C{max_bytes}.
    """
    value = 0
    shift = 0
    end = len(data)
    for i in range(offset, min(end, offset + max_bytes)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    if end - offset < max_bytes:
        raise MessageError("truncated varint")
    raise MessageError(f"varint longer than {max_bytes} bytes")


def _encode_route(route: str | int) -> tuple[int, bytes]:
    if isinstance(route, int):
        if not 0 < route <= 0xFFFF:
            raise EncodeError(f"route code {route} is outside 1..65535")
        return _FLAG_COMPRESS_ROUTE, route.to_bytes(2, "big")
    raw = route.encode("utf-8")
    if len(raw) > 255:
        raise EncodeError(f"route {route[:40]!r}... is {len(raw)} UTF-8 bytes; at most 255")
    return 0, bytes((len(raw),)) + raw


def encode_message(
    type: MessageType | int, id: int, route: str | int | None, body: bytes = b""
) -> bytes:
    """Encode any message. An C{int} route is a dictionary code (the compressed form).

    @raise EncodeError: an id outside 0..2**32-1, a route code outside 1..65535, a route over
        255 UTF-8 bytes, or a missing route where the type needs one.
    """
    mtype = _TYPES.get(int(type))
    if mtype is None:
        raise EncodeError(f"unknown message type {type}")
    flag = mtype << 1
    parts = []
    if mtype in _HAS_ID:
        if not 0 <= id <= MAX_ID:
            raise EncodeError(f"message id {id} is outside 0..{MAX_ID}")
        parts.append(encode_varint(id))
    if mtype is not MessageType.RESPONSE:
        if route is None:
            raise EncodeError(f"a {mtype.name} message needs a route")
        compress, raw = _encode_route(route)
        flag |= compress
        parts.append(raw)
    return bytes((flag,)) + b"".join(parts) + body


_RESPONSE_FLAG = bytes((MessageType.RESPONSE << 1,))


def encode_response(id: int, body: bytes) -> bytes:
    """The hot path of L{encode_message} for a RESPONSE.

    @raise EncodeError: an id outside 0..2**32-1.
    """
    if not 0 <= id <= MAX_ID:
        raise EncodeError(f"message id {id} is outside 0..{MAX_ID}")
    return _RESPONSE_FLAG + encode_varint(id) + body


def encode_push(route: str | int, body: bytes) -> bytes:
    """Encode a PUSH; an C{int} route is a dictionary code."""
    compress, raw = _encode_route(route)
    return bytes(((MessageType.PUSH << 1) | compress,)) + raw + body


def decode_message(data: bytes, routes: Mapping[int, str] | None = None) -> Message:
    """Decode a DATA body of any of the four types.

    @param routes: the dictionary's codes, for a server: a compressed route is then expanded
        to its string, or C{None} for an unknown code (C{compress_route} stays set).
    @raise MessageError: empty data, a type outside 0..3, or a truncated id or route.
    """
    if not data:
        raise MessageError("empty message")
    flag = data[0]
    mtype = _TYPES.get((flag >> 1) & 0x07)
    if mtype is None:
        raise MessageError(f"unknown message type {(flag >> 1) & 0x07}")
    end = len(data)
    offset = 1
    mid = 0
    if mtype is MessageType.REQUEST or mtype is MessageType.RESPONSE:
        # One- and two-byte ids (below 16384: most of a connection's life) inline.
        if end > 1 and data[1] < 0x80:
            mid = data[1]
            offset = 2
        elif end > 2 and data[2] < 0x80:
            mid = (data[1] & 0x7F) | (data[2] << 7)
            offset = 3
        else:
            mid, offset = decode_varint(data, 1, _MAX_ID_BYTES)
            if mid > MAX_ID:
                raise MessageError(f"message id {mid} exceeds {MAX_ID}")
    route: str | int | None = None
    if mtype is not MessageType.RESPONSE:
        if flag & _FLAG_COMPRESS_ROUTE:
            if end < offset + 2:
                raise MessageError("truncated route code")
            code = (data[offset] << 8) | data[offset + 1]
            route = code if routes is None else routes.get(code)
            offset += 2
        else:
            if end <= offset:
                raise MessageError("missing route length")
            length = data[offset]
            offset += 1
            if end < offset + length:
                raise MessageError("route runs past the end of the message")
            try:
                route = data[offset : offset + length].decode("utf-8")
            except UnicodeDecodeError as e:
                raise MessageError(f"route is not UTF-8: {e}") from None
            offset += length
    return Message(
        mtype, mid, route, data[offset:], bool(flag & _FLAG_COMPRESS_ROUTE), bool(flag & _FLAG_GZIP)
    )
