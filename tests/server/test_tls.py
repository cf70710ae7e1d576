"""TLS over real loopback sockets, with a throwaway certificate made in C{setUp}.

Two set-ups:

  - an C{ssl:} endpoint: raw TCP over TLS (libpomelo2's C{tr_uv_tls}) and WSS clients share the
    port, because classification runs on the decrypted bytes (protocol.md §2.6);
  - C{PomeloConnectorFactory(connector, tls=...)} on a C{tcp:} endpoint: plain TCP, plain
    WebSocket, TCP over TLS and WSS all on one port, told apart by the first byte.

Each client shakes hands, sends a request, and is kicked: a graceful close must get through TLS
(whose close waits for the slow-reader guard to unregister).
"""

from __future__ import annotations

import json
import os
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor, ssl, task
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pomelo_twisted.demo import make_app
from pomelo_twisted.ops import tap
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import PomeloConnectorFactory, load_tls_options
from tests.support.loopback import (
    KICK,
    RawClient,
    Recorder,
    TrackingFactory,
    WSClient,
    close_everything,
)
from tests.support.tls import make_certificate
from tests.support.transports import PEER, Transport

ENTRY = "connector.entryHandler.entry"


class TLSTrackingFactory(TrackingFactory):
    """L{TrackingFactory} that also takes TLS on its plain port."""

    def __init__(self, connector: Connector, tls: Any) -> None:
        super().__init__(connector)
        PomeloConnectorFactory.__init__(self, connector, tls=tls)


