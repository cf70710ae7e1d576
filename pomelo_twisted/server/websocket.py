# -*- test-case-name: tests.server.test_transports,tests.server.test_websocket -*-
"""The WebSocket transport: one binary WebSocket message carries one or more whole packages.

Autobahn does the RFC 6455 work (upgrade, masking, fragments, pings, close handshake); this
module only maps messages to L{HybridSocket.messageReceived} and sends to binary messages, and
configures the Autobahn factory the way a game connector needs (protocol.md §2.5, §3.5).

Control frames are Autobahn's, with two limits of ours: every ping and pong a client sends
spends a token of a control-frame bucket (the request rate and burst; a client over it is
aborted: no client needs pings at that rate), and every pong answered counts against the
slow-reader cap like any other write, so a client that pings and never reads is cut off.

Outbound messages are framed once per payload: a broadcast package (one bytes object for every
session, see
L{SessionService.broadcast<pomelo_twisted.services.session.SessionService.broadcast>}) is framed
for the first WebSocket connection and the same frame bytes go to the others.

Behind an HTTP proxy in C{trusted_proxies}, the client is the one the C{forwarded_header}
names (L{forwarded_client}); the connector counts the connection under it from then on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..adapters.autobahn import ExactTimersMixin, use_exact_timers
from ..adapters.internals import Internals
from .interfaces import IPomeloTransport
from .limits import OutboundGuard, SlowReaderGuarded, TokenBucket
from .proxy import ForwardedError, forwarded_client
from .tcp import ClientEnd, write_now

if TYPE_CHECKING:
    from .connector import Connector
    from .socket import HybridSocket

__all__ = [
    "WS_INTERNALS",
    "PomeloWebSocketFactory",
    "PomeloWebSocketProtocol",
    "make_websocket_factory",
]

#: The C{Server} header of handshake answers: the product, not its version (no free recon).
SERVER_NAME = "pomelo-twisted"

# Autobahn protocols have a txaio C{log} attribute of their own; keep ours apart.
_log = Logger()


class _AutobahnLog:
    """Autobahn's logger, with its warning on dropping a connection lowered to debug.

    Autobahn warns ("dropping connection to peer ... with abort=True") whenever a connection
    is dropped without a closing handshake, which is every abort the connector decides on:
    an ordinary heartbeat timeout included. The connector's own close line says why each
    connection closed; whatever is abnormal was warned about before it.
    """

    def __init__(self, log: Any) -> None:
        self._log = log

    def warn(self, format: str, **fields: Any) -> None:
        if format.startswith("dropping connection to peer"):
            self._log.debug(format, **fields)
        else:
            self._log.warn(format, **fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


_CLOSE_NORMAL = WebSocketProtocol.CLOSE_STATUS_CODE_NORMAL
_CLOSE_UNSUPPORTED_DATA = WebSocketProtocol.CLOSE_STATUS_CODE_UNSUPPORTED_DATA
_STATE_OPEN = WebSocketProtocol.STATE_OPEN
_NO_LIMIT = 0xFFFF  # the largest length the fast path reads (a 16-bit extended length)
#: The HTTP answer to a client the connector refuses once a forwarded header has named it.
_REFUSAL_ANSWERS = {"blocklist": 403, "max_connections_per_ip": 429}

#: What the frame reader and the direct frame writer read of Autobahn's protocol state.
WS_INTERNALS = Internals(
    "WebSocket fast path",
    ("state", "current_frame", "inside_message", "data", "send_queue", "_dataReceived"),
    "Autobahn's own frame parser and sendMessage",
)


@implementer(IPomeloTransport)
class PomeloWebSocketProtocol(  # type: ignore[misc]
    ClientEnd, ExactTimersMixin, WebSocketServerProtocol, SlowReaderGuarded
):
    """A WebSocket Pomelo client.

    Text messages: no Pomelo client sends them (every client sends binary messages, and package
    headers are rarely valid UTF-8), so a text message is answered with close code 1003
    (unsupported data) instead of being decoded as package bytes as upstream does. Packages
    queued before it still leave first.

    Outbound messages bypass Autobahn's C{maxMessagePayloadSize} (which is the I{inbound} cap,
    one maximum package): a handshake answer with large protos, or a big response or push, can
    be bigger than any client message.

    @ivar socket: the connection's L{HybridSocket}, from C{onOpen} until C{onClose}.
    @ivar guard: the slow-reader cap on the transport, or C{None} (no C{max_outbound_buffer},
        or a transport that already has a producer: a twisted.web channel).
    @ivar clientAddress: the client's address when it is not the transport's peer: given to
        the factory's C{buildProtocol} (what a PROXY header named), or what a trusted proxy's
        forwarded header named; C{None} otherwise.
    @ivar admission: what the connector counts this connection under (set by the hybrid
        sniffer), to count it under the client a forwarded header names; C{None}: not counted.
    """

    name = "ws"
    socket: HybridSocket | None = None
    factory: PomeloWebSocketFactory
    guard: OutboundGuard | None = None
    clientAddress: IAddress | None = None
    admission: object | None = None

    #: Autobahn copies it from the factory's options on connection (0: no limit).
    maxMessagePayloadSize: int

    log = _AutobahnLog(WebSocketServerProtocol.log)

    #: The bucket pings and pongs from the client spend, made at the first one.
    _control: TokenBucket | None = None

    #: The close frame L{loseConnection} sends.
    _closeCode: int = _CLOSE_NORMAL
    _closeReason: bytes | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        address = self.clientAddress
        if isinstance(address, IPv4Address | IPv6Address):
            self.peer = _describe(address)  # Autobahn's peer text, in its own logs
        self._guardOutbound(self.factory.connector.config.max_outbound_buffer)

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's own dataReceived formats the arguments of a debug log call on every read
        # (about a tenth of a small request's cost) before handing over to _dataReceived.
        self._dataReceived(data)

    def _dataReceived(self, data: bytes) -> None:
        """Read the common frame, a whole masked binary message, without Autobahn's machinery.

        Autobahn parses every frame through a general state machine (fragments, extensions,
        control frames, statistics), which costs more than the rest of a small request. Once the
        connection is open and no frame is part-read, complete frames that are final, binary,
        masked, without RSV bits and within the size cap are unmasked here and handed to the
        socket; the first frame of any other kind (ping, close, text, a fragment, a part-read or
        oversized frame), and everything after it, goes to Autobahn as usual.
        """
        if (
            self.state == _STATE_OPEN
            and (WS_INTERNALS.ok or WS_INTERNALS.check(self))
            and self.current_frame is None
            and not self.inside_message
            and not self.data
        ):
            data = self._readSimpleFrames(data)
            if not data:
                return
        super()._dataReceived(data)

    def _readSimpleFrames(self, data: bytes) -> bytes:
        """Deliver the leading simple binary frames of C{data}; return the rest."""
        limit = self.maxMessagePayloadSize or _NO_LIMIT
        end = len(data)
        offset = 0
        while end - offset >= 6 and data[offset] == 0x82:
            size = data[offset + 1] ^ 0x80  # the mask bit must be set: a client frame
            start = offset + 6
            if size == 126:
                start += 2
                if end < start:
                    break
                size = (data[offset + 2] << 8) | data[offset + 3]
                if size < 126:  # not the minimal encoding: Autobahn refuses it (1002)
                    break
            elif size > 126:  # unmasked, or a 64-bit length: Autobahn's case
                break
            if size > limit or end - start < size:
                break
            mask = data[start - 4 : start]
            payload = data[start : start + size]
            if size:
                key = int.from_bytes(mask * ((size + 3) >> 2), "little") & ((1 << (size << 3)) - 1)
                payload = (int.from_bytes(payload, "little") ^ key).to_bytes(size, "little")
            offset = start + size
            socket = self.socket
            if socket is None:
                break
            socket.messageReceived(payload)
            if self.state != _STATE_OPEN:
                return b""  # the message closed the connection: nothing more is read
        return data[offset:] if offset else data

    def _onPing(self, payload: bytes) -> None:
        if self._controlFrame("ping"):
            super()._onPing(payload)  # onPing answers it with sendPong

    def _onPong(self, payload: bytes) -> None:
        if self._controlFrame("pong"):
            super()._onPong(payload)

    def _controlFrame(self, kind: str) -> bool:
        """Spend a control-frame token; abort the connection if there is none (a flood).

        Return whether the frame may be handled.
        """
        config = self.factory.connector.config
        rate = config.max_requests_per_second
        if not rate:
            return True
        now = self.factory.connector.reactor.seconds()
        bucket = self._control
        if bucket is None:
            bucket = self._control = TokenBucket(rate, config.request_burst, now)
        if bucket.take(now):
            return True
        _log.warn(
            "aborting {peer}: WebSocket control frames ({kind}) over max_requests_per_second "
            "{rate} (request_burst {burst})",
            peer=self.getPeer(),
            kind=kind,
            rate=rate,
            burst=config.request_burst,
        )
        socket = self.socket
        if socket is not None:
            # What this turn answered before the flood leaves first, as it would have had the
            # frames come in separate reads: how the bytes were read changes nothing.
            socket.flush()
            socket.abort(f"rate limit: WebSocket {kind} flood")
        else:
            self.abortConnection()
        return False

    def sendPong(self, payload: bytes | None = None) -> None:
        # Autobahn writes the pong itself: count it against the slow-reader cap too.
        super().sendPong(payload)
        guard = self.guard
        if guard is not None:
            guard.wrote(2 + len(payload or b""))

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> Any:
        # Answers queued in this turn leave before Autobahn answers the close and stops sends.
        socket = self.socket
        if socket is not None:
            socket.flush()
        return super().onCloseFrame(code, reasonRaw)

    def onConnect(self, request: ConnectionRequest) -> str | None:
        self._readForwarded(request.headers)
        # Browsers fail the connection if they offered subprotocols and none is echoed, and no
        # Pomelo client depends on which: echo the first, as Pomelo's ws server does.
        protocols = request.protocols
        return protocols[0] if protocols else None

    def _readForwarded(self, headers: dict[str, str]) -> None:
        """Take the client's address from a trusted proxy's forwarded header, if it has one.

        @raise ConnectionDeny: the header is broken (400), or the connector refuses the client
            it names (403 on the blocklist, 429 over C{max_connections_per_ip}).
        """
        connector = self.factory.connector
        header = connector.config.forwarded_header
        if header is None or not connector.trusted_proxies:
            return
        value = headers.get(header)
        peer = self.getPeer()
        if value is None or not connector.is_trusted_proxy(peer):
            return
        try:
            client = forwarded_client(header, value, connector.trusted_proxies.__contains__)
        except ForwardedError as e:
            connector.proxy_refused(peer, f"a trusted proxy's {e}", "forwarded_header")
            raise ConnectionDeny(400, "Bad forwarded header.") from None
        if client is None:
            return
        host, port = client
        address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
        if self.admission is not None:
            refusal = connector.readmit(self.admission, address)
            if refusal is not None:  # the connector has logged and counted it
                raise ConnectionDeny(_REFUSAL_ANSWERS[refusal], "Connection refused.")
        self.clientAddress = address
        self.peer = _describe(address)

    def onOpen(self) -> None:
        if not WS_INTERNALS.checked:
            WS_INTERNALS.check(self)
        self.socket = self.factory.connector.build_socket(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        socket = self.socket
        if socket is None:
            return
        if isBinary:
            socket.messageReceived(payload)
            return
        _log.info("closing {peer}: a text WebSocket message", peer=self.getPeer())
        self._closeCode = _CLOSE_UNSUPPORTED_DATA
        self._closeReason = b"Pomelo packages travel in binary messages"
        socket.disconnect("text WebSocket message")

    def _max_message_size_exceeded(self, msg_size: int, max_msg_size: int, reason: str) -> None:
        # Autobahn's hook for an inbound message or frame over maxMessagePayloadSize /
        # maxFramePayloadSize; it then fails the connection with close code 1009.
        _log.warn(
            "closing {peer} with 1009: a WebSocket message or frame of {size} bytes, over "
            "{limit} bytes (max_package_size + 4)",
            peer=self.getPeer() if self.transport is not None else None,
            size=msg_size,
            limit=max_msg_size,
        )
        super()._max_message_size_exceeded(msg_size, max_msg_size, reason)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        socket, self.socket = self.socket, None
        if socket is None:
            return  # the opening handshake never finished
        if wasClean:
            failure = Failure(ConnectionDone(f"WebSocket closed ({code})"))
        else:
            failure = Failure(ConnectionLost(reason or "WebSocket connection lost"))
        socket.connectionLost(failure)

    def failHandshake(
        self, reason: str, code: int = 400, responseHeaders: list[tuple[str, str]] | None = None
    ) -> None:
        # Autobahn answers a bad opening handshake (a GET without Upgrade: 426) with a bare status
        # line and then closes; say so, and name the upgrade a 426 wants (RFC 9110 §15.5.22).
        headers = list(responseHeaders or ())
        names = {name.lower() for name, _ in headers}
        if code == 426 and "upgrade" not in names:
            headers.append(("Upgrade", "websocket"))
        headers.append(("Connection", "close"))
        super().failHandshake(reason, code, headers)

    # IPomeloTransport

    def writePackages(self, data: bytes) -> None:
        self.writePackageSequence([data])

    def writePackageSequence(self, packages: list[bytes]) -> None:
        """Several sends of one turn: one binary message each, as Pomelo's default (direct)
        push scheduler does, all in one socket write.

        The browser client shipped with Pomelo 2.2.7 (C{pomelo-jsclient-websocket}) decodes only
        the first package of a message and drops the rest (tests/test_browser.py caught it
        losing the response that followed a push), so packages are never batched in a message.

        Server frames are unmasked and uncompressed, so they are framed here (see
        L{PomeloWebSocketFactory.frame}) and written with L{write_now}, which skips Autobahn's
        per-send bookkeeping. Anything Autobahn itself queued (its trickling send queue) keeps
        the write on Autobahn's path, behind it.
        """
        # A flush can come after the peer began closing; Autobahn raises on sends then.
        if self.state != _STATE_OPEN:
            return
        if WS_INTERNALS.ok:
            sent = frames = list(map(self.factory.frame, packages))
            if self.send_queue:
                for frame in frames:
                    self.sendData(frame)
            else:
                write_now(self.transport, frames)  # type: ignore[arg-type]
        else:
            sent = packages
            for package in packages:
                self.sendMessage(package, isBinary=True)
        guard = self.guard
        if guard is not None:
            guard.wrote(sum(map(len, sent)))

    def loseConnection(self) -> None:
        if self.state == _STATE_OPEN:
            # sendClose only takes 1000 and 3000-4999; 1003 is a protocol-level code.
            self.sendCloseFrame(code=self._closeCode, reasonUtf8=self._closeReason)

    def abortConnection(self) -> None:
        self.dropConnection(abort=True)
        # Once Autobahn has answered a close frame its state is CLOSED and dropConnection does
        # nothing, while its graceful close may never finish (a peer that stopped reading).
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


def _describe(address: IPv4Address | IPv6Address) -> str:
    """Autobahn's text for a peer address (C{tcp4:host:port}), as it writes in its logs."""
    kind = "tcp6" if isinstance(address, IPv6Address) else "tcp4"
    return f"{kind}:{address.host}:{address.port}"


