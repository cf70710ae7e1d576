"""One connection's state machine and framing through L{HybridSocket} (protocol.md §3, §4,
§7.6, §15.2, §20 items 19-22 and 43): packages accepted or refused in each state, over TCP and
WebSocket, and malformed input closing the connection cleanly.
"""

from __future__ import annotations

from pomelo_twisted.protocol.connection import ConnectionState
from pomelo_twisted.protocol.message import MessageType
from pomelo_twisted.protocol.package import PackageType, encode_package
from tests.support.connector import (
    ACK,
    HANDSHAKE_1,
    HEARTBEAT,
    Client,
    ConnectorTestCase,
    data,
    kick_package,
    make_test_app,
    notify,
    packages,
    request,
    response,
)
from tests.support.vectors import h, load_vectors


class StateTests(ConnectorTestCase):
    def setUp(self) -> None:
        self.app = make_test_app()
        self.connector(self.app)

    def test_data_before_handshake(self) -> None:
        """§20 item 19: DATA in C{INITED} is dropped: no answer, no handler call."""
        client = self.client()
        self.assertEqual(client.exchange(request(1, "connector.testHandler.echo")), b"")
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]
        self.assertFalse(client.transport.closed)

    def test_data_before_ack(self) -> None:
        client = self.client()
        client.handshake()
        self.assertEqual(client.exchange(request(1, "connector.testHandler.echo")), b"")
        self.assertEqual(client.exchange(notify("connector.testHandler.echo")), b"")
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]
        self.assertIs(client.state, ConnectionState.WAIT_ACK)

    def test_heartbeat_before_handshake(self) -> None:
        """§20 item 20."""
        client = self.client()
        self.assertEqual(client.exchange(HEARTBEAT), b"")
        self.assertIs(client.state, ConnectionState.INITED)

    def test_heartbeat_before_ack(self) -> None:
        client = self.client()
        client.handshake()
        self.assertEqual(client.exchange(HEARTBEAT), b"")
        self.assertIs(client.state, ConnectionState.WAIT_ACK)

    def test_ack_in_inited_ignored(self) -> None:
        """§20 item 21: the early ACK does not count; the real one still works."""
        client = self.client()
        self.assertEqual(client.exchange(ACK), b"")
        self.assertIs(client.state, ConnectionState.INITED)
        self.assertIn(b'"code":200', client.handshake())
        self.assertIs(client.state, ConnectionState.WAIT_ACK)
        self.assertEqual(client.exchange(ACK), HEARTBEAT)
        self.assertIs(client.state, ConnectionState.WORKING)

    def test_ack_in_working_ignored(self) -> None:
        client = self.client().connect()
        self.assertEqual(client.exchange(ACK), b"")
        self.assertIs(client.state, ConnectionState.WORKING)

    def test_ack_with_body_accepted(self) -> None:
        """§3.2: upstream ignores a body on types 2 and 3."""
        client = self.client()
        client.handshake()
        self.assertEqual(
            client.exchange(encode_package(PackageType.HANDSHAKE_ACK, b"xx")), HEARTBEAT
        )
        self.assertEqual(client.exchange(encode_package(PackageType.HEARTBEAT, b"yy")), HEARTBEAT)

    def test_kick_from_client_aborts(self) -> None:
        """§20 item 22, in every state."""
        for stage in ("inited", "wait_ack", "working"):
            self.connector(self.app)
            client = self.client()
            if stage != "inited":
                client.handshake()
            if stage == "working":
                client.exchange(ACK)
            self.assertEqual(client.exchange(kick_package("x")), b"", stage)
            self.assertClosedAndClean(client, aborted=True)

    def test_packages_before_kick_in_chunk_handled(self) -> None:
        """Packages are handled in order; the KICK after a request aborts only when reached."""
        client = self.client().connect()
        client.feed(request(1, "connector.testHandler.echo") + kick_package("x"))
        self.assertEqual(self.app.calls, [("echo", {})])  # type: ignore[attr-defined]
        self.assertEqual(client.transport.aborted, 1)
        # The abort drops what the turn had queued: nothing is written to an aborted transport.
        self.assertEqual(client.turn(), [])
        self.assertEqual(client.transport.late_writes, [])

    def test_handshake_and_ack_in_one_chunk(self) -> None:
        """§3.4: packages reach the state machine one at a time, in arrival order."""
        client = self.client()
        written = client.exchange(HANDSHAKE_1 + ACK)
        self.assertEqual(
            [p.type for p in packages(written)], [PackageType.HANDSHAKE, PackageType.HEARTBEAT]
        )
        self.assertIs(client.state, ConnectionState.WORKING)

    def test_ack_and_request_in_one_chunk(self) -> None:
        """A client that sends its first request right behind the ACK gets it answered."""
        client = self.client()
        client.handshake()
        written = client.exchange(
            ACK + request(1, "connector.testHandler.echo", b'{"a":1}') + HEARTBEAT
        )
        self.assertEqual(written, HEARTBEAT + response(1, b'{"a":1}') + HEARTBEAT)


class StateWebSocketTests(StateTests):
    """The same over WebSocket; several packages in one message are handled in order."""

    ws = True

    def test_truncated_message_aborts(self) -> None:
        client = self.client()
        client.feed(HANDSHAKE_1[:-1])
        self.assertEqual(client.turn(), [])
        self.assertClosedAndClean(client, aborted=True)

    def test_trailing_bytes_abort(self) -> None:
        client = self.client()
        client.feed(HANDSHAKE_1 + b"\x02\x00")
        self.assertEqual(client.turn(), [])
        self.assertClosedAndClean(client, aborted=True)


