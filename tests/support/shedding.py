"""In-memory connections for the hostile-client tests (tests/server/test_ping_flood.py,
test_log_throttle.py, test_shedding.py): a connector on a C{task.Clock}, its hybrid factory,
and StringTransports that record pauses, as the real TCP transport's producer interface does.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address

from pomelo_twisted.demo import make_app
from pomelo_twisted.protocol.message import MessageType, decode_message, encode_message
from pomelo_twisted.protocol.package import PackageDecoder, PackageType, encode_package
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.hybrid import HybridProtocol
from pomelo_twisted.services.application import Application
from tests.support import transports
from tests.support.transports import client_frame

PEER = IPv4Address("TCP", "192.0.2.7", 50000)
OTHER_PEER = IPv4Address("TCP", "198.51.100.1", 50000)

HANDSHAKE = encode_package(PackageType.HANDSHAKE, b'{"sys":{"type":"t","version":"1"}}')
ACK = encode_package(PackageType.HANDSHAKE_ACK, b"")
HEARTBEAT = encode_package(PackageType.HEARTBEAT, b"")
UPGRADE = transports.UPGRADE

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


class Transport(transports.Transport):
    """A L{transports.Transport} that says whether it reads, as a TCP transport does."""

    @property
    def reading(self) -> bool:
        """Whether the connection reads (L{pauseProducing} stops a TCP transport reading)."""
        return self.producerState == "producing"


class Harness(transports.Harness):
    """A connector serving L{hostile_app} on a clock, connections over L{Transport}s."""

    config = CONFIG
    transportClass = Transport

    def make_application(self) -> Application:
        return hostile_app()

    def connect(self, peer: Any = PEER) -> tuple[HybridProtocol, Transport]:
        protocol, transport = super().connect(peer)
        assert isinstance(transport, Transport)
        return protocol, transport

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
