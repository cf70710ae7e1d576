"""The transport layer in memory: the hybrid sniffer, the raw TCP and the WebSocket protocols.

Everything runs on a C{task.Clock} and C{StringTransport} or iosim, so no test here touches a
socket or the global reactor. The connector writes at the end of a reactor turn
(C{callLater(0, ...)}), so the tests advance the clock by 0 to see a turn's writes.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.demo import make_app
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import (
    HEAD_TOO_LARGE_ANSWER,
    MAX_REQUEST_HEAD,
    NOT_A_WEBSOCKET_ANSWER,
    HybridProtocol,
    PomeloConnectorFactory,
)
from pomelo_twisted.server.tcp import PomeloTCPProtocol
from pomelo_twisted.server.websocket import SERVER_NAME, PomeloWebSocketProtocol
from tests.support.servers import run_python
from tests.support.transports import (
    ACK,
    CONFIG,
    HANDSHAKE,
    HANDSHAKE_RESPONSE,
    HEARTBEAT,
    PEER,
    UPGRADE,
    Harness,
    Transport,
    WebSocketMemoryHarness,
    client_frame,
)

ENTRY_REQUEST = bytes.fromhex("04 00 00 21 00 01 1c") + b"connector.entryHandler.entry{}"
ENTRY_RESPONSE = bytes.fromhex("04 00 00 29 04 01") + b'{"code":200,"msg":"game server is ok."}'
PUSH_ON_CHAT = bytes.fromhex("04 00 00 14 06 06") + b'onChat{"msg":"hi"}'
KICK = bytes.fromhex("05 00 00 11") + b'{"reason":"kick"}'

ACCEPT = b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"


def server_frame(payload: bytes, opcode: int = 2) -> bytes:
    """One final, unmasked server frame (payloads under 126 bytes)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, len(payload)]) + payload


