"""The per-connection protocol state machine (protocol.md §4), sans-IO.

A L{PomeloConnection} takes bytes (a TCP stream, or whole WebSocket messages) and returns the
packages they hold; L{PomeloConnection.accept} then says, package by package and in order,
whether the current state takes it (a package a state ignores is dropped). Outbound, it
turns sends into package bytes, or C{None} where the state forbids the send. It knows nothing of
sockets, reactors or clocks.

States::

    INITED --handshake ok--> WAIT_ACK --ack--> WORKING
       \\________________________\\______________\\____ close ___> CLOSED
"""

from __future__ import annotations

from enum import Enum

from . import json_codec
from .errors import PackageError, PackageTooLarge, ProtocolError
from .package import Package, PackageDecoder, PackageType, decode_packages, encode_package

__all__ = ["HEARTBEAT_PACKAGE", "ConnectionState", "PomeloConnection"]

HEARTBEAT_PACKAGE = encode_package(PackageType.HEARTBEAT)


class ConnectionState(Enum):
    """The four states of Pomelo's hybrid socket."""

    # The state table is looked up on every package; members are compared by identity, so
    # object's hash (in C) serves instead of Enum's (a Python function).
    __hash__ = object.__hash__

    #: Connected; waiting for the handshake.
    INITED = 0
    #: Handshake answered with 200; waiting for the ACK.
    WAIT_ACK = 1
    #: ACK received; data, heartbeats and kicks flow.
    WORKING = 2
    #: Closed locally or by the peer; nothing flows any more.
    CLOSED = 3


_S = ConnectionState
_P = PackageType

#: Which inbound package types each state passes on; the rest are ignored (§4's table).
_ACCEPTS: dict[ConnectionState, frozenset[PackageType]] = {
    _S.INITED: frozenset({_P.HANDSHAKE}),
    _S.WAIT_ACK: frozenset({_P.HANDSHAKE_ACK}),
    _S.WORKING: frozenset({_P.HEARTBEAT, _P.DATA}),
    _S.CLOSED: frozenset(),
}


class PomeloConnection:
    """One connection's state, inbound framing and outbound package building.

    @ivar state: the current L{ConnectionState}.
    @ivar handshaking: a handshake is being answered (possibly by an asynchronous hook), so
        further handshakes are ignored even though the state is still C{INITED}.
    """

    __slots__ = ("_decoder", "handshaking", "max_handshake_size", "state")

    def __init__(self, max_package_size: int, max_handshake_size: int | None = None) -> None:
        self._decoder = PackageDecoder(max_package_size)
        self.max_handshake_size = min(max_handshake_size or max_package_size, max_package_size)
        self.state = ConnectionState.INITED
        self.handshaking = False

    # Inbound

    def receive_data(self, data: bytes) -> list[Package]:
        """Feed stream bytes (raw TCP); return the packages they complete, in order.

        Each package must then go through L{accept} just before it is handled, so that a
        package is judged by the state that the packages before it left (an ACK and a request
        arriving in one chunk: the request is judged in C{WORKING}).

        @raise ProtocolError: a bad header or an oversized package.
        """
        return self._decoder.feed(data)

    def receive_message(self, data: bytes) -> list[Package]:
        """Feed one whole WebSocket message: one or more complete packages and nothing else.

        @raise ProtocolError: as L{receive_data}, or a truncated package.
        """
        return decode_packages(data, self._decoder.max_body)

    def accept(self, package: Package) -> bool:
        """Whether the current state takes C{package} (§4's table); call it per package.

        @raise ProtocolError: a KICK from the client, or an oversized handshake.
        """
        ptype = package.type
        if ptype is PackageType.KICK:
            raise ProtocolError("clients may not send KICK packages")
        if ptype is PackageType.HANDSHAKE and len(package.body) > self.max_handshake_size:
            raise PackageTooLarge(len(package.body), self.max_handshake_size)
        if ptype not in _ACCEPTS[self.state]:
            return False
        if ptype is PackageType.HANDSHAKE:
            if self.handshaking:
                return False
            self.handshaking = True
        return True

    # Transitions and outbound

    def handshake_response(self, response: dict[str, object]) -> bytes | None:
        """Encode a successful handshake answer and move to C{WAIT_ACK}; C{None} if too late."""
        if self.state is not ConnectionState.INITED:
            return None
        # Encode first: an answer that cannot be encoded must leave the state unchanged.
        data = encode_package(PackageType.HANDSHAKE, json_codec.dumps(response))
        self.state = ConnectionState.WAIT_ACK
        self.handshaking = False
        return data

    def handshake_error(self, code: int) -> bytes | None:
        """Encode a handshake error answer (C{{"code": code}}); the caller then closes."""
        if self.state is ConnectionState.CLOSED:
            return None
        return encode_package(PackageType.HANDSHAKE, json_codec.dumps({"code": code}))

    def ack(self) -> None:
        """The client acknowledged the handshake: C{WAIT_ACK} -> C{WORKING}."""
        if self.state is not ConnectionState.WAIT_ACK:
            raise PackageError(f"ACK in state {self.state.name}")
        self.state = ConnectionState.WORKING

    @property
    def working(self) -> bool:
        """Whether heartbeats, data and kicks may be sent."""
        return self.state is ConnectionState.WORKING

    def heartbeat(self) -> bytes | None:
        """The heartbeat package, or C{None} outside C{WORKING}."""
        return HEARTBEAT_PACKAGE if self.state is ConnectionState.WORKING else None

    def kick(self, reason: str) -> bytes | None:
        """The KICK package for C{reason}, or C{None} outside C{WORKING}."""
        if self.state is not ConnectionState.WORKING:
            return None
        return encode_package(PackageType.KICK, json_codec.dumps({"reason": reason}))

    def close(self) -> bool:
        """Move to C{CLOSED}; return whether this call closed it (the first one does)."""
        if self.state is ConnectionState.CLOSED:
            return False
        self.state = ConnectionState.CLOSED
        return True