class PomeloWebSocketFactory(WebSocketServerFactory):
    """The Autobahn factory of one connector.

    It is never bound to a port itself: the hybrid sniffer hands it connections that start with
    ``GET ``, whatever the request path. It can also serve a twisted.web site, through
    L{pomelo_twisted.server.web.WebSocketAnyPath} or Autobahn's C{WebSocketResource}.
    """

    protocol = PomeloWebSocketProtocol  # type: ignore[assignment]

    def __init__(self, connector: Connector, reactor: Any) -> None:
        # reactor= always: without it Autobahn imports (and so may install) the global reactor.
        super().__init__(reactor=reactor, server=SERVER_NAME)
        self.connector = connector
        self._last: tuple[bytes, bytes] | None = None

    def buildProtocol(self, addr: Any) -> Any:
        p: Any = super().buildProtocol(addr)
        p.clientAddress = addr  # the client's address (behind a proxy: what it reported)
        return p

    def frame(self, payload: bytes) -> bytes:
        """One unmasked binary frame (FIN set) carrying C{payload}; the same bytes object as
        last time for the same C{payload} object (a broadcast), so it is framed once for every
        connection.

        The cache holds the last payload itself, so its identity cannot be reused meanwhile.
        """
        last = self._last
        if last is not None and last[0] is payload:
            return last[1]
        size = len(payload)
        if size < 126:
            head = bytes((0x82, size))
        elif size < 0x10000:
            head = b"\x82\x7e" + size.to_bytes(2, "big")
        else:
            head = b"\x82\x7f" + size.to_bytes(8, "big")
        framed = head + payload
        self._last = (payload, framed)
        return framed


