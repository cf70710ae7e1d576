"""Pomelo's C{session.push(key)}/C{pushAll()} (settings sync) and C{Session.push_message}, with
the deprecated C{session.push(route, msg)} still sending."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.demo import make_app
from pomelo_twisted.protocol.message import MessageType
from pomelo_twisted.services import session as session_module
from pomelo_twisted.services.application import Application
from pomelo_twisted.services.session import Session, SessionError
from tests.support.parity import TCPClient, message, pushes, serve


class SessionPushTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Application()
        self.results: list[Any] = []

        @self.app.route("connector.h.ported")
        def ported(msg: Any, session: Session) -> Any:
            """A handler as ported from Pomelo: set, then push the setting."""
            session.set("room", msg["room"])
            session.push("room", self.results.append)
            session.push_all(self.results.append)
            return {"code": 200, "room": session.get("room")}

        connector, clock = serve(self.app)
        self.client = TCPClient(connector, clock)
        self.session = self.client.start()

    def test_portedHandler(self) -> None:
        """The Pomelo call shape works: callbacks get C{None}, nothing is pushed."""
        self.assertEqual(
            self.client.request(1, "connector.h.ported", {"room": "lobby"}),
            {"code": 200, "room": "lobby"},
        )
        self.assertEqual(self.results, [None, None])
        self.assertEqual(self.client.read(), [])
        self.assertEqual(self.flushWarnings(), [])

    def test_deferreds(self) -> None:
        self.session.set("k", 1)
        self.assertIsNone(self.successResultOf(self.session.push("k")))
        self.assertIsNone(self.successResultOf(self.session.push("k", None)))
        self.assertIsNone(self.successResultOf(self.session.push_all()))
        self.assertEqual(self.client.read(), [])

    def test_closedSession(self) -> None:
        """As Pomelo's import: a session that is gone is an error."""
        self.session.kick()
        self.client.read()
        self.assertTrue(self.session.closed)
        for d in (self.session.push("k"), self.session.push_all()):
            error = self.failureResultOf(d, SessionError).value
            self.assertEqual(str(error), f"session does not exist, sid: {self.session.id}")
        self.session.push("k", self.results.append)
        self.session.push_all(self.results.append)
        self.assertEqual([type(e) for e in self.results], [SessionError, SessionError])

    def test_pushMessage(self) -> None:
        self.assertTrue(self.session.push_message("onChat", {"msg": "hi"}))
        self.assertEqual(pushes(self.client.read()), [("onChat", {"msg": "hi"})])
        self.assertEqual(self.flushWarnings(), [])

    def test_oldCallDeprecated(self) -> None:
        """C{push(route, msg)}: the message is sent; the first call warns, naming
        C{push_message} and pointing at the caller."""
        self.patch(session_module, "_push_warned", False)
        for body in ({"msg": "hi"}, ["a"], "text", 3):
            self.assertTrue(self.session.push("onChat", body))
            self.assertEqual(pushes(self.client.read()), [("onChat", body)])
        [warning] = self.flushWarnings([self.test_oldCallDeprecated])
        self.assertIs(warning["category"], DeprecationWarning)
        self.assertIn("push_message(route, msg)", warning["message"])
        self.assertEqual(warning["filename"], __file__)

        self.assertTrue(self.session.push("onChat", {"msg": "again"}))
        self.assertEqual(pushes(self.client.read()), [("onChat", {"msg": "again"})])
        self.assertEqual(self.flushWarnings(), [])


class DemoTests(SynchronousTestCase):
    def test_demoPushesWithoutWarnings(self) -> None:
        """The demo app's push routes use the new name."""
        self.patch(session_module, "_push_warned", False)
        connector, clock = serve(make_app())
        client = TCPClient(connector, clock)
        client.start()
        sent = client.send(message(MessageType.REQUEST, 1, "connector.entryHandler.push", [1]))
        sent += client.notify("connector.entryHandler.notify", {"b": 2})
        self.assertEqual(pushes(sent), [("onPush", [1]), ("onNotify", {"b": 2})])
        self.assertEqual(self.flushWarnings(), [])
