"""The transport layer's in-memory harness: a connector on a C{task.Clock}, connections to its
hybrid factory over C{StringTransport}s, an Autobahn client joined by iosim, masked client frames,
and protocol.md's §19 bytes (used by tests/server and tests/ops)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.demo import make_app
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import (
    HybridProtocol,
    PomeloConnectorFactory,
)
from pomelo_twisted.services.application import Application

# protocol.md §19.1: heartbeat 3, no dictionary, no protobuf.
CONFIG = ConnectorConfig(heartbeat=3, use_dict=False, use_protobuf=False)
HANDSHAKE = bytes.fromhex("01 00 00 3e") + (
    b'{"sys":{"type":"desktop","version":"0.3.5-release"},"user":{}}'
)

HANDSHAKE_RESPONSE = bytes.fromhex("01 00 00 22") + b'{"code":200,"sys":{"heartbeat":3}}'
ACK = bytes.fromhex("02 00 00 00")
HEARTBEAT = bytes.fromhex("03 00 00 00")


def upgrade_request(path: bytes = b"/") -> bytes:
    """A browser's WebSocket upgrade (RFC 6455 §1.3's key) for C{path}."""
    return (
        b"GET " + path + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1:3010\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"\r\n"
    )


# protocol.md §19.2.
UPGRADE = upgrade_request()

MASK = bytes.fromhex("12 34 56 78")
PEER = IPv4Address("TCP", "192.0.2.7", 50000)


def client_frame(payload: bytes, opcode: int = 2, mask: bytes = MASK) -> bytes:
    """One final, masked client frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 0x10000:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Transport(StringTransport):
    """A StringTransport that also takes what Autobahn and the TCP protocol call on sockets."""

    noDelay: bool | None = None

    def unregisterProducer(self) -> None:
        # Autobahn's dropConnection always unregisters; StringTransport raises without one.
        self.producer = None
        self.streaming = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay = enabled


class Harness(SynchronousTestCase):
    """A connector on a clock, and connections to its hybrid factory over StringTransports."""

    config = CONFIG
    #: The transport each connection gets.
    transportClass: type[Transport] = Transport

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.build(self.config)

    def make_application(self) -> Application:
        """The application the connector serves: the demo's."""
        return make_app()

    def build(self, config: ConnectorConfig, **changes: Any) -> None:
        """A fresh connector (and factory) with C{config}, C{changes} applied."""
        self.connector = Connector(self.make_application(), self.clock, replace(config, **changes))
        self.factory = PomeloConnectorFactory(self.connector)

    def connect(self, peer: Any = PEER) -> tuple[HybridProtocol, Any]:
        protocol = self.factory.buildProtocol(peer)
        transport = self.transportClass(peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def connection_timers(self) -> list[Any]:
        """The clock's pending calls but the connector's crowd-log summaries (a refusal
        after another schedules one): what the connections left behind."""
        crowd = self.connector.crowd_log
        return [
            call
            for call in self.clock.getDelayedCalls()
            if getattr(call.func, "__self__", None) is not crowd
        ]

    def receive(self, protocol: HybridProtocol, *chunks: bytes) -> None:
        """Deliver C{chunks} as separate reads, then end the reactor turn."""
        for chunk in chunks:
            protocol.dataReceived(chunk)
        self.clock.advance(0)

    @staticmethod
    def take(transport: StringTransport) -> bytes:
        data = transport.value()
        transport.clear()
        return data

    def only_socket(self) -> Any:
        [socket] = self.connector.sockets
        return socket


class WebSocketClient(WebSocketClientProtocol):
    """An Autobahn client that records what it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = False
        self.messages: list[tuple[bytes, bool]] = []
        self.closed: tuple[bool, int | None, str | None] | None = None

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = (wasClean, code, reason)


class WebSocketMemoryHarness(Harness):
    """An Autobahn client and the hybrid server joined by iosim, fully in memory."""

    def open(self, protocols: list[str] | None = None) -> tuple[WebSocketClient, iosim.IOPump]:
        client_factory = WebSocketClientFactory(
            "ws://127.0.0.1:3010", reactor=self.clock, protocols=protocols
        )
        client_factory.protocol = WebSocketClient
        client, server, pump = iosim.connectedServerAndClient(
            lambda: self.factory.buildProtocol(PEER),
            lambda: client_factory.buildProtocol(PEER),
            clock=self.clock,
        )
        pump.flush()
        self.assertTrue(client.opened)
        self.assertIsInstance(server, HybridProtocol)
        return client, pump

    def send(self, client: WebSocketClient, pump: iosim.IOPump, data: bytes) -> None:
        client.sendMessage(data, isBinary=True)
        pump.flush()

    def ready(self) -> tuple[WebSocketClient, iosim.IOPump]:
        """A client that has shaken hands and acknowledged."""
        client, pump = self.open()
        self.send(client, pump, HANDSHAKE)
        self.send(client, pump, ACK)
        self.assertEqual(client.messages, [(HANDSHAKE_RESPONSE, True), (HEARTBEAT, True)])
        del client.messages[:]
        return client, pump
