"""app.sessions and app.channels: the services, typed without None, or a clear error."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted import Application, Connector


class AppServicesTests(SynchronousTestCase):
    def test_before_served(self) -> None:
        app = Application()
        for name in ("sessions", "channels"):
            with self.assertRaises(RuntimeError) as caught:
                getattr(app, name)
            self.assertIn(
                f"app.{name} is set when a connector serves the app", str(caught.exception)
            )

    def test_once_served(self) -> None:
        app = Application()
        connector = Connector(app, Clock())
        self.assertIs(app.sessions, connector.session_service)
        self.assertIs(app.channels, connector.channel_service)
