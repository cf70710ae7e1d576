"""In-memory connections for the hostile-client tests (tests/server/test_ping_flood.py,
test_log_throttle.py, test_shedding.py): a connector on a C{task.Clock}, its hybrid factory,
and StringTransports that record pauses, as the real TCP transport's producer interface does.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.demo import make_app
from pomelo_twisted.protocol.message import MessageType, decode_message, encode_message
from pomelo_twisted.protocol.package import PackageDecoder, PackageType, encode_package
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import HybridProtocol, PomeloConnectorFactory
from pomelo_twisted.services.application import Application
from tests.support.transports import client_frame

PEER = IPv4Address("TCP", "192.0.2.7", 50000)
OTHER_PEER = IPv4Address("TCP", "198.51.100.1", 50000)

HANDSHAKE = encode_package(PackageType.HANDSHAKE, b'{"sys":{"type":"t","version":"1"}}')
ACK = encode_package(PackageType.HANDSHAKE_ACK, b"")
HEARTBEAT = encode_package(PackageType.HEARTBEAT, b"")
UPGRADE = (
    b"GET / HTTP/1.1\r\n"
    b"Host: 127.0.0.1:3010\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)

ENTRY = "connector.entryHandler.entry"
NOTIFY = "connector.entryHandler.notify"
#: Routes of L{hostile_app} whose handlers misbehave.
UNSERIALISABLE = "connector.badHandler.unserialisable"
RAISES = "connector.badHandler.raises"

#: No dictionary, no protobuf, heartbeat 3 s (protocol.md §19.1).
CONFIG = ConnectorConfig(heartbeat=3, use_dict=False, use_protobuf=False)


def hostile_app() -> Application:
    """The demo app plus two handlers that fail: one answers an object JSON cannot encode,
    one raises."""
    app = make_app()

    def unserialisable(msg: Any, session: Any) -> Any:
        return {"code": 200, "x": object()}

    def raises(msg: Any, session: Any) -> Any:
        raise RuntimeError("boom")

    app.add_handler(UNSERIALISABLE, unserialisable)
    app.add_handler(RAISES, raises)
    return app


def request(mid: int, route: str = ENTRY, body: bytes = b"{}") -> bytes:
    return encode_package(PackageType.DATA, encode_message(MessageType.REQUEST, mid, route, body))


def notify(route: str = NOTIFY, body: bytes = b'{"n":1}') -> bytes:
    return encode_package(PackageType.DATA, encode_message(MessageType.NOTIFY, 0, route, body))


def responses(written: bytes) -> list[tuple[int, bytes]]:
    """(id, body) of every RESPONSE in C{written} (whole raw TCP packages)."""
    out = []
    for package in PackageDecoder().feed(written):
        if package.type is PackageType.DATA:
            msg = decode_message(package.body)
            if msg.type is MessageType.RESPONSE:
                out.append((msg.id, msg.body))
    return out


class Transport(StringTransport):
    """A StringTransport that takes what Autobahn and the TCP protocol call on sockets."""

    def unregisterProducer(self) -> None:
        # Autobahn's dropConnection always unregisters; StringTransport raises without one.
        self.producer = None
        self.streaming = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    @property
    def reading(self) -> bool:
        """Whether the connection reads (L{pauseProducing} stops a TCP transport reading)."""
        return self.producerState == "producing"


class Harness(SynchronousTestCase):
    """A connector serving L{hostile_app} on a clock, connections over L{Transport}s."""

    config = CONFIG

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.build(self.config)

    def build(self, config: ConnectorConfig, **changes: Any) -> None:
        self.connector = Connector(hostile_app(), self.clock, replace(config, **changes))
        self.factory = PomeloConnectorFactory(self.connector)

    def connect(self, peer: Any = PEER) -> tuple[HybridProtocol, Transport]:
        protocol = self.factory.buildProtocol(peer)
        assert protocol is not None
        transport = Transport(peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def receive(self, protocol: HybridProtocol, *chunks: bytes) -> None:
        """Deliver C{chunks} as separate reads, then end the reactor turn."""
        for chunk in chunks:
            protocol.dataReceived(chunk)
        self.clock.advance(0)

    def working(self, peer: Any = PEER) -> tuple[HybridProtocol, Transport]:
        """A raw TCP client past the ACK; what it was sent so far is cleared."""
        protocol, transport = self.connect(peer)
        self.receive(protocol, HANDSHAKE + ACK)
        self.assertIn(b'"code":200', transport.value())
        transport.clear()
        return protocol, transport

    def working_ws(self, peer: Any = PEER) -> tuple[HybridProtocol, Transport]:
        """A WebSocket client past the ACK, at the byte level."""
        protocol, transport = self.connect(peer)
        self.receive(protocol, UPGRADE)
        self.assertIn(b" 101 ", transport.value())
        self.receive(protocol, client_frame(HANDSHAKE), client_frame(ACK))
        self.assertIn(b'"code":200', transport.value())
        transport.clear()
        return protocol, transport

    def socket_of(self, protocol: HybridProtocol) -> Any:
        inner: Any = protocol._inner
        return inner.socket
