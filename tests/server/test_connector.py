"""In-memory tests of the connector as a whole: the seams between L{Connector}, L{HybridSocket}
and their interfaces, and any bytes at all fed through them (protocol.md §20 item 43).

The connector's behaviour by topic lives next to this module: test_handshake (§5), test_socket
(the state machine, framing, malformed input), test_heartbeat (§6), test_messages (§7, §8),
test_dispatch (§10, filters), test_kick (§11, §12.4); the harness is L{tests.support.connector}.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pomelo_twisted.protocol.connection import ConnectionState
from pomelo_twisted.protocol.package import encode_package
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.interfaces import IPomeloTransport
from pomelo_twisted.services.interfaces import ISessionConnection
from tests.support.connector import (
    ACK,
    HANDSHAKE_1,
    Client,
    ConnectorTestCase,
    FakeTransport,
    make_connector,
)

# --- the seams ------------------------------------------------------------------------------


class SeamTests(ConnectorTestCase):
    def test_fake_transport_provides_interface(self) -> None:
        """The fake transport of these tests is a genuine L{IPomeloTransport}."""
        self.assertTrue(verifyObject(IPomeloTransport, FakeTransport()))

    def test_socket_provides_session_connection(self) -> None:
        self.connector()
        self.assertTrue(verifyObject(ISessionConnection, self.client().sock))

    def test_build_socket_registers(self) -> None:
        self.connector()
        client = self.client()
        self.assertIn(client.sock, self.conn.sockets)
        self.assertIs(client.state, ConnectionState.INITED)


# --- robustness: any input (§20 item 43) --------------------------------------------------------

_HANDSHAKE_ACK = HANDSHAKE_1 + ACK

_package = st.builds(
    lambda t, body: encode_package(t, body),
    st.sampled_from([1, 2, 3, 4, 4, 4, 5]),
    st.one_of(
        st.binary(max_size=40),
        st.builds(
            lambda flag, mid, route, body: bytes((flag,)) + mid + route + body,
            st.integers(0, 255),
            st.binary(max_size=3),
            st.one_of(
                st.sampled_from(
                    [
                        b"\x00\x01",
                        b"\x00\x07",
                        b"\x1bconnector.entryHandler.echo",
                        b"\x1cconnector.entryHandler.proto",
                        b"\x1bconnector.entryHandler.kick",
                        b"\x1bconnector.entryHandler.bind",
                        b"\x1bconnector.entryHandler.push",
                        b"\x20connector.entryHandler.broadcast",
                    ]
                ),
                st.binary(max_size=4),
            ),
            st.one_of(
                st.binary(max_size=20),
                st.sampled_from([b"{}", b'{"uid":"u"}', b"[1]", b"\x08\x01\x12\x01a"]),
            ),
        ),
    ),
)

_streams = st.one_of(
    st.binary(max_size=200),
    st.lists(_package, max_size=8).map(b"".join),
    st.lists(_package, max_size=8).map(lambda ps: _HANDSHAKE_ACK + b"".join(ps)),
    st.tuples(st.binary(max_size=20), st.lists(_package, max_size=4)).map(
        lambda t: _HANDSHAKE_ACK + b"".join(t[1]) + t[0]
    ),
)


class RobustnessTests(SynchronousTestCase):
    """Hypothesis: whatever bytes arrive, nothing raises out of the socket, and the connection
    is either still open or was closed through its transport."""

    def check(self, client: Client, clock: task.Clock, connector: Connector) -> None:
        clock.advance(0)
        self.assertEqual(client.transport.late_writes, [])
        if client.state is ConnectionState.CLOSED:
            self.assertTrue(client.transport.closed)
        else:
            self.assertFalse(client.transport.closed)
        client.lose()
        clock.advance(0)
        clock.advance(100)  # timers of kicked connections, if any
        self.assertEqual(connector.session_service.sessions_count, 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(connector.sockets, set())
        self.flushLoggedErrors()

    @given(_streams, st.lists(st.integers(0, 300), max_size=6))
    def test_tcp_stream(self, stream: bytes, cuts: list[int]) -> None:
        connector, clock = make_connector()
        client = Client(connector, clock, ws=False)
        points = sorted({min(c, len(stream)) for c in cuts})
        start = 0
        for point in [*points, len(stream)]:
            client.feed(stream[start:point])
            start = point
        self.check(client, clock, connector)

    @given(st.lists(st.one_of(_package, st.binary(max_size=30)), max_size=6), st.booleans())
    def test_web_socket_messages(self, messages_: list[bytes], handshaken: bool) -> None:
        connector, clock = make_connector()
        client = Client(connector, clock, ws=True)
        if handshaken:
            client.feed(HANDSHAKE_1)
            client.feed(ACK)
        for message in messages_:
            client.feed(message)
        self.check(client, clock, connector)

    @given(
        st.lists(_package, max_size=8).map(lambda ps: _HANDSHAKE_ACK + b"".join(ps)),
        st.integers(1, 3),
    )
    def test_split_is_irrelevant(self, stream: bytes, size: int) -> None:
        """The same stream of well-framed packages in one chunk or in tiny chunks gives the
        same output (§3.4). (An abort drops what the turn had not yet written, so when the
        stream ends in an abort only the abort itself is compared.)"""
        outputs = []
        for chunk in (len(stream) or 1, size):
            connector, clock = make_connector()
            client = Client(connector, clock, ws=False)
            for i in range(0, len(stream), chunk):
                client.feed(stream[i : i + chunk])
                clock.advance(0)
            aborted = client.transport.aborted
            written = b"" if aborted else b"".join(client.transport.writes)
            outputs.append((written, client.state, aborted, client.transport.lost))
            self.check(client, clock, connector)
        self.assertEqual(outputs[0], outputs[1])
