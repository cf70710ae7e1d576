"""Exceptions raised by the protocol codecs and the connector.

Every parser in this package raises a subclass of L{PomeloError} for bad input and nothing else,
so a transport can catch exactly one type, log it and close the connection.
"""

from __future__ import annotations

from typing import Any


class PomeloError(Exception):
    """Base class of every error this package raises on purpose."""


class ProtocolError(PomeloError):
    """The peer sent bytes that break the Pomelo wire protocol; the connection must close."""


class PackageError(ProtocolError):
    """A package header or body is malformed (unknown type, truncated, too long).

    @ivar packages: the complete packages that came before the error in the same input; they
        are still valid and are handled before the connection closes, as any other split of
        the stream would have delivered them.
    """

    packages: tuple[Any, ...] = ()


class PackageTooLarge(PackageError):
    """A package header announced a body longer than the configured maximum."""

    def __init__(self, length: int, maximum: int) -> None:
        super().__init__(f"package body of {length} bytes exceeds the maximum of {maximum}")
        self.length = length
        self.maximum = maximum


class MessageError(ProtocolError):
    """A DATA message is malformed (truncated id or route, bad varint, unknown type)."""


class ProtobufError(PomeloError):
    """A pomelo-protobuf definition, value or body cannot be encoded or decoded."""


class EncodeError(PomeloError):
    """A value cannot be put on the wire (route too long, body over 16 MiB, id out of range)."""
