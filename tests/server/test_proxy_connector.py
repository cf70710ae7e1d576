"""Real client addresses behind a proxy, through the connector (docs/operations.md).

PROXY headers (v1, v2) read by the hybrid sniffer from trusted balancers only, forwarded
headers read by the WebSocket protocol from trusted HTTP proxies, and what must see the
client instead of the balancer: admission (per-address cap, blocklist), C{getPeer()}, the
session's address and the close line. Everything runs on a C{task.Clock} with
StringTransports; the connector writes at the end of a reactor turn, so the tests advance the
clock by 0 to see a turn's writes.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import ssl
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.ops import tap
from pomelo_twisted.ops.metrics import ConnectorMetrics
from pomelo_twisted.protocol.package import PackageType, encode_package
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.hybrid import HybridProtocol, PomeloConnectorFactory, load_tls_options
from pomelo_twisted.server.proxy import V2_SIGNATURE
from tests.support import transports
from tests.support.tls import make_certificate
from tests.support.transports import Transport

BALANCER = IPv4Address("TCP", "10.0.0.5", 41000)
CLIENT = IPv4Address("TCP", "198.51.100.9", 56324)
OTHER_CLIENT = IPv4Address("TCP", "198.51.100.10", 56325)
DIRECT = IPv4Address("TCP", "203.0.113.77", 50000)

CONFIG = ConnectorConfig(
    heartbeat=3,
    use_dict=False,
    use_protobuf=False,
    proxy_protocol=True,
    trusted_proxies=("10.0.0.0/8", "2001:db8:ffff::/48"),
)

HANDSHAKE = encode_package(
    PackageType.HANDSHAKE, b'{"sys":{"type":"test","version":"0.1"},"user":{}}'
)
ACK = encode_package(PackageType.HANDSHAKE_ACK, b"")
UPGRADE_HEAD = (
    b"GET / HTTP/1.1\r\n"
    b"Host: game.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)
UPGRADE = UPGRADE_HEAD + b"\r\n"


def upgrade(*headers: bytes) -> bytes:
    """A WebSocket upgrade request with C{headers} (whole lines, without CRLF) added."""
    return UPGRADE_HEAD + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


def frame(payload: bytes) -> bytes:
    """A masked binary client frame (payloads under 126 bytes)."""
    mask = b"\x12\x34\x56\x78"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x82, 0x80 | len(payload)]) + mask + masked


def v1(client: Any = CLIENT) -> bytes:
    kind = "TCP6" if isinstance(client, IPv6Address) else "TCP4"
    server = "2001:db8::1" if kind == "TCP6" else "203.0.113.5"
    return f"PROXY {kind} {client.host} {server} {client.port} 3010\r\n".encode()


def v2(client: Any = CLIENT, tlvs: bytes = b"") -> bytes:
    if isinstance(client, IPv6Address):
        family, server = 0x21, ipaddress.IPv6Address("2001:db8::1")
    else:
        family, server = 0x11, ipaddress.IPv4Address("203.0.113.5")  # type: ignore[assignment]
    block = (
        ipaddress.ip_address(client.host).packed
        + server.packed
        + struct.pack("!HH", client.port, 3010)
        + tlvs
    )
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(block)) + block


V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"


def messages(events: list[LogEvent]) -> list[str]:
    return [formatEvent(event) for event in events]


class Harness(transports.Harness):
    """A connector with metrics on a clock; connections through its hybrid factory."""

    config = CONFIG

    def build(self, config: ConnectorConfig | None = None, **changes: Any) -> None:
        """A fresh connector with C{config} (the class's by default), C{changes} applied."""
        super().build(config or self.config, **changes)
        self.metrics = ConnectorMetrics(self.connector, registry=CollectorRegistry())

    def connect(self, peer: Any = BALANCER) -> tuple[HybridProtocol, Transport]:
        return super().connect(peer)

    def refused(self, reason: str) -> float:
        text = self.metrics.exposition().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "pomelo_refused_total" and sample.labels["reason"] == reason:
                    return sample.value
        raise KeyError(reason)

    @staticmethod
    def lose(protocol: HybridProtocol) -> None:
        protocol.connectionLost(Failure(ConnectionDone()))

    def assertAborted(self, transport: Transport) -> None:
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")

    def assertServing(self, transport: Transport) -> None:
        """The raw TCP handshake was answered 200."""
        self.assertFalse(transport.disconnected)
        self.assertIn(b'{"code":200', transport.value())


class ProxyHeaderTests(Harness):
    """PROXY headers from a trusted balancer: the client they name is the peer."""

    def check_client(self, client: Any = CLIENT) -> None:
        socket = self.only_socket()
        self.assertEqual(socket.getPeer(), client)
        self.assertEqual(socket.transport.getPeer(), client)
        self.assertEqual(self.connector.connections_from(client.host), 1)
        self.assertEqual(self.connector.connections_from(BALANCER.host), 0)

    def test_v1(self) -> None:
        protocol, transport = self.connect()
        self.receive(protocol, v1() + HANDSHAKE)
        self.assertServing(transport)
        self.check_client()

    def test_v2(self) -> None:
        protocol, transport = self.connect()
        self.receive(protocol, v2(tlvs=b"\x01\x00\x02h2") + HANDSHAKE)
        self.assertServing(transport)
        self.check_client()

    def test_ipv6(self) -> None:
        client = IPv6Address("TCP", "2001:db8::9", 4711)
        for header in (v1(client), v2(client)):
            protocol, transport = self.connect()
            self.receive(protocol, header + HANDSHAKE)
            self.assertServing(transport)
            self.check_client(client)
            self.lose(protocol)

    def test_balancer_over_ipv6(self) -> None:
        balancer = IPv6Address("TCP", "2001:db8:ffff::2", 41000)
        protocol, transport = self.connect(balancer)
        self.receive(protocol, v2() + HANDSHAKE)
        self.assertServing(transport)
        self.check_client()

    def test_split_byte_by_byte(self) -> None:
        """A header (and the first package) trickling in one byte per read."""
        for header in (v1(), v2(tlvs=b"\x01\x00\x02h2")):
            protocol, transport = self.connect()
            data = header + HANDSHAKE
            self.receive(protocol, *(data[i : i + 1] for i in range(len(data))))
            self.assertServing(transport)
            self.check_client()
            self.lose(protocol)

    def test_header_alone_then_data(self) -> None:
        """The header in a read of its own; the client's first byte classifies later."""
        protocol, transport = self.connect()
        self.receive(protocol, v2())
        self.assertFalse(transport.disconnected)
        self.assertEqual(self.connector.sockets, set())
        self.receive(protocol, HANDSHAKE)
        self.assertServing(transport)
        self.check_client()

    def test_websocket(self) -> None:
        """After the header the connection is sniffed as usual: a WebSocket upgrade."""
        protocol, transport = self.connect()
        self.receive(protocol, v1() + UPGRADE[:10], UPGRADE[10:])
        self.assertIn(b" 101 ", transport.value())
        self.check_client()
        self.receive(protocol, frame(HANDSHAKE))
        self.assertIn(b'{"code":200', transport.value())

    def test_session_and_close_line(self) -> None:
        """The session's address and the close line name the client, not the balancer."""
        protocol, _transport = self.connect()
        self.receive(protocol, v1() + HANDSHAKE + ACK)
        socket = self.only_socket()
        self.assertEqual(socket.session.address, CLIENT)
        sid = socket.session.id
        self.assertEqual(
            self.connector.session_service.get_client_address_by_session_id(sid), CLIENT
        )
        with capturedLogs() as events:
            socket.kick("bye")
            self.clock.advance(0)
        [line] = [m for m in messages(events) if m.startswith("connection closed")]
        self.assertIn("peer=198.51.100.9:56324 ", line)

    def test_local_and_unknown(self) -> None:
        """LOCAL (a health check) and UNKNOWN name no client: the balancer's address stands."""
        for header in (V2_LOCAL, b"PROXY UNKNOWN\r\n"):
            protocol, transport = self.connect()
            self.receive(protocol, header + HANDSHAKE)
            self.assertServing(transport)
            self.assertEqual(self.only_socket().getPeer(), BALANCER)
            self.lose(protocol)

    def test_released_as_client(self) -> None:
        protocol, _transport = self.connect()
        self.receive(protocol, v1() + HANDSHAKE)
        self.assertEqual(self.connector.connection_count, 1)
        self.lose(protocol)
        self.assertEqual(self.connector.connection_count, 0)
        self.assertEqual(self.connector.connections_from(CLIENT.host), 0)

    def test_deadline(self) -> None:
        """The first-byte deadline covers the header: a balancer that stalls is aborted."""
        protocol, transport = self.connect()
        self.receive(protocol, v1()[:20])
        self.clock.advance(CONFIG.first_byte_timeout or 0)
        self.assertAborted(transport)
        self.assertEqual(self.refused("first_byte_timeout"), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RefusedHeaderTests(Harness):
    """Missing, broken or untrusted headers: aborted, counted, logged now and then."""

    def refuse(self, peer: Any, *chunks: bytes) -> list[str]:
        with capturedLogs() as events:
            protocol, transport = self.connect(peer)
            self.receive(protocol, *chunks)
        self.assertAborted(transport)
        # No deadline left running (the crowd log's summary timer is the connector's).
        self.assertEqual(
            [
                c
                for c in self.clock.getDelayedCalls()
                if c.func != self.connector.crowd_log._summarise
            ],
            [],
        )
        self.lose(protocol)
        self.assertEqual(self.connector.connection_count, 0)
        return messages(events)

    def test_trusted_without_header(self) -> None:
        for data in (HANDSHAKE, UPGRADE, b"\x16\x03\x01"):
            self.clock.advance(self.connector.crowd_log.interval)
            [line] = self.refuse(BALANCER, data)
            self.assertIn("refusing IPv4Address(type='TCP', host='10.0.0.5'", line)
            self.assertIn("without a valid header: no PROXY protocol header", line)
        self.assertEqual(self.refused("proxy_header"), 3)

    def test_trusted_garbled(self) -> None:
        for data in (
            b"PROXY TCP4 198.51.100.9 203.0.113.5 99999 3010\r\n",
            b"PROXY TCP4 198.51.100.9\n",
            V2_SIGNATURE + b"\x22",
            V2_SIGNATURE + b"\x21\x11\xff\xff",
            b"PROXY UNKNOWN " + b"x" * 100,
        ):
            self.clock.advance(self.connector.crowd_log.interval)
            [line] = self.refuse(BALANCER, data)
            self.assertIn("without a valid header: PROXY v", line)

    def test_untrusted_sends_header(self) -> None:
        """Anyone could claim any address: a header from outside the trusted networks."""
        for data in (v1(), v2(), b"PROXY ", V2_SIGNATURE):
            self.clock.advance(self.connector.crowd_log.interval)
            [line] = self.refuse(DIRECT, data)
            self.assertIn("a PROXY protocol header from a peer not in trusted_proxies", line)
        self.assertEqual(self.refused("proxy_header"), 4)

    def test_untrusted_header_split(self) -> None:
        """C{"P"}, C{"PROX"}: still undecided (could be HTTP); the space decides."""
        self.refuse(DIRECT, b"P", b"ROX", b"Y", b" TCP4")

    def test_untrusted_direct_clients_served(self) -> None:
        """Clients may still connect directly: only a header is refused from them."""
        protocol, transport = self.connect(DIRECT)
        self.receive(protocol, HANDSHAKE)
        self.assertServing(transport)
        self.assertEqual(self.only_socket().getPeer(), DIRECT)
        self.assertEqual(self.connector.connections_from(DIRECT.host), 1)
        protocol, transport = self.connect(DIRECT)
        self.receive(protocol, b"P", b"U", UPGRADE[:0] + b"T / HTTP/1.1\r\n\r\n")
        self.assertIn(b"400 Bad Request", transport.value())
        protocol, transport = self.connect(DIRECT)
        self.receive(protocol, b"P", UPGRADE)  # "PGET": HTTP, not PROXY, not a GET
        self.assertIn(b"400 Bad Request", transport.value())

    def test_log_throttled(self) -> None:
        """A misconfigured balancer must not write a line per connection."""
        self.assertEqual(len(self.refuse(BALANCER, HANDSHAKE)), 1)
        for _ in range(5):
            self.assertEqual(self.refuse(BALANCER, HANDSHAKE), [])
        with capturedLogs() as events:
            self.clock.advance(self.connector.crowd_log.interval)
        self.assertEqual(
            messages(events),
            [
                "refusing connections over their PROXY or forwarded header: 5 more in the last "
                "10 s (logged once per interval)"
            ],
        )
        [line] = self.refuse(BALANCER, HANDSHAKE)
        self.assertIn("without a valid header", line)
        self.assertEqual(self.refused("proxy_header"), 7)

    def test_off(self) -> None:
        """Without proxy_protocol a header is just bytes: not a package type nor a GET."""
        self.build(proxy_protocol=False)
        protocol, transport = self.connect()
        self.receive(protocol, V2_SIGNATURE)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.refused("bad_first_byte"), 1)


class AdmissionTests(Harness):
    """Per-address cap and blocklist apply to the client the header names."""

    def test_per_ip_cap_on_the_client(self) -> None:
        self.build(max_connections_per_ip=2)
        for _ in range(2):
            protocol, transport = self.connect()
            self.receive(protocol, v2() + HANDSHAKE)
            self.assertServing(transport)
        self.assertEqual(self.connector.connections_from(CLIENT.host), 2)
        with capturedLogs() as events:
            protocol, transport = self.connect()
            self.receive(protocol, v2() + HANDSHAKE)
        self.assertAborted(transport)
        self.assertIn(
            "refusing IPv4Address(type='TCP', host='198.51.100.9', port=56324): 2 connections "
            "open from 198.51.100.9, max_connections_per_ip is 2",
            messages(events),
        )
        self.assertEqual(self.refused("max_connections_per_ip"), 1)
        self.lose(protocol)
        self.assertEqual(self.connector.connections_from(CLIENT.host), 2)
        self.assertEqual(self.connector.connection_count, 2)
        protocol, transport = self.connect()  # another client through the same balancer
        self.receive(protocol, v2(OTHER_CLIENT) + HANDSHAKE)
        self.assertServing(transport)

    def test_balancer_not_capped(self) -> None:
        """The balancer carries every client: its own connections are not capped per address."""
        self.build(max_connections_per_ip=2)
        transports = [self.connect()[1] for _ in range(5)]
        self.assertFalse(any(t.disconnected for t in transports))
        self.assertEqual(self.connector.connections_from(BALANCER.host), 0)
        self.assertEqual(self.connector.connection_count, 5)

    def test_max_connections_counts_balancer_connections(self) -> None:
        self.build(max_connections=2)
        self.connect()
        self.connect()
        _, transport = self.connect()
        self.assertAborted(transport)

    def test_blocklist_on_the_client(self) -> None:
        self.build(blocklist=("198.51.100.0/24",))
        with capturedLogs() as events:
            protocol, transport = self.connect()
            self.receive(protocol, v1() + HANDSHAKE)
        self.assertAborted(transport)
        self.assertEqual(self.refused("blocklist"), 1)
        self.assertTrue(any("198.51.100.9 is on the blocklist" in m for m in messages(events)))
        self.lose(protocol)
        self.assertEqual(self.connector.connection_count, 0)

    def test_close_blocked_sees_the_client(self) -> None:
        protocol, transport = self.connect()
        self.receive(protocol, v1() + HANDSHAKE)
        other, other_transport = self.connect()
        self.receive(other, v1(OTHER_CLIENT) + HANDSHAKE)
        self.connector.blocklist.add(CLIENT.host)
        self.assertEqual(self.connector.close_blocked(), 1)
        self.assertTrue(transport.disconnected)
        self.assertFalse(other_transport.disconnected)

    def test_blocked_balancer(self) -> None:
        """The blocklist still applies to the connection's own address."""
        self.build(blocklist=(BALANCER.host,))
        _, transport = self.connect()
        self.assertAborted(transport)


class ForwardedHeaderTests(Harness):
    """WebSocket through an HTTP proxy: X-Forwarded-For or Forwarded, from trusted peers."""

    config = replace(CONFIG, proxy_protocol=False)

    def upgrade(self, *headers: bytes, peer: Any = BALANCER) -> tuple[HybridProtocol, Transport]:
        protocol, transport = self.connect(peer)
        self.receive(protocol, upgrade(*headers))
        return protocol, transport

    def test_x_forwarded_for(self) -> None:
        protocol, transport = self.upgrade(b"X-Forwarded-For: 1.1.1.1, 198.51.100.9, 10.0.0.7")
        self.assertIn(b" 101 ", transport.value())
        socket = self.only_socket()
        self.assertEqual(socket.getPeer(), IPv4Address("TCP", "198.51.100.9", 0))
        self.assertEqual(socket.transport.peer, "tcp4:198.51.100.9:0")  # Autobahn's own text
        self.assertEqual(self.connector.connections_from("198.51.100.9"), 1)
        self.assertEqual(self.connector.connections_from("1.1.1.1"), 0)
        self.receive(protocol, frame(HANDSHAKE), frame(ACK))
        self.assertEqual(socket.session.address, IPv4Address("TCP", "198.51.100.9", 0))
        self.lose(protocol)
        self.assertEqual(self.connector.connections_from("198.51.100.9"), 0)
        self.assertEqual(self.connector.connection_count, 0)

    def test_header_lines_joined(self) -> None:
        """Two header lines are one list, in order: the proxy appended to the last one."""
        self.upgrade(b"X-Forwarded-For: 198.51.100.1", b"x-forwarded-for: 198.51.100.9")
        self.assertEqual(self.only_socket().getPeer().host, "198.51.100.9")

    def test_untrusted_peer_ignored(self) -> None:
        self.upgrade(b"X-Forwarded-For: 198.51.100.9", peer=DIRECT)
        self.assertEqual(self.only_socket().getPeer(), DIRECT)
        self.assertEqual(self.connector.connections_from(DIRECT.host), 1)

    def test_no_header(self) -> None:
        """A trusted peer without the header (a health check): its own address stands."""
        self.upgrade()
        self.assertEqual(self.only_socket().getPeer(), BALANCER)

    def test_forwarded(self) -> None:
        """With forwarded_header="forwarded", only Forwarded is read, never X-Forwarded-For."""
        self.build(forwarded_header="forwarded")
        self.upgrade(
            b'Forwarded: for=1.1.1.1, for="[2001:db8::9]:4711";proto=https',
            b"X-Forwarded-For: 192.0.2.1",
        )
        self.assertEqual(self.only_socket().getPeer(), IPv6Address("TCP", "2001:db8::9", 4711))

    def test_only_the_configured_header(self) -> None:
        """The proxy passes the other header on as the client wrote it: it is not read."""
        self.upgrade(b"Forwarded: for=192.0.2.1")
        self.assertEqual(self.only_socket().getPeer(), BALANCER)
        self.build(forwarded_header=None)
        self.upgrade(b"X-Forwarded-For: 192.0.2.1")
        self.assertEqual(self.only_socket().getPeer(), BALANCER)

    def test_garbled(self) -> None:
        with capturedLogs() as events:
            _protocol, transport = self.upgrade(b"X-Forwarded-For: 1.1.1.1, garbage")
        self.assertIn(b"HTTP/1.1 400 ", transport.value())
        self.assertTrue(transport.disconnecting or transport.disconnected)
        self.assertEqual(self.connector.sockets, set())
        [line] = [m for m in messages(events) if "refusing" in m]
        self.assertIn("a trusted proxy's forwarded address 'garbage' is not an address", line)
        self.assertEqual(self.refused("forwarded_header"), 1)

    def test_blocklist_on_the_client(self) -> None:
        self.build(blocklist=("198.51.100.9",))
        protocol, transport = self.upgrade(b"X-Forwarded-For: 198.51.100.9")
        self.assertIn(b"HTTP/1.1 403 ", transport.value())
        self.assertEqual(self.connector.sockets, set())
        self.assertEqual(self.refused("blocklist"), 1)
        self.lose(protocol)
        self.assertEqual(self.connector.connection_count, 0)

    def test_per_ip_cap_on_the_client(self) -> None:
        self.build(max_connections_per_ip=1)
        self.upgrade(b"X-Forwarded-For: 198.51.100.9")
        protocol, transport = self.upgrade(b"X-Forwarded-For: 198.51.100.9")
        self.assertIn(b"HTTP/1.1 429 ", transport.value())
        self.assertEqual(self.refused("max_connections_per_ip"), 1)
        self.lose(protocol)
        self.assertEqual(self.connector.connections_from("198.51.100.9"), 1)
        self.assertEqual(self.connector.connection_count, 1)

    def test_after_proxy_header(self) -> None:
        """PROXY names a trusted proxy (an L4 balancer before an HTTP one): its header counts."""
        self.build(proxy_protocol=True)
        protocol, _ = self.connect()
        self.receive(
            protocol,
            v1(IPv4Address("TCP", "10.0.0.8", 1234)) + upgrade(b"X-Forwarded-For: 198.51.100.9"),
        )
        self.assertEqual(self.only_socket().getPeer(), IPv4Address("TCP", "198.51.100.9", 0))
        self.assertEqual(self.connector.connections_from("198.51.100.9"), 1)
        protocol, _transport = self.connect()
        self.receive(protocol, v1() + upgrade(b"X-Forwarded-For: 192.0.2.1"))
        self.assertIn(CLIENT, [s.getPeer() for s in self.connector.sockets])


class Received(Protocol):
    """The client inside TLS: sends C{first} once connected, keeps what it reads."""

    def __init__(self, first: bytes) -> None:
        self.first = first
        self.data = b""

    def connectionMade(self) -> None:
        self.transport.write(self.first)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class TLSTests(Harness):
    """A PROXY header in clear, then TLS on the plain port (HAProxy in TCP mode, TLS passed
    through): the decrypted stream's connection sees the client too."""

    def setUp(self) -> None:
        super().setUp()
        key_path, cert_path, _ = make_certificate(self.mktemp())
        self.factory = PomeloConnectorFactory(
            self.connector, tls=load_tls_options(key_path, cert_path)
        )

    def tls_client(self, protocol: HybridProtocol, transport: Transport, first: bytes) -> Received:
        """Shake hands over TLS with the server side C{protocol}; return the client inside."""
        inner = Received(first)
        client_factory = TLSMemoryBIOFactory(
            ssl.CertificateOptions(), True, Factory.forProtocol(lambda: inner), clock=self.clock
        )
        client = client_factory.buildProtocol(None)
        client_transport = StringTransport()
        client.makeConnection(client_transport)
        for _ in range(20):  # a TLS handshake takes a few round trips
            outbound, inbound = client_transport.value(), transport.value()
            if not outbound and not inbound:
                break
            client_transport.clear()
            transport.clear()
            if outbound:
                self.receive(protocol, outbound)
            if inbound:
                client.dataReceived(inbound)
            self.clock.advance(0)
        return inner

    def test_tls_after_header(self) -> None:
        protocol, transport = self.connect()
        self.receive(protocol, v2())
        inner = self.tls_client(protocol, transport, HANDSHAKE)
        self.assertIn(b'{"code":200', inner.data)
        socket = self.only_socket()
        self.assertEqual(socket.getPeer(), CLIENT)
        self.assertEqual(self.connector.connections_from(CLIENT.host), 1)

    def test_wss_forwarded_after_header(self) -> None:
        """Inside TLS the WebSocket's forwarded header re-counts the same admission."""
        protocol, transport = self.connect()
        self.receive(protocol, v1(IPv4Address("TCP", "10.0.0.8", 1234)))
        inner = self.tls_client(protocol, transport, upgrade(b"X-Forwarded-For: 198.51.100.9"))
        self.assertIn(b" 101 ", inner.data)
        self.assertEqual(self.only_socket().getPeer(), IPv4Address("TCP", "198.51.100.9", 0))
        self.assertEqual(self.connector.connections_from("198.51.100.9"), 1)
        self.lose(protocol)
        self.assertEqual(self.connector.connection_count, 0)
        self.assertEqual(self.connector.connections_from("198.51.100.9"), 0)


class ConfigTests(SynchronousTestCase):
    def test_validation(self) -> None:
        with self.assertRaisesRegex(ValueError, "proxy_protocol needs trusted_proxies"):
            ConnectorConfig(proxy_protocol=True)
        with self.assertRaisesRegex(ValueError, "not a string"):
            ConnectorConfig(trusted_proxies="10.0.0.0/8")
        with self.assertRaises(ValueError):
            ConnectorConfig(trusted_proxies=("10.0.0.0/33",))
        with self.assertRaisesRegex(ValueError, "forwarded_header"):
            ConnectorConfig(forwarded_header="x-real-ip")
        self.assertEqual(
            ConnectorConfig(forwarded_header="Forwarded").forwarded_header, "forwarded"
        )
        self.assertIsNone(ConnectorConfig(forwarded_header="").forwarded_header)
        self.assertEqual(
            ConnectorConfig(trusted_proxies=["10.0.0.1"]).trusted_proxies, ("10.0.0.1",)
        )

    def test_twistd_options(self) -> None:
        options = tap.Options()
        options.parseOptions(
            [
                "--proxy-protocol",
                "--trusted-proxy",
                "10.0.0.0/8",
                "--trusted-proxy",
                "2001:db8::/32",
            ]
        )
        config = options.connector_config()
        self.assertTrue(config.proxy_protocol)
        self.assertEqual(config.trusted_proxies, ("10.0.0.0/8", "2001:db8::/32"))
        self.assertEqual(config.forwarded_header, "x-forwarded-for")
        options = tap.Options()
        options.parseOptions(["--trusted-proxy", "10.0.0.1", "--forwarded-header", "none"])
        self.assertIsNone(options.connector_config().forwarded_header)
        self.assertFalse(options.connector_config().proxy_protocol)

    def test_twistd_errors(self) -> None:
        for argv, message in (
            (["--proxy-protocol"], "--proxy-protocol needs --trusted-proxy"),
            (["--trusted-proxy", "nonsense"], "--trusted-proxy 'nonsense'"),
            (["--forwarded-header", "x-real-ip"], "--forwarded-header must be"),
        ):
            with self.assertRaisesRegex(usage.UsageError, message):
                tap.Options().parseOptions(argv)
