# -*- test-case-name: tests.server.test_transports,tests.server.test_tls -*-
"""One port for raw TCP and WebSocket clients: the hybrid connector's sniffer.

A L{HybridProtocol} looks at what a new connection sends first (protocol.md §2.3, the improved
rule) and hands the connection to the raw TCP protocol or to Autobahn:

  - first byte C{0x01}-C{0x05} (a package type): raw TCP; one byte is enough;
  - first byte C{A}-C{Z}: an HTTP request. The request head is read here, up to
    C{max_http_head_size} bytes (L{MAX_REQUEST_HEAD} by default); a C{GET} goes to Autobahn,
    which upgrades it or answers 4xx and closes; any other method is answered C{400} and closed;
  - first byte C{0x16} (a TLS handshake record), when the factory was given C{tls=}: the
    connection is wrapped in TLS and the decrypted stream is classified the same way, so plain
    and TLS clients (TCP, WebSocket, WSS) share one port;
  - anything else: aborted at once.

Before that, L{HybridProtocol.connectionMade} asks the connector to admit the connection
(blocklist, C{max_connections}, C{max_connections_per_ip}); a refused one is aborted at once.

With C{proxy_protocol} on, a connection from C{trusted_proxies} must start with a PROXY protocol
header (L{pomelo_twisted.server.proxy}); the client it names is admitted in the balancer's
place (L{Connector.readmit}) and is what every later C{getPeer()} returns, and the bytes after
the header are classified as above. A header from any other peer, or a missing or broken one
from a trusted proxy, is refused: the connection is aborted, with one log line now and then.

It stays C{transport.protocol} for the whole connection, in the style of AMP's C{_switchTo}: the
inner protocol gets the I{real} transport (so writes go straight out, and TLS details stay
visible to Autobahn), and the bytes read while sniffing are replayed to it exactly once. Reads
then cost one extra method call.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocol, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger, LogLevel
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from .closing import peer_text
from .connector import Connector
from .proxy import ProxyHeaderError, parse_proxy_header, proxy_signature
from .tcp import PomeloTCPFactory
from .websocket import PomeloWebSocketFactory, PomeloWebSocketProtocol, make_websocket_factory

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from ..services.application import Application
    from .config import ConnectorConfig

__all__ = [
    "HEAD_TOO_LARGE_ANSWER",
    "MAX_REQUEST_HEAD",
    "NOT_A_WEBSOCKET_ANSWER",
    "HybridProtocol",
    "PomeloConnectorFactory",
    "load_tls_options",
]

#: The default largest HTTP request head (C{ConnectorConfig.max_http_head_size}): request line,
#: headers and the blank line ending them.
MAX_REQUEST_HEAD = 8 * 1024

#: The first byte of a TLS connection: a handshake record (the ClientHello).
_TLS_HANDSHAKE_RECORD = 0x16

_GET = b"GET "
_END_OF_HEAD = b"\r\n\r\n"

# What a connection owes the PROXY protocol before it is classified.
_NO_HEADER = 0  # nothing: PROXY is off, or the header has been read
_HEADER_REQUIRED = 1  # a trusted proxy: a header must come first
_HEADER_REFUSED = 2  # any other peer: no header may come


def _httpAnswer(status: str, text: str) -> bytes:
    """A complete, closing HTTP/1.1 answer with a short plain-text body."""
    body = text.encode("utf-8")
    return (
        f"HTTP/1.1 {status}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii") + body


#: The answer to an HTTP request that is not a WebSocket upgrade (not a C{GET}).
NOT_A_WEBSOCKET_ANSWER = _httpAnswer(
    "400 Bad Request", "This port serves Pomelo clients: raw TCP or a WebSocket upgrade.\n"
)
#: The answer to a request head over L{MAX_REQUEST_HEAD} bytes.
HEAD_TOO_LARGE_ANSWER = _httpAnswer(
    "431 Request Header Fields Too Large", "Request head too large.\n"
)


class HybridProtocol(Protocol):
    """Classify a new connection, then forward everything to the protocol chosen.

    A deadline (the connector's C{first_byte_timeout}) runs until the connection is classified:
    the first byte for raw TCP, the whole request head for HTTP. A client that connects and says
    nothing, or trickles a request head, is aborted when it passes; a PROXY header counts
    against the same deadline.

    @ivar clientAddress: the client's address when it is not the transport's peer: what the
        PROXY header named, or (the sniffer of a TLS connection's decrypted stream) what the
        sniffer of the connection found; C{None} otherwise.
    @ivar admission: what the connector counts this connection under (L{Connector.admit}): this
        protocol, or for a decrypted stream the sniffer of its connection; C{None} if not
        admitted.
    """

    log = Logger()
    factory: _HybridFactory

    clientAddress: IAddress | None = None
    admission: object | None = None
    _inner: IProtocol | None = None
    _buffer = b""
    _closed = False
    _deadline: IDelayedCall | None = None
    _proxyHeader = _NO_HEADER

    def connectionMade(self) -> None:
        factory = self.factory
        connector = factory.connector
        if factory.admission:
            transport: Any = self.transport
            peer = transport.getPeer()
            if not connector.admit(self, peer, transport.abortConnection):
                self._closed = True
                transport.abortConnection()
                return
            self.admission = self
            if connector.config.proxy_protocol:
                trusted = connector.is_trusted_proxy(peer)
                self._proxyHeader = _HEADER_REQUIRED if trusted else _HEADER_REFUSED
        timeout = connector.config.first_byte_timeout
        if timeout:
            self._deadline = connector.reactor.callLater(timeout, self._timedOut)

    def getPeer(self) -> IAddress:
        """The client's address: L{clientAddress}, or the transport's peer."""
        address = self.clientAddress
        if address is not None:
            return address
        return self.transport.getPeer()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        inner = self._inner
        if inner is not None:
            inner.dataReceived(data)
            return
        if self._closed or not data:
            return
        seen = len(self._buffer)
        buffer = self._buffer + data
        if self._proxyHeader:
            rest = self._readProxyHeader(buffer)
            if rest is None:
                return
            seen = 0
            buffer = rest
            if not buffer:
                self._buffer = b""
                return
        first = buffer[0]
        if 0x01 <= first <= 0x05:
            self._switchTo(self.factory.tcpFactory, buffer)
        elif 0x41 <= first <= 0x5A:
            self._readRequestHead(buffer, seen)
        elif first == _TLS_HANDSHAKE_RECORD and (tls := self._tlsFactory()) is not None:
            self._switchTo(tls, buffer)
        else:
            self.factory.connector.refuse(
                "bad_first_byte",
                "aborting connections whose first byte is neither a package type nor HTTP",
                LogLevel.info,
                "aborting {peer}: first byte {byte:#04x} is neither a package type nor HTTP",
                peer=self.getPeer(),
                byte=first,
            )
            self._close(abort=True)

    def _readProxyHeader(self, buffer: bytes) -> bytes | None:
        """Deal with a PROXY header at the start of C{buffer} (the listener takes them).

        Return the bytes after it (all of C{buffer} if none may come), or C{None}: more bytes
        are needed (kept), or the connection was refused.
        """
        connector = self.factory.connector
        if self._proxyHeader == _HEADER_REFUSED:
            started = proxy_signature(buffer)
            if started is None:
                self._buffer = buffer
                return None
            if started:
                self._refuseProxy("a PROXY protocol header from a peer not in trusted_proxies")
                return None
            self._proxyHeader = _NO_HEADER
            return buffer
        try:
            header = parse_proxy_header(buffer)
        except ProxyHeaderError as e:
            self._refuseProxy(f"a trusted proxy's connection without a valid header: {e}")
            return None
        if header is None:
            self._buffer = buffer
            return None
        self._proxyHeader = _NO_HEADER
        if header.source is not None:
            host, port = header.source
            kind = IPv6Address if ":" in host else IPv4Address
            client = kind("TCP", host, port)
            refusal = connector.readmit(self, client)
            if refusal is not None:  # the connector has logged and counted why
                self._close(abort=True)
                return None
            self.clientAddress = client
        return buffer[header.length :]

    def _refuseProxy(self, problem: str) -> None:
        self.factory.connector.proxy_refused(self.getPeer(), problem, "proxy_header")
        self._close(abort=True)

    def _tlsFactory(self) -> TLSMemoryBIOFactory | None:
        """The TLS wrapper for a plain port, or C{None}: none configured, or already TLS."""
        tls = self.factory.tlsFactory
        if tls is None or isinstance(self.transport, TLSMemoryBIOProtocol):
            return None  # an ssl: endpoint already decrypts: TLS in TLS is garbage
        return tls

    def _readRequestHead(self, buffer: bytes, seen: int) -> None:
        """Buffer an HTTP request head; route it once complete (C{seen}: bytes already scanned)."""
        if len(buffer) < 4 and _GET.startswith(buffer):
            self._buffer = buffer  # "G", "GE", "GET": still a WebSocket candidate
            return
        limit = self.factory.connector.config.max_http_head_size
        end = buffer.find(_END_OF_HEAD, max(0, seen - 3), limit)
        if end < 0:
            if len(buffer) >= limit:
                self.factory.connector.refuse(
                    "http_head_too_large",
                    "closing connections with 431 (HTTP request head too large)",
                    LogLevel.info,
                    "closing {peer} with 431: HTTP request head over max_http_head_size "
                    "({limit} bytes)",
                    peer=self.getPeer(),
                    limit=limit,
                )
                self._answer(HEAD_TOO_LARGE_ANSWER)
            else:
                self._buffer = buffer
            return
        if buffer.startswith(_GET):
            # Autobahn checks the upgrade itself, and answers 4xx and closes if it is not one.
            self._switchTo(self.factory.wsFactory, buffer)
            return
        self.factory.connector.refuse(
            "not_websocket",
            "closing HTTP requests that are not a WebSocket upgrade",
            LogLevel.info,
            "closing {peer}: HTTP request that is not a WebSocket upgrade: {line!r}",
            peer=self.getPeer(),
            line=buffer[: min(buffer.find(b"\r\n"), 80)],
        )
        self._answer(NOT_A_WEBSOCKET_ANSWER)

    def _switchTo(self, factory: IProtocolFactory, buffer: bytes) -> None:
        """Give the connection to a protocol of C{factory}, and replay C{buffer} to it once.

        The client's address goes to C{factory} as C{buildProtocol}'s address (the inner
        protocols' C{getPeer()} returns it), the admission to the protocol that may learn a
        better address later (from a forwarded header).
        """
        self._cancelDeadline()
        if self._buffer:
            # Only when set: most connections are classified by their first read and never
            # store a buffer, and one attribute fewer keeps this instance's dict at its
            # smaller size (192 bytes less per idle connection).
            self._buffer = b""
        transport = self.transport
        assert transport is not None
        inner = factory.buildProtocol(self.getPeer())
        if inner is None:  # the factory refused the connection
            self._close(abort=True)
            return
        if isinstance(inner, TLSMemoryBIOProtocol):
            decrypted = inner.wrappedProtocol
            assert isinstance(decrypted, HybridProtocol)
            decrypted.admission = self.admission
        elif isinstance(inner, PomeloWebSocketProtocol):
            inner.admission = self.admission
        self._inner = inner  # before makeConnection: it may already lose the connection
        inner.makeConnection(transport)
        inner.dataReceived(buffer)

    def _answer(self, answer: bytes) -> None:
        self.transport.write(answer)  # type: ignore[union-attr]
        self._close(abort=False)

    def _close(self, abort: bool) -> None:
        self._cancelDeadline()
        self._closed = True
        self._buffer = b""
        if abort:
            self.transport.abortConnection()  # type: ignore[union-attr]
        else:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def _timedOut(self) -> None:
        self._deadline = None
        self.factory.connector.refuse(
            "first_byte_timeout",
            "aborting connections not classified within first_byte_timeout",
            LogLevel.info,
            "aborting {peer}: not classified within {timeout} s",
            peer=self.getPeer(),
            timeout=self.factory.connector.config.first_byte_timeout,
        )
        self._close(abort=True)

    def _cancelDeadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelDeadline()
        if self._inner is None and reason.check(SSL.Error):
            # TLS failed before the decrypted stream said anything: most often a client that
            # does not trust the certificate, or speaks no common TLS version.
            transport: Any = self.transport
            self.factory.connector.crowd_log.emit(
                self.log,
                "failed TLS handshakes",
                LogLevel.info,
                "TLS handshake with {peer} failed: {error}",
                peer=peer_text(transport.getPeer()),
                error=reason.getErrorMessage(),
            )
        self._closed = True
        self.factory.connector.release(self)  # once: a second call finds nothing to uncount
        inner = self._inner
        if inner is not None:
            inner.connectionLost(reason)


class _HybridFactory(Factory[HybridProtocol]):
    """What a L{HybridProtocol} needs from its factory.

    @ivar admission: whether new connections go through the connector's admission (off for the
        decrypted stream inside a TLS connection: the outer connection was admitted).
    @ivar tlsFactory: wraps a connection whose first byte is a TLS record, or C{None}.
    """

    protocol = HybridProtocol
    admission = True
    tlsFactory: TLSMemoryBIOFactory | None = None

    connector: Connector
    tcpFactory: PomeloTCPFactory
    wsFactory: PomeloWebSocketFactory

    def buildProtocol(self, addr: Any) -> HybridProtocol:
        p = HybridProtocol()
        p.factory = self
        return p


class _DecryptedFactory(_HybridFactory):
    """Classifies the decrypted stream of a TLS connection on a plain port."""

    admission = False

    def __init__(self, outer: PomeloConnectorFactory) -> None:
        self.connector = outer.connector
        self.tcpFactory = outer.tcpFactory
        self.wsFactory = outer.wsFactory

    def buildProtocol(self, addr: Any) -> HybridProtocol:
        p = super().buildProtocol(addr)
        p.clientAddress = addr  # the connection's client (its sniffer may have read a PROXY header)
        return p


class PomeloConnectorFactory(_HybridFactory):
    """The factory to listen with: one port, raw TCP and WebSocket Pomelo clients.

    Usage::

        factory = PomeloConnectorFactory(Connector(app, reactor, config))
        serverFromString(reactor, "tcp:3010").listen(factory)

    On an C{ssl:} endpoint the connection is classified after decryption, so raw TCP over TLS
    and WSS clients share the port. With C{tls=}, a plain (C{tcp:}) port takes TLS clients
    I{as well as} plain ones: a first byte of C{0x16} (a TLS handshake record, never a Pomelo
    package type or an HTTP method) starts TLS, and the decrypted stream is classified as usual.

    @ivar connector: the L{Connector} shared by every connection.
    @ivar tcpFactory: builds the raw TCP protocols.
    @ivar wsFactory: the Autobahn factory; a twisted.web site can also serve WebSocket clients,
        at any path with L{pomelo_twisted.server.web.WebSocketAnyPath} (as Pomelo's browser
        client needs) or at one path with Autobahn's C{WebSocketResource}.
    """

    def __init__(self, connector: Connector, tls: Any = None) -> None:
        """
        @param tls: TLS server settings (an C{IOpenSSLServerConnectionCreator} such as
            C{twisted.internet.ssl.CertificateOptions}, see L{load_tls_options}) to accept TLS
            clients on plain ports too; C{None} for plain only.
        """
        self.connector = connector
        self.tcpFactory = PomeloTCPFactory(connector)
        self.wsFactory = make_websocket_factory(connector, connector.reactor)
        if tls is not None:
            self.tlsFactory = TLSMemoryBIOFactory(
                tls, False, _DecryptedFactory(self), clock=connector.reactor
            )

    @classmethod
    def for_app(
        cls, app: Application, reactor: IReactorTime, config: ConnectorConfig | None = None
    ) -> PomeloConnectorFactory:
        """A factory with a new L{Connector} for C{app}."""
        return cls(Connector(app, reactor, config))


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def load_tls_options(key_path: str, cert_path: str) -> ssl.CertificateOptions:
    """TLS server settings from PEM files, for L{PomeloConnectorFactory}'s C{tls=}.

    @param key_path: the private key.
    @param cert_path: the certificate, optionally followed by its chain (intermediates).
    @raise ValueError: no private key in C{key_path}, no certificate in C{cert_path}, or a
        key that does not match it.
    @raise OSError: a file cannot be read.
    """
    with open(key_path, "rb") as f:
        data = f.read()
    try:
        key = ssl.KeyPair.load(data, crypto.FILETYPE_PEM)
    except crypto.Error as e:  # OpenSSL's own errors say little: name the file
        raise ValueError(f"{key_path}: not a PEM private key: {e}") from None
    with open(cert_path, "rb") as f:
        blocks = _PEM_CERTIFICATE.findall(f.read())
    if not blocks:
        raise ValueError(f"{cert_path}: no PEM certificate found")
    certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
    try:
        private = ssl.PrivateCertificate.fromCertificateAndKeyPair(certificates[0], key)
        options = ssl.CertificateOptions(
            privateKey=private.privateKey.original,
            certificate=private.original,
            extraCertChain=[c.original for c in certificates[1:]],
        )
        options.getContext()  # checks that the key matches the certificate, now
    except Exception as e:  # OpenSSL's own errors say little: name the files
        raise ValueError(
            f"{key_path} and {cert_path} are not a matching key and certificate: {e}"
        ) from None
    return options
