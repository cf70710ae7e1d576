"""Pomelo packages: the outermost framing (protocol.md §3).

A package is a 4-byte header (type, 24-bit big-endian body length) and a body. This module
encodes packages and decodes them from a byte stream fed in arbitrary chunks, with no I/O: the
TCP transport feeds it socket reads, the WebSocket transport feeds it whole messages.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from .errors import EncodeError, PackageError, PackageTooLarge

__all__ = [
    "HEADER_SIZE",
    "MAX_BODY",
    "Package",
    "PackageDecoder",
    "PackageType",
    "decode_packages",
    "encode_package",
]

HEADER_SIZE = 4
#: The largest body the 24-bit length field can describe.
MAX_BODY = 0xFFFFFF

_HEADER = struct.Struct(">I")


class PackageType(IntEnum):
    """The five package types; any other type byte is a protocol error."""

    HANDSHAKE = 1
    HANDSHAKE_ACK = 2
    HEARTBEAT = 3
    DATA = 4
    KICK = 5


_TYPES = {int(t): t for t in PackageType}


class Package(NamedTuple):
    """One decoded package: its type and its body (possibly empty)."""

    type: PackageType
    body: bytes


def encode_package(type: int, body: bytes = b"") -> bytes:
    """Frame C{body} as a package of C{type}.

    @raise EncodeError: the body is longer than the 24-bit length field allows; Pomelo would
        silently mask the length and corrupt the stream.
    """
    length = len(body)
    if length > MAX_BODY:
        raise EncodeError(f"package body of {length} bytes exceeds {MAX_BODY}")
    return _HEADER.pack((type << 24) | length) + body


class PackageDecoder:
    """Incremental decoder: feed it any chunks, get back the packages they complete.

    The declared length is checked against C{max_body} as soon as the header is complete, so a
    hostile header never makes the decoder buffer (or wait for) an oversized body. After an error
    the decoder is unusable; the connection is expected to close.

    @ivar max_body: the largest body accepted, in bytes.
    """

    __slots__ = ("_buffer", "_failed", "max_body")

    def __init__(self, max_body: int = MAX_BODY) -> None:
        self.max_body = max_body
        self._buffer = b""
        self._failed = False

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete package are held."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Package]:
        """Add C{data} to the stream and return every package completed, in order.

        @raise PackageError: an unknown type or a length over C{max_body}; the packages
            completed before it are in the error's C{packages}.
        """
        if self._failed:
            raise PackageError("decoder already failed")
        buf = self._buffer + data if self._buffer else data
        packages: list[Package] = []
        offset = 0
        end = len(buf)
        unpack = _HEADER.unpack_from
        max_body = self.max_body
        while end - offset >= HEADER_SIZE:
            (head,) = unpack(buf, offset)
            ptype = _TYPES.get(head >> 24)
            length = head & 0xFFFFFF
            if ptype is None or length > max_body:
                self._failed = True
                error = (
                    PackageError(f"unknown package type {head >> 24}")
                    if ptype is None
                    else PackageTooLarge(length, max_body)
                )
                error.packages = tuple(packages)
                raise error
            stop = offset + HEADER_SIZE + length
            if stop > end:
                break
            packages.append(Package(ptype, buf[offset + HEADER_SIZE : stop]))
            offset = stop
        self._buffer = buf[offset:] if offset else buf
        return packages


def decode_packages(data: bytes, max_body: int = MAX_BODY) -> list[Package]:
    """Decode a buffer that must hold whole packages only (a WebSocket message).

    @raise PackageError: a bad header, or a truncated package or trailing partial header.
    """
    decoder = PackageDecoder(max_body)
    packages = decoder.feed(data)
    if decoder.buffered:
        error = PackageError(f"{decoder.buffered} trailing bytes do not form a whole package")
        error.packages = tuple(packages)
        raise error
    return packages