def make_websocket_factory(connector: Connector, reactor: Any = None) -> PomeloWebSocketFactory:
    """An Autobahn factory for C{connector}, configured for small binary game messages.

    Autobahn's defaults are built for a general-purpose server; the changes, and why:

      - message and frame size capped at one maximum package (Autobahn's default is no limit:
        a DoS vector); Autobahn refuses larger ones with close code 1009;
      - no automatic pings: Pomelo's heartbeat packages give liveness on both transports;
      - no permessage-deflate: small binary messages gain nothing and it costs CPU;
      - no HTML status page for a plain GET: a short 426 answer instead;
      - polite close handshakes on protocol errors (C{failByDrop=False}).

      - the closing handshake bounded by C{kick_close_timeout}, as every other graceful close
        of the connector (Autobahn's default: 1 s), on exact timers (L{ReactorTimer}).

    @param reactor: the reactor given to Autobahn; the connector's by default.
    """
    config = connector.config
    factory = PomeloWebSocketFactory(connector, connector.reactor if reactor is None else reactor)
    limit = config.max_package_size + 4
    factory.setProtocolOptions(
        maxFramePayloadSize=limit,
        maxMessagePayloadSize=limit,
        openHandshakeTimeout=config.handshake_timeout or 5,
        autoPingInterval=0,
        perMessageCompressionAccept=lambda offers: None,
        failByDrop=False,
        closeHandshakeTimeout=config.kick_close_timeout,
        tcpNoDelay=True,
        webStatus=False,
    )
    use_exact_timers(factory)
    return factory
