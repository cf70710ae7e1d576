# -*- test-case-name: tests.test_transports,tests.test_end_to_end -*-
"""The raw TCP transport: a Pomelo package stream straight on the socket.

There is no framing here. The sans-IO decoder behind L{HybridSocket.dataReceived} reassembles
packages from any split of the stream, so this protocol only moves bytes and lifecycle events
between Twisted and the socket.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from .interfaces import IPomeloTransport

if TYPE_CHECKING:
    from .connector import Connector
    from .socket import HybridSocket

__all__ = ["PomeloTCPFactory", "PomeloTCPProtocol"]


@implementer(IPomeloTransport)
class PomeloTCPProtocol(Protocol):
    """A raw TCP Pomelo client: every read goes to the socket's stream decoder.

    @ivar socket: the connection's L{HybridSocket}, from C{connectionMade} on.
    """

    name = "tcp"
    socket: HybridSocket | None = None

    def __init__(self, connector: Connector) -> None:
        self.connector = connector

    def connectionMade(self) -> None:
        # Pomelo's setNoDelay: packages are small and latency-bound, so Nagle only delays them.
        # Not every transport is a TCP socket (UNIX sockets, in-memory transports).
        setTcpNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setTcpNoDelay is not None:
            with suppress(OSError, NotImplementedError):
                setTcpNoDelay(True)
        self.socket = self.connector.build_socket(self)

    def dataReceived(self, data: bytes) -> None:
        socket = self.socket
        if socket is not None:
            socket.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        socket, self.socket = self.socket, None
        if socket is not None:
            socket.connectionLost(reason)

    # IPomeloTransport

    def writePackages(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def loseConnection(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def abortConnection(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]

    def getPeer(self) -> IAddress:
        return self.transport.getPeer()  # type: ignore[union-attr]


class PomeloTCPFactory(Factory["PomeloTCPProtocol"]):
    """Builds L{PomeloTCPProtocol}s for one connector.

    It is never bound to a port itself: the hybrid sniffer asks it for a protocol once a
    connection's first byte says "Pomelo package".
    """

    protocol = PomeloTCPProtocol

    def __init__(self, connector: Connector) -> None:
        self.connector = connector

    def buildProtocol(self, addr: Any) -> PomeloTCPProtocol:
        p = PomeloTCPProtocol(self.connector)
        p.factory = self
        return p
