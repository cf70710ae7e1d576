"""A connector with one raw TCP client in memory, for the Pomelo-parity tests (issue 12).

Everything runs on a C{task.Clock} and a C{StringTransport}: the client's packages go in as
reads, and what the connector wrote comes back decoded, one reactor turn at a time.
"""

from __future__ import annotations

from typing import Any

import orjson
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from pomelo_twisted.protocol.message import MessageType, decode_message, encode_message
from pomelo_twisted.protocol.package import Package, PackageType, decode_packages, encode_package
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import HybridProtocol, PomeloConnectorFactory
from pomelo_twisted.services.application import Application
from tests.support.transports import client_frame

#: Heartbeat 3 s, no dictionary, no protobuf: routes and bodies travel as plain text.
CONFIG = ConnectorConfig(heartbeat=3, use_dict=False, use_protobuf=False)
PEER = IPv4Address("TCP", "192.0.2.7", 50000)
HANDSHAKE = encode_package(PackageType.HANDSHAKE, b'{"sys":{"type":"test","version":"1"}}')
ACK = encode_package(PackageType.HANDSHAKE_ACK)
HEARTBEAT = encode_package(PackageType.HEARTBEAT)


class Transport(StringTransport):
    """A StringTransport that also takes what the TCP protocol calls on sockets."""

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


class TCPClient:
    """One raw TCP Pomelo client of C{connector}, driven by hand on C{clock}."""

    def __init__(self, connector: Connector, clock: task.Clock) -> None:
        self.clock = clock
        self.connector = connector
        self.protocol: HybridProtocol = PomeloConnectorFactory(connector).buildProtocol(PEER)
        self.transport = Transport(peerAddress=PEER)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> list[Package]:
        """Deliver C{data}, end the reactor turn, and return the packages written meanwhile."""
        self.protocol.dataReceived(data)
        return self.read()

    def read(self) -> list[Package]:
        """End the reactor turn; the packages written since the last read."""
        self.clock.advance(0)
        data = self.transport.value()
        self.transport.clear()
        return decode_packages(data)

    def start(self) -> Any:
        """Handshake and ACK; return the new session."""
        [answer] = self.send(HANDSHAKE)
        assert orjson.loads(answer.body)["code"] == 200, answer
        self.send(ACK)
        [socket] = self.connector.sockets
        return socket.session

    def request(self, mid: int, route: str, body: Any) -> Any:
        """Send a request; return the decoded body of the response to it (C{None} if none)."""
        for package in self.send(message(MessageType.REQUEST, mid, route, body)):
            decoded = decode_message(package.body)
            if package.type == PackageType.DATA and decoded.id == mid:
                return orjson.loads(decoded.body) if decoded.body else None
        return None

    def notify(self, route: str, body: Any) -> list[Package]:
        return self.send(message(MessageType.NOTIFY, 0, route, body))


def message(mtype: MessageType, mid: int, route: str, body: Any) -> bytes:
    """A DATA package carrying one JSON-bodied request or notify."""
    return encode_package(PackageType.DATA, encode_message(mtype, mid, route, orjson.dumps(body)))


def pushes(packages: list[Package]) -> list[tuple[Any, Any]]:
    """The C{(route, body)} of every PUSH among C{packages}."""
    found = []
    for package in packages:
        if package.type != PackageType.DATA:
            continue
        decoded = decode_message(package.body)
        if decoded.type == MessageType.PUSH:
            found.append((decoded.route, orjson.loads(decoded.body)))
    return found


def serve(app: Application, config: ConnectorConfig = CONFIG) -> tuple[Connector, task.Clock]:
    """A connector for C{app} on a fresh clock."""
    clock = task.Clock()
    return Connector(app, clock, config), clock


def masked_frame(payload: bytes) -> bytes:
    """One final, masked binary client frame (payloads under 126 bytes)."""
    assert len(payload) < 126
    return client_frame(payload)


def frame_payloads(data: bytes) -> list[bytes]:
    """The payloads of the unmasked server frames in C{data} (each under 126 bytes)."""
    payloads = []
    while data:
        size = data[1] & 0x7F
        assert size < 126, data
        payloads.append(data[2 : 2 + size])
        data = data[2 + size :]
    return payloads
