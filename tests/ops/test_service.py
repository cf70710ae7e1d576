"""ConnectorService: listening on several endpoints, and the drain on stop (SIGTERM)."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from pomelo_twisted.demo import make_app
from pomelo_twisted.ops.service import ConnectorService
from pomelo_twisted.protocol.package import PackageType, encode_package
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import PomeloConnectorFactory
from pomelo_twisted.server.interfaces import IPomeloTransport


@implementer(IPomeloTransport)
class RecordingTransport:
    name = "tcp"

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False
        self.aborted = False

    def writePackages(self, data: bytes) -> None:
        self.written.append(data)

    def writePackageSequence(self, packages: list[bytes]) -> None:
        self.writePackages(b"".join(packages))

    def loseConnection(self) -> None:
        self.closing = True

    def abortConnection(self) -> None:
        self.aborted = True

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40000)


KICK = encode_package(PackageType.KICK, b'{"reason":"maintenance"}')


class DrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.connector = Connector(make_app(), self.reactor, ConnectorConfig(heartbeat=3))
        self.service = ConnectorService(
            PomeloConnectorFactory(self.connector),
            ["tcp:3010"],
            self.reactor,
            stop_reason="maintenance",
            drain_timeout=3.0,
        )
        self.service.startService()

    def working_socket(self) -> tuple[object, RecordingTransport]:
        transport = RecordingTransport()
        sock = self.connector.build_socket(transport)
        sock.dataReceived(encode_package(PackageType.HANDSHAKE, b'{"sys":1}'))
        self.reactor.advance(0)
        sock.dataReceived(encode_package(PackageType.HANDSHAKE_ACK))
        self.reactor.advance(0)
        return sock, transport

    def test_stop_kicks_and_waits(self) -> None:
        """Stop listening, kick every client with the reason, fire when they have gone."""
        sock1, t1 = self.working_socket()
        sock2, t2 = self.working_socket()
        d = self.service.stopService()
        self.assertTrue(self.reactor.tcpServers)  # the port existed ...
        self.assertNoResult(d)
        for t in (t1, t2):
            self.assertEqual(t.written[-1][-len(KICK) :], KICK)
            self.assertTrue(t.closing)
        sock1.connectionLost(None)  # type: ignore[attr-defined]
        self.assertNoResult(d)
        sock2.connectionLost(None)  # type: ignore[attr-defined]
        self.successResultOf(d)
        self.assertEqual(self.connector.session_service.sessions_count, 0)

    def test_stop_gives_up_after_deadline(self) -> None:
        """A client that never goes does not hold the shutdown past the drain timeout."""
        self.working_socket()
        d = self.service.stopService()
        self.assertNoResult(d)
        self.reactor.advance(2.9)
        self.assertNoResult(d)
        self.reactor.advance(0.2)
        self.successResultOf(d)

    def test_stop_without_clients(self) -> None:
        self.successResultOf(self.service.stopService())
