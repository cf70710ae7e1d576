"""Heartbeats and deadlines through the connector (protocol.md §6, §20 items 23-26)."""

from __future__ import annotations

from pomelo_twisted.protocol.connection import ConnectionState
from tests.support.connector import (
    ACK,
    HEARTBEAT,
    ConnectorTestCase,
    make_test_app,
    request,
    response,
)


class HeartbeatTests(ConnectorTestCase):
    def setUp(self) -> None:
        self.connector(make_test_app())

    def test_heartbeat_after_ack(self) -> None:
        """§20 item 23: C{03 00 00 00} in the same turn as the ACK."""
        client = self.client()
        client.handshake()
        self.assertEqual(client.exchange(ACK), HEARTBEAT)

    def test_each_heartbeat_answered(self) -> None:
        """§20 item 24, §6.4: every client heartbeat is answered at once, never paced."""
        client = self.client().connect()
        for _ in range(5):
            self.clock.advance(3)
            self.assertEqual(client.exchange(HEARTBEAT), HEARTBEAT)
        self.assertFalse(client.transport.closed)
        # Two in one turn: two answers, one write.
        client.feed(HEARTBEAT)
        client.feed(HEARTBEAT)
        self.assertEqual(client.turn(), [HEARTBEAT + HEARTBEAT])

    def test_silence_closes(self) -> None:
        """§20 item 25: 2 x interval without a heartbeat: closed, no KICK."""
        client = self.client().connect()
        self.clock.advance(5.999)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.001)
        self.assertEqual(client.transport.lost, 1)
        self.assertEqual(client.take(), [])
        self.assertClosedAndClean(client)

    def test_silence_after_heartbeat(self) -> None:
        """The timer restarts at each heartbeat (§6.4)."""
        client = self.client().connect()
        self.clock.advance(3)
        client.exchange(HEARTBEAT)
        self.clock.advance(5.5)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.5)
        self.assertTrue(client.transport.closed)
        self.assertNotIn(b"\x05", b"".join(w[:1] for w in client.take()))

    def test_configured_timeout(self) -> None:
        self.connector(make_test_app(), heartbeat=3, heartbeat_timeout=10)
        client = self.client().connect()
        self.clock.advance(9.9)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.1)
        self.assertTrue(client.transport.closed)
        self.assertEqual(client.take(), [])

    def test_timeout_scales_with_interval(self) -> None:
        self.connector(make_test_app(), heartbeat=10)
        client = self.client().connect()
        self.clock.advance(19.9)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.1)
        self.assertTrue(client.transport.closed)

    def test_data_does_not_reset_timer(self) -> None:
        """§6.2: only inbound heartbeats reset the timer; DATA does not."""
        client = self.client().connect()
        for i in range(1, 6):
            self.clock.advance(1)
            self.assertEqual(
                client.exchange(request(i, "connector.testHandler.echo")), response(i, b"{}")
            )
        self.clock.advance(0.999)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.001)
        self.assertTrue(client.transport.closed)

    def test_no_heartbeat(self) -> None:
        """§20 item 26: heartbeat 0: none after the ACK, none answered, no timeout ever."""
        self.connector(make_test_app(), heartbeat=0)
        client = self.client()
        self.assertNotIn(b"heartbeat", client.handshake())
        self.assertEqual(client.exchange(ACK), b"")
        self.assertIs(client.state, ConnectionState.WORKING)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(client.exchange(HEARTBEAT), b"")
        self.clock.advance(10**6)
        self.assertFalse(client.transport.closed)
        self.assertEqual(
            client.exchange(request(1, "connector.testHandler.echo")), response(1, b"{}")
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_timer_per_connection(self) -> None:
        """The handshake, ACK and heartbeat deadlines share one re-armed timer."""
        client = self.client()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        client.handshake()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        client.exchange(ACK)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        for _ in range(3):
            client.exchange(HEARTBEAT)
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_handshake_timeout(self) -> None:
        client = self.client()
        self.clock.advance(14.9)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.1)
        self.assertEqual(client.transport.writes, [])
        self.assertClosedAndClean(client)

    def test_handshake_timeout_configured(self) -> None:
        self.connector(make_test_app(), handshake_timeout=2)
        client = self.client()
        self.clock.advance(2)
        self.assertTrue(client.transport.closed)

    def test_handshake_timeout_off(self) -> None:
        self.connector(make_test_app(), handshake_timeout=None, heartbeat=0)
        client = self.client()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10**6)
        self.assertFalse(client.transport.closed)

    def test_ack_timeout(self) -> None:
        client = self.client()
        self.clock.advance(10)
        client.handshake()
        self.clock.advance(14.9)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.1)
        self.assertEqual(client.take(), [])
        self.assertClosedAndClean(client)

    def test_heartbeats_do_not_delay_ack_timeout(self) -> None:
        client = self.client()
        client.handshake()
        for _ in range(4):
            self.clock.advance(3.75)
            client.exchange(HEARTBEAT)
        self.assertTrue(client.transport.closed)

    def test_remote_close_cleans_up(self) -> None:
        client = self.client().connect()
        sid = client.session.id
        client.lose()
        self.clock.advance(0)
        self.assertIs(client.state, ConnectionState.CLOSED)
        self.assertIsNone(self.conn.session_service.get(sid))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.conn.sockets, set())
        self.assertEqual(client.transport.lost + client.transport.aborted, 0)
