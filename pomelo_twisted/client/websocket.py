# -*- test-case-name: tests.client -*-
"""The WebSocket transport of L{pomelo_twisted.client.PomeloClient}, on Autobahn.

Each package leaves as its own binary message (Pomelo 2.2.7 drops a connection whose message
holds two packages); an inbound message may hold several packages, as the server's buffered
push scheduler sends them. Autobahn does the RFC 6455 work. Use it through
C{PomeloClient.connect("ws://host:port/")}, or C{connect(endpoint, transport="ws", url=...)}.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.python.failure import Failure

from ..adapters.autobahn import ExactTimersMixin, use_exact_timers
from ..protocol.errors import ProtocolError
from .link import LinkOwner, _Link

__all__ = ["PomeloClientWebSocketProtocol", "make_client_websocket_factory"]

_STATE_OPEN = WebSocketProtocol.STATE_OPEN
_STATE_CONNECTING = WebSocketProtocol.STATE_CONNECTING
_CLOSE_NORMAL = WebSocketProtocol.CLOSE_STATUS_CODE_NORMAL


class PomeloClientWebSocketProtocol(ExactTimersMixin, WebSocketClientProtocol):  # type: ignore[misc]
    """One WebSocket connection of a L{PomeloClient}: binary messages of whole packages.

    The link to the client is made with the TCP connection and opened (the Pomelo handshake
    sent) once the WebSocket is open; a close before that is a failed connection attempt.
    """

    factory: PomeloClientWebSocketFactory
    _link: _Link | None = None
    _opened = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._link = self.factory.client._linkMade(self)

    def onOpen(self) -> None:
        self._opened = True
        link = self._link
        if link is not None:
            link.open()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        link = self._link
        if link is None:
            return
        if isBinary:
            link.messageReceived(payload)
        else:
            link.protocolError(ProtocolError("the server sent a text WebSocket message"))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        if not self._opened:
            error = ConnectError(string=f"WebSocket opening handshake failed: {reason}")
            self.factory.client._openFailed(self, Failure(error))
            return
        if wasClean:
            failure = Failure(ConnectionDone(f"WebSocket closed ({code})"))
        else:
            failure = Failure(ConnectionLost(reason or "WebSocket connection lost"))
        link.connectionLost(failure)

    # What the link calls

    def writePackages(self, packages: list[bytes]) -> None:
        if self.state == _STATE_OPEN:
            for package in packages:
                self.sendMessage(package, isBinary=True)

    def loseConnection(self) -> None:
        if self.state == _STATE_OPEN:
            self.sendClose(code=_CLOSE_NORMAL)
        elif self.state == _STATE_CONNECTING:
            self.dropConnection(abort=True)

    def abortConnection(self) -> None:
        self.dropConnection(abort=True)


class PomeloClientWebSocketFactory(WebSocketClientFactory):
    """Builds the WebSocket protocols of one L{PomeloClient}."""

    protocol = PomeloClientWebSocketProtocol  # type: ignore[assignment]

    def __init__(self, client: LinkOwner, url: str, **kwargs: Any) -> None:
        # reactor= always: without it Autobahn imports (and so may install) the global reactor.
        super().__init__(url, reactor=client.reactor, **kwargs)
        self.client = client


def make_client_websocket_factory(client: LinkOwner, url: str) -> PomeloClientWebSocketFactory:
    """An Autobahn client factory for C{client}, set up for small binary game messages: no
    automatic pings (Pomelo heartbeats give liveness), no compression, no Nagle delay, and
    the opening handshake bounded by the client's handshake timeout.

    Autobahn's handshake deadlines run exactly, on the client's reactor
    (L{pomelo_twisted.adapters.autobahn.ReactorTimer}); its deadline for the server to drop the
    connection after the closing handshake runs on C{txaio.config.loop}.
    """
    factory = PomeloClientWebSocketFactory(client, url)
    factory.setProtocolOptions(
        autoPingInterval=0,
        tcpNoDelay=True,
        openHandshakeTimeout=client.handshake_timeout or 0,
        perMessageCompressionOffers=[],
    )
    use_exact_timers(factory)
    return factory