class TLSHarness(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.key_path, self.cert_path, cert_pem = make_certificate(self.mktemp())
        self.client_tls = ssl.optionsForClientTLS(
            "localhost", trustRoot=ssl.Certificate.loadPEM(cert_pem)
        )
        # The test clients never send heartbeats: a long heartbeat timeout keeps a slow run (a
        # loaded machine) from closing them between steps.
        self.connector = Connector(make_app(), reactor, ConnectorConfig(heartbeat_timeout=60))
        self.clients: list[Any] = []

    @inlineCallbacks
    def listen(self, description: str, factory: TrackingFactory) -> Any:
        self.factory = factory
        port = yield serverFromString(reactor, description).listen(factory)
        self.addCleanup(lambda: close_everything(self.clients, self.factory))
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def endpoint(self, secure: bool) -> Any:
        if secure:
            return SSL4ClientEndpoint(reactor, "127.0.0.1", self.port, self.client_tls, timeout=5)
        return TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5)

    @inlineCallbacks
    def tcp_client(self, secure: bool) -> Any:
        client = yield self.endpoint(secure).connect(Factory.forProtocol(RawClient))
        self.clients.append(client)
        return client

    @inlineCallbacks
    def ws_client(self, secure: bool) -> Any:
        scheme = "wss" if secure else "ws"
        factory = WebSocketClientFactory(f"{scheme}://localhost:{self.port}", reactor=reactor)
        factory.protocol = WSClient
        client = yield self.endpoint(secure).connect(factory)
        self.clients.append(client)
        yield client.opened
        return client

    @inlineCallbacks
    def exercise(self, clients: list[Any], uids: list[str]) -> Any:
        """Handshake, a request and a bind on each client; then kick each by uid."""
        for mid, (client, uid) in enumerate(zip(clients, uids, strict=True), 1):
            answer = yield client.shake_hands()
            self.assertEqual(answer["code"], 200)
            body = yield client.call(1, ENTRY, {})
            self.assertEqual(body, {"code": 200, "msg": "game server is ok."})
            body = yield client.call(mid + 1, "connector.entryHandler.bind", {"uid": uid})
            self.assertEqual(body, {"code": 200, "uid": uid})
        names = sorted(s.transport.name for s in self.connector.sockets)
        self.assertEqual(names, sorted(["tcp", "ws"] * (len(clients) // 2)))
        for client, uid in zip(clients, uids, strict=True):
            self.assertEqual(self.connector.session_service.kick(uid, "bye"), 1)
            kick = yield client.next_of(KICK)
            self.assertEqual(json.loads(kick), {"reason": "bye"})
            yield client.closed  # the graceful close got through
        yield DeferredList(self.factory.lost)
        self.assertEqual(self.connector.sockets, set())
        self.assertEqual(self.connector.connection_count, 0)


class SSLEndpointTests(TLSHarness):
    """An C{ssl:} endpoint: TLS only, classified after decryption."""

    @inlineCallbacks
    def setUp(self) -> Any:
        super().setUp()
        description = (
            f"ssl:0:interface=127.0.0.1:privateKey={self.key_path}:certKey={self.cert_path}"
        )
        yield self.listen(description, TrackingFactory(self.connector))

    @inlineCallbacks
    def test_tcp_and_wss_on_one_port(self) -> Any:
        tcp = yield self.tcp_client(secure=True)
        wss = yield self.ws_client(secure=True)
        yield self.exercise([tcp, wss], ["tls-tcp", "wss"])

    @inlineCallbacks
    def test_plain_client_gets_nothing(self) -> Any:
        """A plaintext Pomelo client on a TLS-only port fails the TLS handshake."""
        client = yield self.endpoint(secure=False).connect(Factory.forProtocol(Recorder))
        self.clients.append(client)
        client.transport.write(b"\x01\x00\x00\x09" + b'{"sys":1}')
        yield client.closed
        self.assertNotIn(b'"code"', client.received)


class PlainAndTLSOnOnePortTests(TLSHarness):
    """C{tls=} on a C{tcp:} endpoint: a first byte of 0x16 starts TLS, anything else is plain."""

    @inlineCallbacks
    def setUp(self) -> Any:
        super().setUp()
        tls = load_tls_options(self.key_path, self.cert_path)
        yield self.listen("tcp:0:interface=127.0.0.1", TLSTrackingFactory(self.connector, tls))

    @inlineCallbacks
    def test_four_kinds_of_client(self) -> Any:
        tcp = yield self.tcp_client(secure=False)
        ws = yield self.ws_client(secure=False)
        tls_tcp = yield self.tcp_client(secure=True)
        wss = yield self.ws_client(secure=True)
        yield self.exercise([tcp, ws, tls_tcp, wss], ["tcp", "ws", "tls-tcp", "wss"])

    @inlineCallbacks
    def test_admission_counts_a_tls_connection_once(self) -> Any:
        client = yield self.tcp_client(secure=True)
        yield client.shake_hands()
        self.assertEqual(self.connector.connection_count, 1)
        self.assertEqual(self.connector.connections_from("127.0.0.1"), 1)

    @inlineCallbacks
    def test_garbage_after_tls(self) -> Any:
        """The decrypted stream is classified like a plain one: garbage is aborted."""
        client = yield self.endpoint(secure=True).connect(Factory.forProtocol(Recorder))
        self.clients.append(client)
        client.transport.write(b"\xff\x00")
        yield client.closed
        self.assertEqual(client.received, b"")


class SlowReaderOverSocketsTests(TLSHarness):
    """The slow-reader cap on real sockets: Twisted's producer signals, plain and under TLS."""

    @inlineCallbacks
    def setUp(self) -> Any:
        super().setUp()
        self.connector = Connector(
            make_app(), reactor, ConnectorConfig(heartbeat_timeout=60, max_outbound_buffer=200_000)
        )
        tls = load_tls_options(self.key_path, self.cert_path)
        yield self.listen("tcp:0:interface=127.0.0.1", TLSTrackingFactory(self.connector, tls))

    @inlineCallbacks
    def flood(self, secure: bool) -> Any:
        client = yield self.tcp_client(secure)
        yield client.shake_hands()
        client.transport.pauseProducing()  # the client stops reading
        [socket] = self.connector.sockets
        session = socket.session
        payload = {"x": "a" * 60_000}
        sent = 0
        with capturedLogs() as events:
            # Up to 64 MiB, a push per reactor turn, until the server gives up on the client.
            while socket.session is not None and sent < 64 * 1024 * 1024:
                session.push_message("onData", payload)
                sent += 60_000
                yield deferLater(reactor, 0, lambda: None)
            yield DeferredList(self.factory.lost)
        self.assertLess(sent, 64 * 1024 * 1024)
        self.assertTrue(any("max_outbound_buffer" in formatEvent(e) for e in events))
        self.assertEqual(self.connector.connection_count, 0)

    def test_plain(self) -> Any:
        return self.flood(secure=False)

    def test_tls(self) -> Any:
        return self.flood(secure=True)


class TLSSniffTests(SynchronousTestCase):
    """The TLS branch of the sniffer, in memory."""

    def setUp(self) -> None:
        key_path, cert_path, _ = make_certificate(self.mktemp())
        self.clock = task.Clock()
        self.connector = Connector(make_app(), self.clock, ConnectorConfig())
        self.factory = PomeloConnectorFactory(
            self.connector, tls=load_tls_options(key_path, cert_path)
        )

    def connect(self) -> tuple[Any, Transport]:
        protocol = self.factory.buildProtocol(PEER)
        transport = Transport(peerAddress=PEER)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_stalled_tls_handshake_times_out(self) -> None:
        """A TLS record starts a fresh first-byte deadline, covering the TLS handshake."""
        protocol, transport = self.connect()
        self.clock.advance(9)
        protocol.dataReceived(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        self.assertIsInstance(protocol._inner, TLSMemoryBIOProtocol)
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.connector.connection_count, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_tls_inside_tls(self) -> None:
        """On an ssl: endpoint the transport is already TLS: a decrypted 0x16 is garbage."""
        protocol, transport = self.connect()
        protocol.transport = TLSMemoryBIOProtocol.__new__(TLSMemoryBIOProtocol)
        self.assertIsNone(protocol._tlsFactory())
        protocol.transport = transport
        self.assertIsNotNone(protocol._tlsFactory())

    def test_plain_factory_aborts_tls(self) -> None:
        """Without tls= a TLS ClientHello is garbage, as before."""
        factory = PomeloConnectorFactory(self.connector)
        self.assertIsNone(factory.tlsFactory)
        protocol = factory.buildProtocol(PEER)
        transport = Transport(peerAddress=PEER)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"\x16\x03\x01")
        self.assertTrue(transport.disconnected)


class TLSOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        self.key_path, self.cert_path, _ = make_certificate(self.directory)

    def test_load(self) -> None:
        options = load_tls_options(self.key_path, self.cert_path)
        self.assertIsInstance(options, ssl.CertificateOptions)

    def test_chain(self) -> None:
        """Certificates after the first in the file are sent as the chain."""
        _, _, other_pem = make_certificate(os.path.join(self.directory, "ca"), "ca")
        with open(self.cert_path, "ab") as f:
            f.write(other_pem)
        options = load_tls_options(self.key_path, self.cert_path)
        self.assertEqual(len(options.extraCertChain), 1)

    def test_mismatch(self) -> None:
        other_key, _, _ = make_certificate(os.path.join(self.directory, "other"))
        self.assertRaises(ValueError, load_tls_options, other_key, self.cert_path)

    def test_no_certificate(self) -> None:
        self.assertRaises(ValueError, load_tls_options, self.key_path, self.key_path)
        self.assertRaises(OSError, load_tls_options, self.key_path, "/nonexistent")

    def test_twistd_options(self) -> None:
        options = tap.Options()
        options.parseOptions(["--tls-key", self.key_path, "--tls-cert", self.cert_path])
        self.assertIsInstance(options["tls"], ssl.CertificateOptions)
        service = tap.makeService(options)
        self.assertIsNotNone(service.factory.tlsFactory)  # type: ignore[attr-defined]
        options = tap.Options()
        options.parseOptions([])
        self.assertIsNone(tap.makeService(options).factory.tlsFactory)  # type: ignore[attr-defined]

    def test_key_without_cert(self) -> None:
        from twisted.python import usage

        options = tap.Options()
        self.assertRaises(usage.UsageError, options.parseOptions, ["--tls-key", self.key_path])