class TCPTests(Harness):
    """First byte 0x01-0x05: the raw TCP path (protocol.md §19.1)."""

    def test_transcript(self) -> None:
        """The whole §19.1 exchange, byte for byte."""
        protocol, transport = self.connect()
        self.receive(protocol, HANDSHAKE)
        self.assertEqual(self.take(transport), HANDSHAKE_RESPONSE)
        socket = self.only_socket()
        self.assertIsInstance(socket.transport, PomeloTCPProtocol)
        self.assertEqual(socket.transport.name, "tcp")
        self.assertIs(socket.transport.transport, transport)  # the real transport, not a wrapper
        self.assertIs(transport.noDelay, True)
        self.assertEqual(socket.getPeer(), PEER)

        self.receive(protocol, ACK)
        self.assertEqual(self.take(transport), HEARTBEAT)
        self.receive(protocol, ENTRY_REQUEST)
        self.assertEqual(self.take(transport), ENTRY_RESPONSE)
        self.clock.advance(3)
        self.receive(protocol, HEARTBEAT)
        self.assertEqual(self.take(transport), HEARTBEAT)

        session = socket.session
        self.assertTrue(session.push_message("onChat", {"msg": "hi"}))
        self.clock.advance(0)
        self.assertEqual(self.take(transport), PUSH_ON_CHAT)
        self.assertFalse(transport.disconnecting)

        self.connector.session_service.kick_by_session_id(session.id, "kick")
        self.clock.advance(0)
        self.assertEqual(self.take(transport), KICK)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)  # graceful, not aborted

        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.connector.sockets, set())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_handshake_split_everywhere(self) -> None:
        """The handshake split at every byte position, the header included (§20 item 1)."""
        for i in range(1, len(HANDSHAKE)):
            protocol, transport = self.connect()
            self.receive(protocol, HANDSHAKE[:i])
            self.assertEqual(transport.value(), b"", i)
            self.receive(protocol, HANDSHAKE[i:])
            self.assertEqual(transport.value(), HANDSHAKE_RESPONSE, i)

    def test_byte_at_a_time(self) -> None:
        protocol, transport = self.connect()
        for byte in HANDSHAKE + ACK + ENTRY_REQUEST:
            protocol.dataReceived(bytes([byte]))
        self.clock.advance(0)
        self.assertEqual(transport.value(), HANDSHAKE_RESPONSE + HEARTBEAT + ENTRY_RESPONSE)

    def test_everything_in_one_read(self) -> None:
        """The packages of one read are all handled, and answered with one write."""
        protocol, transport = self.connect()
        self.receive(protocol, HANDSHAKE + ACK + ENTRY_REQUEST)
        self.assertEqual(transport.value(), HANDSHAKE_RESPONSE + HEARTBEAT + ENTRY_RESPONSE)

    def test_every_package_type_is_tcp(self) -> None:
        """Any package type as the first byte classifies the connection as raw TCP (§2.3)."""
        for type_ in range(1, 6):
            protocol, transport = self.connect()
            self.receive(protocol, bytes([type_]))
            self.assertIsInstance(protocol._inner, PomeloTCPProtocol, type_)
            self.assertFalse(transport.disconnecting)
            protocol.connectionLost(Failure(ConnectionDone()))

    def test_bad_package_aborts(self) -> None:
        """A bad header after classification aborts through the TCP protocol."""
        protocol, transport = self.connect()
        self.receive(protocol, HANDSHAKE, b"\x06\x00\x00\x00")
        self.assertTrue(transport.disconnected)

    def test_connection_lost_reaches_the_socket(self) -> None:
        protocol, _ = self.connect()
        self.receive(protocol, HANDSHAKE + ACK)
        self.assertIsNotNone(self.only_socket().session)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.connector.sockets, set())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ClassificationTests(Harness):
    """Garbage, deadlines, and HTTP requests that are not WebSocket upgrades."""

    def test_garbage_first_byte_aborts(self) -> None:
        """Neither a package type nor an uppercase letter: aborted at once, nothing sent."""
        # 0x16 is a TLS ClientHello on a plain port, 0x3C a Flash policy request.
        for byte in (0x00, 0x06, 0x16, 0x3C, 0x40, 0x5B, 0x61, 0x7F, 0x80, 0xFF):
            protocol, transport = self.connect()
            self.receive(protocol, bytes([byte]) + b"\x00\x00\x00")
            self.assertTrue(transport.disconnected, hex(byte))
            self.assertEqual(transport.value(), b"")
            self.assertEqual(self.connector.sockets, set())
            self.assertEqual(self.connection_timers(), [])
            self.receive(protocol, HANDSHAKE)  # later reads are ignored
            self.assertEqual(transport.value(), b"")

    def test_first_byte_timeout(self) -> None:
        timeout = self.config.first_byte_timeout
        assert timeout is not None
        _, transport = self.connect()
        self.clock.advance(timeout - 0.001)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.001)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")

    def test_timeout_covers_a_partial_method(self) -> None:
        """C{GE} is not classified yet: the deadline still runs."""
        timeout = self.config.first_byte_timeout
        assert timeout is not None
        protocol, transport = self.connect()
        self.receive(protocol, b"GE")
        self.clock.advance(timeout)
        self.assertTrue(transport.disconnected)

    def test_timeout_covers_a_trickled_request_head(self) -> None:
        timeout = self.config.first_byte_timeout
        assert timeout is not None
        protocol, transport = self.connect()
        self.receive(protocol, UPGRADE[:40])
        self.clock.advance(timeout)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")

    def test_classification_cancels_the_deadline(self) -> None:
        timeout = self.config.first_byte_timeout
        assert timeout is not None
        protocol, transport = self.connect()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.receive(protocol, b"\x01")
        self.clock.advance(timeout)
        self.assertFalse(transport.disconnecting)  # only the handshake deadline is left now

    def test_connection_lost_cancels_the_deadline(self) -> None:
        protocol, _ = self.connect()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_deadline(self) -> None:
        self.connector = Connector(make_app(), self.clock, ConnectorConfig(first_byte_timeout=None))
        self.factory = PomeloConnectorFactory(self.connector)
        self.connect()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_other_methods_get_400(self) -> None:
        """Any request but a GET: 400 and a graceful close once the head is read (§20 item 9)."""
        for method in (b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"GEX", b"G"):
            request = method + b" / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            protocol, transport = self.connect()
            self.receive(protocol, request)
            self.assertEqual(transport.value(), NOT_A_WEBSOCKET_ANSWER, method)
            self.assertTrue(transport.disconnecting)
            self.assertFalse(transport.disconnected)
            self.assertEqual(self.connection_timers(), [])
            self.assertEqual(self.connector.sockets, set())

    def test_400_answer(self) -> None:
        self.assertTrue(NOT_A_WEBSOCKET_ANSWER.startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        head, _, body = NOT_A_WEBSOCKET_ANSWER.partition(b"\r\n\r\n")
        self.assertIn(b"\r\nConnection: close", head)
        self.assertIn(b"\r\nContent-Length: %d" % len(body), head)

    def test_post_split_everywhere(self) -> None:
        """The answer comes after the blank line ending the head, however the head is split."""
        request = b"POST /x HTTP/1.1\r\nHost: x\r\n\r\n"
        for i in range(1, len(request)):
            protocol, transport = self.connect()
            self.receive(protocol, request[:i])
            self.assertEqual(transport.value(), b"", i)
            self.assertFalse(transport.disconnecting)
            self.receive(protocol, request[i:])
            self.assertEqual(transport.value(), NOT_A_WEBSOCKET_ANSWER, i)

    def test_request_head_cap(self) -> None:
        """A request head over 8 KiB: 431 and close, whether or not it would become a GET."""
        for start in (b"POST /", b"GET /"):
            protocol, transport = self.connect()
            self.receive(protocol, start + b"a" * 4096)
            self.assertEqual(transport.value(), b"")
            self.receive(protocol, b"a" * 4096)
            self.assertEqual(transport.value(), HEAD_TOO_LARGE_ANSWER, start)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(self.connector.sockets, set())

    def test_request_head_at_the_cap(self) -> None:
        """A head of exactly L{MAX_REQUEST_HEAD} bytes is still read (and answered normally)."""
        line = b"POST / HTTP/1.1\r\n"
        head = line + b"X: " + b"a" * (MAX_REQUEST_HEAD - len(line) - 7) + b"\r\n\r\n"
        self.assertEqual(len(head), MAX_REQUEST_HEAD)
        protocol, transport = self.connect()
        self.receive(protocol, head)
        self.assertEqual(transport.value(), NOT_A_WEBSOCKET_ANSWER)

    def test_get_without_upgrade(self) -> None:
        """Autobahn answers a plain GET with 426 (our headers added) and closes (§2.3 REC)."""
        protocol, transport = self.connect()
        self.receive(protocol, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(
            transport.value(),
            b"HTTP/1.1 426 HTTP Upgrade header missing\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: close\r\n"
            b"\r\n",
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.connector.sockets, set())

    def test_bad_gets(self) -> None:
        """Other GETs that are no WebSocket upgrade get a 4xx/5xx status line and a close."""
        cases = {
            b"GET / HTTP/1.0\r\nHost: x\r\n\r\n": b"HTTP/1.1 505 ",
            b"GET / HTTP/1.1\r\n\r\n": b"HTTP/1.1 400 ",  # no Host
            UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: h2c"): b"HTTP/1.1 400 ",
            UPGRADE.replace(b"Version: 13", b"Version: 99"): b"HTTP/1.1 400 ",
        }
        for request, status in cases.items():
            protocol, transport = self.connect()
            self.receive(protocol, request)
            self.assertTrue(transport.value().startswith(status), transport.value())
            self.assertIn(b"\r\nConnection: close\r\n", transport.value())
            self.assertTrue(transport.disconnecting)
            self.assertEqual(self.connector.sockets, set())


class WebSocketBytesTests(Harness):
    """The WebSocket path at the byte level, over a StringTransport (protocol.md §19.2)."""

    def upgrade(self) -> tuple[HybridProtocol, Transport]:
        protocol, transport = self.connect()
        self.receive(protocol, UPGRADE)
        response = self.take(transport)
        self.assertTrue(response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), response)
        return protocol, transport

    def test_upgrade_response(self) -> None:
        protocol, transport = self.connect()
        self.receive(protocol, UPGRADE)
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))
        self.assertIn(ACCEPT, response)
        self.assertIn(b"\r\nServer: %s\r\n" % SERVER_NAME.encode(), response)
        # No subprotocol offered, none answered; no compression negotiated.
        self.assertNotIn(b"Sec-WebSocket-Protocol", response)
        self.assertNotIn(b"Sec-WebSocket-Extensions", response)
        self.assertTrue(response.endswith(b"\r\n\r\n"))
        socket = self.only_socket()
        self.assertIsInstance(socket.transport, PomeloWebSocketProtocol)
        self.assertEqual(socket.transport.name, "ws")
        self.assertIs(socket.transport.transport, transport)
        self.assertEqual(socket.getPeer(), PEER)

    def test_upgrade_split_everywhere(self) -> None:
        """The upgrade split at every byte, C{G}/C{ET }, C{GE}/C{T } and C{GET}/C{ } included."""
        for i in range(1, len(UPGRADE)):
            protocol, transport = self.connect()
            self.receive(protocol, UPGRADE[:i])
            self.assertEqual(transport.value(), b"", i)
            self.receive(protocol, UPGRADE[i:])
            self.assertIn(ACCEPT, transport.value(), i)

    def test_upgrade_one_byte_at_a_time(self) -> None:
        protocol, transport = self.connect()
        self.receive(protocol, *(bytes([b]) for b in UPGRADE))
        self.assertIn(ACCEPT, transport.value())

    def test_subprotocol_echo(self) -> None:
        """The first subprotocol offered is echoed (protocol.md §2.5 MUST)."""
        protocol, transport = self.connect()
        offer = b"Sec-WebSocket-Protocol: pomelo, binary\r\n\r\n"
        self.receive(protocol, UPGRADE[:-2] + offer)
        self.assertIn(b"\r\nSec-WebSocket-Protocol: pomelo\r\n", transport.value())

    def test_transcript(self) -> None:
        """§19.2's frames, byte for byte: one package per binary message, both ways."""
        protocol, transport = self.upgrade()
        self.assertEqual(client_frame(ACK), bytes.fromhex("82 84 12 34 56 78 10 34 56 78"))
        self.receive(protocol, client_frame(HANDSHAKE))
        self.assertEqual(self.take(transport), bytes.fromhex("82 26") + HANDSHAKE_RESPONSE)
        self.receive(protocol, client_frame(ACK))
        self.assertEqual(self.take(transport), bytes.fromhex("82 04 03 00 00 00"))
        self.receive(protocol, client_frame(ENTRY_REQUEST))
        self.assertEqual(self.take(transport), bytes.fromhex("82 2d") + ENTRY_RESPONSE)
        session = self.only_socket().session
        session.push_message("onChat", {"msg": "hi"})
        self.clock.advance(0)
        self.assertEqual(self.take(transport), bytes.fromhex("82 18") + PUSH_ON_CHAT)
        session.kick("kick")
        self.clock.advance(0)
        # The KICK, then a close frame (1000): a graceful WebSocket close.
        self.assertEqual(
            self.take(transport), bytes.fromhex("82 15") + KICK + bytes.fromhex("88 02 03 e8")
        )
        self.assertFalse(transport.disconnecting)  # waiting for the client's close frame
        self.receive(protocol, client_frame(bytes.fromhex("03 e8"), opcode=8))
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.connector.sockets, set())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_upgrade_and_frames_in_one_read(self) -> None:
        """Frames pipelined behind the upgrade request are replayed to Autobahn too."""
        protocol, transport = self.connect()
        self.receive(protocol, UPGRADE + client_frame(HANDSHAKE))
        self.assertTrue(
            transport.value().endswith(b"\r\n\r\n" + bytes.fromhex("82 26") + HANDSHAKE_RESPONSE)
        )

    def test_fragmented_message(self) -> None:
        """A package split over continuation frames is one message, hence one package."""
        protocol, transport = self.upgrade()
        first = bytearray(client_frame(HANDSHAKE[:10]))
        first[0] = 0x02  # binary, not final
        rest = bytearray(client_frame(HANDSHAKE[10:], opcode=0))
        self.receive(protocol, bytes(first), bytes(rest))
        self.assertEqual(self.take(transport), bytes.fromhex("82 26") + HANDSHAKE_RESPONSE)

    def test_websocket_timeout_before_the_pomelo_handshake(self) -> None:
        """After the upgrade, the socket's handshake deadline applies; the close is graceful."""
        _, transport = self.upgrade()
        handshake_timeout = self.config.handshake_timeout
        assert handshake_timeout is not None
        self.clock.advance(handshake_timeout)
        self.assertEqual(self.take(transport), bytes.fromhex("88 02 03 e8"))
        # The client never answers the close: Autobahn drops the connection.
        self.clock.advance(5)
        self.assertTrue(transport.disconnected)

    def test_closing_handshake_deadline_is_exact(self) -> None:
        """A kicked client has exactly C{kick_close_timeout} to answer the close frame.

        Autobahn's own timer (txaio's batched timer) rounded the deadline down to a whole
        second of the clock, so the server could reset a kicked client before the client had
        even read its KICK (a reset discards what the client has not read)."""
        self.clock.advance(0.9)  # a deadline at 1.9 (or 5.9) s was cut to 1 (or 5) s
        protocol, transport = self.upgrade()
        self.receive(protocol, client_frame(HANDSHAKE), client_frame(ACK))
        self.take(transport)
        self.only_socket().kick("bye")
        self.assertTrue(self.take(transport).endswith(bytes.fromhex("88 02 03 e8")))
        timeout = self.config.kick_close_timeout
        self.clock.advance(timeout - 0.001)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.002)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class WebSocketMemoryTests(WebSocketMemoryHarness):
    def test_request_response_and_kick(self) -> None:
        client, pump = self.ready()
        self.send(client, pump, ENTRY_REQUEST)
        self.assertEqual(client.messages, [(ENTRY_RESPONSE, True)])
        self.clock.advance(3)
        self.send(client, pump, HEARTBEAT)
        self.assertEqual(client.messages[-1], (HEARTBEAT, True))
        self.only_socket().kick("bye")
        pump.flush()
        self.assertEqual(
            client.messages[-1], (bytes.fromhex("05 00 00 10") + b'{"reason":"bye"}', True)
        )
        self.assertEqual(client.closed, (True, 1000, None))
        self.assertEqual(self.connector.sockets, set())

    def test_subprotocol(self) -> None:
        client, _ = self.open(["pomelo", "binary"])
        self.assertEqual(client.websocket_protocol_in_use, "pomelo")
        client, _ = self.open()
        self.assertIsNone(client.websocket_protocol_in_use)

    def test_two_packages_in_one_message(self) -> None:
        """Both are handled in order; each answer leaves as its own message (Pomelo 2.2.7's
        browser client reads only the first package of a message)."""
        client, pump = self.open()
        self.send(client, pump, HANDSHAKE)
        self.send(client, pump, ACK + ENTRY_REQUEST)
        self.assertEqual(
            client.messages,
            [(HANDSHAKE_RESPONSE, True), (HEARTBEAT, True), (ENTRY_RESPONSE, True)],
        )

    def test_truncated_package_closes(self) -> None:
        for message in (ENTRY_REQUEST[:-1], ACK[:3], HEARTBEAT + b"\x04\x00"):
            client, pump = self.ready()
            self.send(client, pump, message)
            self.assertIsNotNone(client.closed, message)
            self.assertFalse(client.closed[0])  # aborted: a protocol error
            self.assertEqual(client.messages, [])
            self.assertEqual(self.connector.sockets, set())

    def test_oversize_message_refused(self) -> None:
        """A message over the maximum package (plus its header) is refused with 1009."""
        self.connector = Connector(
            make_app(),
            self.clock,
            ConnectorConfig(heartbeat=3, use_dict=False, use_protobuf=False, max_package_size=64),
        )
        self.factory = PomeloConnectorFactory(self.connector)
        client, pump = self.open()
        self.send(client, pump, HANDSHAKE)  # 66 bytes: under the 68-byte cap
        self.assertEqual(client.messages, [(HANDSHAKE_RESPONSE, True)])
        self.send(client, pump, bytes.fromhex("04 00 00 41") + b"x" * 65)
        self.assertIsNotNone(client.closed)
        self.assertEqual(client.closed[1], 1009)
        self.assertEqual(self.connector.sockets, set())

    def test_text_message_closes_1003(self) -> None:
        """The text-frame policy: close 1003, after what was already queued."""
        client, pump = self.ready()
        client.sendMessage(ENTRY_REQUEST, isBinary=True)
        client.sendMessage(b'{"route":"connector.entryHandler.entry"}', isBinary=False)
        pump.flush()
        self.assertEqual(client.messages, [(ENTRY_RESPONSE, True)])
        self.assertIsNotNone(client.closed)
        self.assertEqual(client.closed[:2], (True, 1003))
        self.assertEqual(self.connector.sockets, set())

    def test_client_close(self) -> None:
        client, pump = self.ready()
        [socket] = self.connector.sockets
        sid = socket.session.id
        client.sendClose(1000)
        pump.flush()
        self.assertEqual(client.closed, (True, 1000, None))
        self.assertEqual(self.connector.sockets, set())
        self.assertIsNone(self.connector.session_service.get(sid))

    def test_writes_after_closing_are_dropped(self) -> None:
        client, pump = self.ready()
        ws = self.only_socket().transport
        client.sendClose(1000)
        pump.pump()  # the server has the close frame, the client not yet the reply
        ws.writePackages(HEARTBEAT)  # no Disconnected error
        ws.loseConnection()
        pump.flush()
        self.assertEqual(client.messages, [])
        self.assertEqual(client.closed, (True, 1000, None))


