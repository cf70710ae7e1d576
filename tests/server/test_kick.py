"""Kicks through the connector (protocol.md §11, §12.4, §20 items 35-37): the KICK package,
then a graceful close, and nothing left behind.
"""

from __future__ import annotations

from typing import Any

from pomelo_twisted.protocol.package import PackageType, encode_package
from tests.support.connector import (
    ConnectorTestCase,
    kick_package,
    make_test_app,
    push,
)
from tests.support.vectors import h


class KickTests(ConnectorTestCase):
    def setUp(self) -> None:
        self.connector(make_test_app())

    def test_string_reason(self) -> None:
        """§20 item 35: KICK, then a graceful close (not an abort)."""
        client = self.client().connect()
        client.take()
        self.assertTrue(self.conn.session_service.kick_by_session_id(client.session.id, "attack"))
        self.assertEqual(
            client.transport.writes[-1:],
            [h("05 00 00 13 7b 22 72 65 61 73 6f 6e 22 3a 22 61 74 74 61 63 6b 22 7d")],
        )
        self.assertEqual(client.transport.lost, 1)
        self.assertEqual(client.transport.aborted, 0)
        self.assertEqual(
            client.turn(),
            [h("05 00 00 13 7b 22 72 65 61 73 6f 6e 22 3a 22 61 74 74 61 63 6b 22 7d")],
        )
        self.clock.advance(5)
        self.assertEqual(client.transport.aborted, 1)
        self.assertClosedAndClean(client, aborted=False)

    def test_default_reason(self) -> None:
        client = self.client().connect()
        client.take()
        client.sock.kick()
        self.assertEqual(
            b"".join(client.take()),
            h("05 00 00 11 7b 22 72 65 61 73 6f 6e 22 3a 22 6b 69 63 6b 22 7d"),
        )

    def test_unicode_reason(self) -> None:
        client = self.client().connect()
        client.take()
        client.session.kick("拜拜")
        self.assertEqual(
            b"".join(client.take()), encode_package(PackageType.KICK, '{"reason":"拜拜"}'.encode())
        )

    def test_none_reason(self) -> None:
        """§20 item 36: no KICK package, just the close."""
        client = self.client().connect()
        client.take()
        client.session.kick(None)
        self.assertEqual(client.take(), [])
        self.assertEqual(client.transport.lost, 1)
        self.assertClosedAndClean(client)

    def test_kick_before_working(self) -> None:
        """§20 item 37: no KICK in C{INITED} or C{WAIT_ACK}, only the close."""
        client = self.client()
        client.sock.kick("early")
        self.assertEqual(client.turn(), [])
        self.assertClosedAndClean(client)
        client = self.client()
        client.handshake()
        self.conn.session_service.kick_by_session_id(client.session.id, "early")
        self.assertEqual(client.turn(), [])
        self.assertClosedAndClean(client)

    def test_transport_closing_synchronously(self) -> None:
        """A transport that reports connectionLost from inside loseConnection: the abort
        timer is still cancelled, nothing is left behind."""
        client = self.client().connect()
        lose = client.transport.loseConnection

        def loseConnection() -> None:
            lose()
            client.sock.connectionLost(None)

        client.transport.loseConnection = loseConnection  # type: ignore[method-assign]
        client.sock.kick("bye")
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.conn.sockets, set())
        self.clock.advance(100)
        self.assertEqual(client.transport.aborted, 0)

    def test_no_abort_timer(self) -> None:
        """C{kick_close_timeout} 0: a graceful close with no abort deadline."""
        self.connector(make_test_app(), kick_close_timeout=0)
        client = self.client().connect()
        client.sock.kick("bye")
        self.clock.advance(0)
        self.assertEqual(client.transport.lost, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_kick_flushes_queued_output(self) -> None:
        """Output queued earlier in the turn leaves before the KICK, in one write."""
        client = self.client().connect()
        client.take()
        client.session.push_message("onChat", {"a": 1})
        client.session.kick("bye")
        self.assertEqual(client.take(), [push("onChat", b'{"a":1}') + kick_package("bye")])
        self.assertEqual(client.turn(), [])

    def test_kick_by_uid(self) -> None:
        """§20 item 40: every session of the uid is kicked; others stay."""
        a, b, c = (self.client().connect() for _ in range(3))
        a.session.bind("bob")
        b.session.bind("bob")
        c.session.bind("alice")
        self.assertEqual(self.conn.session_service.kick("bob", "bye"), 2)
        for x in (a, b):
            self.assertEqual(x.take()[-1], kick_package("bye"))
            self.assertEqual(x.transport.lost, 1)
        self.assertFalse(c.transport.closed)
        self.assertEqual(self.conn.session_service.get_by_uid("bob"), [])
        self.assertEqual(self.conn.session_service.kick("nobody", "bye"), 0)

    def test_nothing_sent_after_kick(self) -> None:
        client = self.client().connect()
        session = client.session
        client.take()
        session.kick("bye")
        client.take()
        self.assertFalse(session.push_message("onChat", {}))
        self.assertEqual(client.turn(), [])

    def test_kick_twice(self) -> None:
        client = self.client().connect()
        client.take()
        client.sock.kick("one")
        client.sock.kick("two")
        self.assertEqual(client.take(), [kick_package("one")])
        self.assertEqual(client.transport.lost, 1)
        self.clock.advance(0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_kick_all(self) -> None:
        clients = [self.client().connect() for _ in range(2)]
        unhandshaken = self.client()
        self.assertEqual(self.conn.kick_all("shutdown"), 3)
        for c in clients:
            self.assertEqual(c.take()[-1], kick_package("shutdown"))
        self.assertEqual(unhandshaken.take(), [])
        for c in [*clients, unhandshaken]:
            self.assertEqual(c.transport.lost, 1)
            c.lose()
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.conn.sockets, set())
        self.assertEqual(self.conn.session_service.sessions_count, 0)

    def test_wait_closed(self) -> None:
        clients = [self.client().connect() for _ in range(2)]
        d = self.conn.wait_closed(10)
        self.assertNoResult(d)
        for c in clients:
            c.lose()
        self.successResultOf(d)
        d = self.conn.wait_closed(10)
        self.successResultOf(d)
        self.client()
        d = self.conn.wait_closed(10)
        self.clock.advance(10)
        self.successResultOf(d)

    def test_closed_listener(self) -> None:
        client = self.client().connect()
        seen: list[Any] = []
        client.session.on("closed", lambda session, reason: seen.append((session.id, reason)))
        self.conn.session_service.on(
            "close_session", lambda session, reason: seen.append(("svc", reason))
        )
        sid = client.session.id
        client.sock.kick("bye")
        client.lose()
        self.assertEqual(len(seen), 2)
        self.assertEqual(seen[1][0], sid)
        self.assertIn("bye", seen[1][1])
