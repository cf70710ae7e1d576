"""The connector takes its per-process services from its caller (the seam cluster mode uses)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted import Application, ChannelService, Connector, ConnectorConfig, SessionService
from pomelo_twisted.protocol.codec import ServerCodec


class RecordingSessions(SessionService):
    """A session service the caller made (here only to see what it was given)."""

    made_with: tuple[ServerCodec, ConnectorConfig]


class ConnectorSeamTests(SynchronousTestCase):
    def test_default_services(self) -> None:
        app = Application("connector")
        config = ConnectorConfig(server_id="connector-7", single_session=True)
        connector = Connector(app, Clock(), config)
        self.assertIsInstance(connector.session_service, SessionService)
        self.assertEqual(connector.session_service.server_id, "connector-7")
        self.assertTrue(connector.session_service.single_session)
        self.assertIs(connector.session_service.codec, connector.codec)
        self.assertEqual(connector.channel_service.server_id, "connector-7")
        self.assertIs(app.session_service, connector.session_service)
        self.assertIs(app.channel_service, connector.channel_service)

    def test_services_from_the_caller(self) -> None:
        made: list[object] = []

        def sessions(codec: ServerCodec, config: ConnectorConfig) -> SessionService:
            service = RecordingSessions(codec, server_id=f"{config.server_id}-mine")
            made.append((codec, config))
            return service

        def channels(session_service: SessionService) -> ChannelService:
            made.append(session_service)
            return ChannelService(session_service, server_id="channels-mine")

        app = Application("connector")
        config = ConnectorConfig(server_id="connector-8")
        connector = Connector(
            app, Clock(), config, session_service=sessions, channel_service=channels
        )
        self.assertIsInstance(connector.session_service, RecordingSessions)
        self.assertEqual(made, [(connector.codec, config), connector.session_service])
        self.assertEqual(connector.session_service.server_id, "connector-8-mine")
        self.assertEqual(connector.channel_service.server_id, "channels-mine")
        self.assertIs(app.session_service, connector.session_service)
        self.assertIs(app.channel_service, connector.channel_service)