class FactoryTests(SynchronousTestCase):
    """How the factories are put together."""

    def test_websocket_options(self) -> None:
        clock = task.Clock()
        config = ConnectorConfig(max_package_size=1000, handshake_timeout=7)
        factory = PomeloConnectorFactory(Connector(make_app(), clock, config))
        ws = factory.wsFactory
        self.assertIs(ws.reactor, clock)
        self.assertIs(ws.connector, factory.connector)
        self.assertEqual(ws.maxFramePayloadSize, 1004)
        self.assertEqual(ws.maxMessagePayloadSize, 1004)
        self.assertEqual(ws.openHandshakeTimeout, 7)
        self.assertEqual(ws.autoPingInterval, 0)
        self.assertIsNone(ws.perMessageCompressionAccept([object()]))
        self.assertFalse(ws.failByDrop)
        self.assertTrue(ws.tcpNoDelay)
        self.assertFalse(ws.webStatus)
        self.assertEqual(ws.server, SERVER_NAME)
        self.assertIs(factory.tcpFactory.connector, factory.connector)

    def test_default_open_handshake_timeout(self) -> None:
        config = ConnectorConfig(handshake_timeout=None)
        factory = PomeloConnectorFactory(Connector(make_app(), task.Clock(), config))
        self.assertEqual(factory.wsFactory.openHandshakeTimeout, 5)

    def test_for_app(self) -> None:
        clock = task.Clock()
        app = make_app()
        factory = PomeloConnectorFactory.for_app(app, clock, CONFIG)
        self.assertIs(factory.connector.app, app)
        self.assertIs(factory.connector.reactor, clock)
        self.assertIs(factory.connector.config, CONFIG)
        protocol = factory.buildProtocol(PEER)
        self.assertIsInstance(protocol, HybridProtocol)
        self.assertIs(protocol.factory, factory)

    def test_no_global_reactor(self) -> None:
        """Building the factory and serving TCP never imports the global reactor."""
        code = (
            "import sys\n"
            "from twisted.internet import task\n"
            "from twisted.internet.testing import StringTransport\n"
            "from pomelo_twisted.server.connector import Connector\n"
            "from pomelo_twisted.demo import make_app\n"
            "from pomelo_twisted.server.hybrid import PomeloConnectorFactory\n"
            "clock = task.Clock()\n"
            "factory = PomeloConnectorFactory.for_app(make_app(), clock)\n"
            "p = factory.buildProtocol(None)\n"
            "p.makeConnection(StringTransport())\n"
            "p.dataReceived(b'\\x01\\x00\\x00\\x09{\"sys\":1}')\n"
            "clock.advance(0)\n"
            "assert p.transport.value().startswith(b'\\x01'), p.transport.value()\n"
            "assert 'twisted.internet.reactor' not in sys.modules\n"
        )
        result = run_python(code)
        self.assertEqual(result.returncode, 0, result.stderr.decode())
