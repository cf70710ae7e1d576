"""Log volume: throttled refusal and TLS lines, the close line's level, Autobahn's drop warning."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.demo import make_app
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import PomeloConnectorFactory

PEER = IPv4Address("TCP", "192.0.2.7", 50000)
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Transport(StringTransport):
    """A StringTransport that takes what Autobahn calls on a socket when it drops one."""

    def unregisterProducer(self) -> None:
        self.producer = None


def lines(events: list[dict[str, Any]], level: Any = None) -> list[str]:
    return [formatEvent(e) for e in events if level is None or e["log_level"] == level]


class ConnectorLogTests(SynchronousTestCase):
    def build(self, **changes: Any) -> None:
        self.clock = Clock()
        config = replace(ConnectorConfig(), **changes)
        self.connector = Connector(make_app(), self.clock, config)
        self.factory = PomeloConnectorFactory(self.connector)

    def connect(self, peer: Any = PEER) -> tuple[Any, Transport]:
        protocol = self.factory.buildProtocol(peer)
        transport = Transport(peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_refusals_summarised(self) -> None:
        """A storm of refusals: one line for the first, one count for the rest."""
        self.build(max_connections=1, first_byte_timeout=None)
        self.connect()
        with capturedLogs() as events:
            for _ in range(100):
                self.connect()
            self.clock.advance(10)
        self.assertEqual(len(events), 2, lines(events))
        self.assertIn("max_connections is 1", lines(events)[0])
        self.assertEqual(
            lines(events)[1],
            "refusing connections over max_connections: 99 more in the last 10 s "
            "(logged once per interval)",
        )

    def test_sniffer_refusals_summarised(self) -> None:
        """Connections that never become clients (a first byte that is no package type, an
        HTTP request that is no upgrade, a request head too large, silence): each kind logs
        one line, then one count per interval, and every refusal is still counted."""
        self.build(first_byte_timeout=5.0, max_http_head_size=1024)
        with capturedLogs() as events:
            for _ in range(20):
                self.connect()[0].dataReceived(b"\x00junk")
                self.connect()[0].dataReceived(b"POST / HTTP/1.1\r\nHost: h\r\n\r\n")
                self.connect()[0].dataReceived(b"GET /" + b"x" * 1100)
                self.connect()  # says nothing
            self.clock.advance(5)  # the silent ones time out
            self.clock.advance(10)  # every summary is due
        texts = lines(events)
        self.assertEqual(len(texts), 8, texts)
        for first in (
            "first byte 0x00 is neither a package type nor HTTP",
            "HTTP request that is not a WebSocket upgrade",
            "with 431: HTTP request head over",
            "not classified within 5.0 s",
        ):
            self.assertEqual(len([t for t in texts if first in t]), 1, (first, texts))
        summaries = [t for t in texts if "19 more in the last 10 s" in t]
        self.assertEqual(len(summaries), 4, texts)

    def test_blocklist_and_per_ip_each_their_own(self) -> None:
        self.build(max_connections_per_ip=1, blocklist=["198.51.100.0/24"])
        self.connect()
        blocked = IPv4Address("TCP", "198.51.100.1", 1)
        with capturedLogs() as events:
            for _ in range(3):
                self.connect()
                self.connect(blocked)
        self.assertEqual(len(events), 2, lines(events))
        self.assertIn("max_connections_per_ip is 1", lines(events, LogLevel.warn)[0])
        self.assertIn("on the blocklist", lines(events, LogLevel.info)[0])

    def close_line_levels(self, **changes: Any) -> list[Any]:
        self.build(**changes)
        protocol, _ = self.connect()
        with capturedLogs() as events:
            protocol.dataReceived(b"\x01\x00\x00\x02{}")  # a raw TCP handshake: a socket
            self.connector.sockets.copy().pop().abort("heartbeat timeout")
        return [e["log_level"] for e in events if "connection closed" in formatEvent(e)]

    def test_close_line_level(self) -> None:
        """--connection-log-level: info by default, or debug, or no line at all."""
        self.assertEqual(self.close_line_levels(), [LogLevel.info])
        self.assertEqual(
            self.close_line_levels(connection_log_level=LogLevel.debug), [LogLevel.debug]
        )
        self.assertEqual(self.close_line_levels(connection_log_level=None), [])

    def test_bad_level_refused(self) -> None:
        self.assertRaises(ValueError, ConnectorConfig, connection_log_level="info")

    def test_autobahn_drop_not_a_warning(self) -> None:
        """An abort the connector decided on (a heartbeat timeout) is no Autobahn warning."""
        self.build()
        protocol, transport = self.connect()
        protocol.dataReceived(UPGRADE)
        self.assertIn(b"101 Switching Protocols", transport.value())
        with capturedLogs() as events:
            self.connector.sockets.copy().pop().abort("heartbeat timeout")
        self.assertTrue(transport.disconnected)  # aborted
        self.assertEqual(lines(events, LogLevel.warn), [])
        self.assertEqual(len(lines(events, LogLevel.info)), 1)  # the connector's close line


class TLSHandshakeLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        key = ssl.KeyPair.generate(crypto.TYPE_RSA, 2048)
        certificate = key.selfSignedCert(1, CN="localhost")
        tls = ssl.CertificateOptions(privateKey=key.original, certificate=certificate.original)
        self.clock = Clock()
        self.connector = Connector(make_app(), self.clock)
        self.factory = PomeloConnectorFactory(self.connector, tls=tls)

    def fail_handshake(self, n: int) -> None:
        protocol = self.factory.buildProtocol(PEER)
        transport = Transport(peerAddress=IPv4Address("TCP", "192.0.2.7", n))
        protocol.makeConnection(transport)
        # A TLS record header, then no ClientHello in it.
        protocol.dataReceived(b"\x16\x03\x01\x00\x05hello")
        self.assertTrue(transport.disconnecting or transport.disconnected)
        protocol.connectionLost(None)

    def test_logged_with_peer_and_throttled(self) -> None:
        with capturedLogs() as events:
            for n in range(1, 4):
                self.fail_handshake(n)
            self.clock.advance(10)
        self.assertEqual(len(events), 2, lines(events))
        self.assertTrue(lines(events)[0].startswith("TLS handshake with 192.0.2.7:1 failed: "))
        self.assertEqual(
            lines(events)[1],
            "failed TLS handshakes: 2 more in the last 10 s (logged once per interval)",
        )
