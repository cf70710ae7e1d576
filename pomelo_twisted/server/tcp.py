# -*- test-case-name: tests.server.test_transports,tests.server.test_write_now -*-
"""The raw TCP transport: a Pomelo package stream straight on the socket.

There is no framing here. The sans-IO decoder behind L{HybridSocket.dataReceived} reassembles
packages from any split of the stream, so this protocol only moves bytes and lifecycle events
between Twisted and the socket, and watches the transport's back-pressure for the slow-reader
cap (L{OutboundGuard}).
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any
from typing import Protocol as TypingProtocol

from twisted.internet import tcp
from twisted.internet.interfaces import IAddress, ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ..adapters.internals import Internals
from .interfaces import IPomeloTransport
from .limits import OutboundGuard, SlowReaderGuarded

if TYPE_CHECKING:
    from .connector import Connector
    from .socket import HybridSocket

__all__ = [
    "TCP_INTERNALS",
    "ClientEnd",
    "PomeloTCPFactory",
    "PomeloTCPProtocol",
    "pause_reading",
    "resume_reading",
    "write_now",
]

#: What L{write_now} reads of a C{tcp.Server} beyond its public interface.
TCP_INTERNALS = Internals(
    "direct send (write_now)",
    (
        "connected",
        "disconnecting",
        "_writeDisconnected",
        "_aborting",
        "_tempDataLen",
        "offset",
        "dataBuffer",
        "TLS",
        "socket",
        "writeSequence",
    ),
    "Twisted's writeSequence",
)


def write_now(transport: ITransport, chunks: list[bytes]) -> None:
    """Write C{chunks} in order, sending them at once when the transport has nothing queued.

    C{transport.write} on an idle Twisted TCP socket only queues the bytes and registers the
    socket for writability; they leave on the next reactor iteration, which then unregisters
    it: two C{epoll_ctl} calls and a second dispatch per write, more than the rest of a small
    request costs. The connector already gathers each turn's writes, so it tries one
    C{sendmsg} of all the chunks itself, as libuv does, without joining them. Whatever the
    kernel does not take (a full socket buffer), and every write to a transport that still
    holds queued bytes, takes Twisted's own path (C{writeSequence}, which keeps the very bytes
    objects: a broadcast package stays shared between connections), so ordering, buffering and
    producer signals stay Twisted's. Other transports (TLS, UNIX, in-memory) always take
    Twisted's path, and so does every transport when L{TCP_INTERNALS} found a name missing.
    """
    if (
        type(transport) is tcp.Server
        and (TCP_INTERNALS.ok or TCP_INTERNALS.check(transport))
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._aborting
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
        and not transport.TLS
    ):
        try:
            sent = transport.socket.sendmsg(chunks)
        except OSError:
            # Would block, or a reset: Twisted's own write path copes (and notices a reset).
            sent = 0
        if sent:
            for i, chunk in enumerate(chunks):
                if sent < len(chunk):
                    chunks = [chunk[sent:], *chunks[i + 1 :]]
                    break
                sent -= len(chunk)
            else:
                return
    transport.writeSequence(chunks)


def pause_reading(transport: Any) -> None:
    """Stop reading C{transport} (a TCP or TLS transport: its C{pauseProducing}), if open."""
    if transport is not None and not transport.disconnecting:
        transport.pauseProducing()


def resume_reading(transport: Any) -> None:
    """Read C{transport} again, unless it is closing (then it reads no more anyway)."""
    if transport is not None and not transport.disconnecting:
        transport.resumeProducing()


class _Connected(TypingProtocol):
    transport: Any
    clientAddress: IAddress | None


class ClientEnd:
    """What both transports (TCP and WebSocket) do the same on their TCP (or TLS) connection:
    pause and resume reading it (shedding), and name the client (the address a trusted proxy
    reported, else the peer)."""

    clientAddress: IAddress | None = None

    def pauseReading(self: _Connected) -> None:
        """Stop reading the connection (the connection is shed: over its request rate)."""
        pause_reading(self.transport)

    def resumeReading(self: _Connected) -> None:
        """Read the connection again."""
        resume_reading(self.transport)

    def getPeer(self: _Connected) -> IAddress:
        address = self.clientAddress
        if address is not None:
            return address
        peer: IAddress = self.transport.getPeer()
        return peer


@implementer(IPomeloTransport)
class PomeloTCPProtocol(ClientEnd, Protocol, SlowReaderGuarded):
    """A raw TCP Pomelo client: every read goes to the socket's stream decoder.

    @ivar socket: the connection's L{HybridSocket}, from C{connectionMade} on.
    @ivar guard: the slow-reader cap on the transport, or C{None} without C{max_outbound_buffer}.
    @ivar clientAddress: the client's address given to the factory's C{buildProtocol} (behind
        a proxy, the one its PROXY header named), or C{None}: the transport's peer.
    """

    name = "tcp"
    socket: HybridSocket | None = None
    guard: OutboundGuard | None = None
    clientAddress: IAddress | None = None

    def __init__(self, connector: Connector) -> None:
        self.connector = connector

    def connectionMade(self) -> None:
        # Pomelo's setNoDelay: packages are small and latency-bound, so Nagle only delays them.
        # Not every transport is a TCP socket (UNIX sockets, in-memory transports).
        setTcpNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setTcpNoDelay is not None:
            with suppress(OSError, NotImplementedError):
                setTcpNoDelay(True)
        self._guardOutbound(self.connector.config.max_outbound_buffer)
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
        write_now(self.transport, [data])  # type: ignore[arg-type]
        guard = self.guard
        if guard is not None:
            guard.wrote(len(data))

    def writePackageSequence(self, packages: list[bytes]) -> None:
        """Write several packages of one turn as one write, without joining them."""
        write_now(self.transport, packages)  # type: ignore[arg-type]
        guard = self.guard
        if guard is not None:
            guard.wrote(sum(map(len, packages)))

    def loseConnection(self) -> None:
        # A transport does not close while a paused producer is registered (and a TLS one not
        # while any is): nothing more is written after this, so stop watching first.
        guard, self.guard = self.guard, None
        if guard is not None:
            guard.detach()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def abortConnection(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]


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
        p.clientAddress = addr
        return p