class FramingTests(ConnectorTestCase):
    """The transport-independent framing checks that end in the socket (§3, §15.2)."""

    def test_unknown_package_type_aborts(self) -> None:
        for header in (b"\x00\x00\x00\x00", b"\x06\x00\x00\x00", b"\xff\x00\x00\x01"):
            for ws in (False, True):
                self.connector()
                client = Client(self.conn, self.clock, ws=ws)
                client.feed(header)
                self.assertEqual(client.turn(), [])
                self.assertClosedAndClean(client, aborted=True)

    def test_oversized_package_aborts_at_header(self) -> None:
        self.connector(max_package_size=100)
        client = self.client().connect()
        client.feed(b"\x04\x00\x00\x65")
        self.assertClosedAndClean(client, aborted=True)

    def test_handshake_split_everywhere(self) -> None:
        self.connector()
        expected = bytes.fromhex(load_vectors("handshake.json")["cases"][0]["response_hex"])
        for cut in range(1, len(HANDSHAKE_1)):
            self.connector()
            client = self.client()
            client.feed(HANDSHAKE_1[:cut])
            client.feed(HANDSHAKE_1[cut:])
            self.assertEqual(b"".join(client.turn()), expected, cut)

    def test_ack_and_request_byte_by_byte(self) -> None:
        self.connector(make_test_app())
        client = self.client()
        client.handshake()
        for byte in ACK + request(7, "connector.testHandler.echo", b"[7]"):
            client.feed(bytes((byte,)))
        self.assertEqual(b"".join(client.turn()), HEARTBEAT + response(7, b"[7]"))

    def test_packages_before_bad_header_handled(self) -> None:
        """§3.4: packages are handled as they complete, so the packages in front of a bad
        header in the same chunk are handled before the abort, as with any other split."""
        app = make_test_app()
        self.connector(app)
        client = self.client().connect()
        client.feed(request(1, "connector.testHandler.echo") + h("00 00 00 00"))
        self.assertEqual(client.transport.aborted, 1)
        self.assertEqual(app.calls, [("echo", {})])  # type: ignore[attr-defined]

    def test_input_after_close_ignored(self) -> None:
        self.connector()
        client = self.client().connect()
        client.sock.kick("bye")
        client.take()
        client.feed(HEARTBEAT)
        client.sock.messageReceived(HEARTBEAT)
        self.assertEqual(client.turn(), [])


class MalformedTests(ConnectorTestCase):
    def setUp(self) -> None:
        self.app = make_test_app()
        self.connector(self.app)

    def assertAborts(self, raw: bytes) -> None:
        self.connector(self.app)
        bystander = self.client().connect()
        client = self.client().connect()
        client.take()
        client.feed(raw)
        self.assertEqual(client.turn(), [], raw.hex())
        self.assertIs(client.state, ConnectionState.CLOSED)
        self.assertEqual(client.transport.aborted, 1, raw.hex())
        # Other connections are unaffected.
        self.assertEqual(
            bystander.exchange(request(1, "connector.testHandler.echo")), response(1, b"{}")
        )
        bystander.lose()
        self.assertClosedAndClean(client, aborted=True)

    def test_empty_data_body(self) -> None:
        self.assertAborts(h("04 00 00 00"))

    def test_truncated_id(self) -> None:
        self.assertAborts(encode_package(PackageType.DATA, h("00 80")))
        self.assertAborts(encode_package(PackageType.DATA, h("00")))

    def test_overlong_id(self) -> None:
        self.assertAborts(encode_package(PackageType.DATA, h("00 80 80 80 80 80 01 00")))
        self.assertAborts(encode_package(PackageType.DATA, h("00 ff ff ff ff 1f 00")))

    def test_route_past_end(self) -> None:
        self.assertAborts(encode_package(PackageType.DATA, h("00 01 05 61 62")))
        self.assertAborts(encode_package(PackageType.DATA, h("02 05 61")))

    def test_missing_route(self) -> None:
        self.assertAborts(encode_package(PackageType.DATA, h("00 01")))
        self.assertAborts(encode_package(PackageType.DATA, h("02")))

    def test_truncated_route_code(self) -> None:
        self.assertAborts(encode_package(PackageType.DATA, h("01 01 00")))
        self.assertAborts(encode_package(PackageType.DATA, h("03 00")))

    def test_route_not_utf8(self) -> None:
        self.assertAborts(encode_package(PackageType.DATA, h("00 01 02 ff fe")))

    def test_message_types_4_to_7(self) -> None:
        for flag in (0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F):
            self.assertAborts(encode_package(PackageType.DATA, bytes((flag, 1, 1, 0x61))))

    def test_client_response_and_push_dropped(self) -> None:
        """§7.6, B20: type 2 and 3 from a client: dropped, no answer, connection kept."""
        client = self.client().connect()
        for raw in (
            data(MessageType.RESPONSE, 1, None, b"{}"),
            data(MessageType.PUSH, 0, "connector.testHandler.echo", b"{}"),
            data(MessageType.PUSH, 0, 1, b"{}"),
        ):
            self.assertEqual(client.exchange(raw), b"")
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]
        self.assertIs(client.state, ConnectionState.WORKING)
        self.assertEqual(
            client.exchange(request(1, "connector.testHandler.echo")), response(1, b"{}")
        )

    def test_malformed_before_working_ignored(self) -> None:
        """DATA before C{WORKING} is dropped unread, even when malformed."""
        client = self.client()
        client.handshake()
        self.assertEqual(client.exchange(h("04 00 00 00")), b"")
        self.assertIs(client.state, ConnectionState.WAIT_ACK)


class MalformedWebSocketTests(MalformedTests):
    ws = True
