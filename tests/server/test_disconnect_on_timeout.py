"""C{disconnect_on_timeout} (Pomelo's ``disconnectOnTimeout``): a heartbeat timeout closes the
connection by default, or is only logged; on a C{task.Clock}."""

from __future__ import annotations

from dataclasses import replace

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.ops import tap
from pomelo_twisted.protocol.connection import ConnectionState
from pomelo_twisted.protocol.package import PackageType
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.services.application import Application
from tests.support.parity import CONFIG, HANDSHAKE, HEARTBEAT, TCPClient, pushes, serve

TIMEOUT = 2.0 * CONFIG.heartbeat  # the default heartbeat timeout: twice the interval


class HeartbeatTimeoutTests(SynchronousTestCase):
    def start(self, config: ConnectorConfig) -> TCPClient:
        connector, clock = serve(Application(), config)
        client = TCPClient(connector, clock)
        self.session = client.start()
        [self.socket] = connector.sockets
        return client

    def test_defaultDisconnects(self) -> None:
        self.assertTrue(ConnectorConfig().disconnect_on_timeout)
        client = self.start(CONFIG)
        client.clock.advance(TIMEOUT - 0.01)
        self.assertFalse(client.transport.disconnecting)
        client.clock.advance(0.01)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(self.socket.close_reason, "heartbeat timeout")
        self.assertTrue(self.session.closed)

    def test_keptWhenOff(self) -> None:
        """Off: a warning per timeout, the connection and session stay and still work, and the
        client's next heartbeat re-arms the timeout."""
        client = self.start(replace(CONFIG, disconnect_on_timeout=False))
        with capturedLogs() as events:
            client.clock.advance(TIMEOUT)
        [event] = [e for e in events if "heartbeat timeout" in e["log_format"]]
        self.assertEqual(event["log_level"].name, "warn")
        self.assertEqual(event["session_id"], self.session.id)
        self.assertFalse(client.transport.disconnecting)
        self.assertIs(self.socket.connection.state, ConnectionState.WORKING)
        self.assertFalse(self.session.closed)
        self.assertEqual(client.clock.getDelayedCalls(), [])  # logged once, not every tick

        self.session.push_message("onChat", {"still": "here"})
        self.assertEqual(pushes(client.read()), [("onChat", {"still": "here"})])
        [answer] = client.send(HEARTBEAT)
        self.assertEqual(answer.type, PackageType.HEARTBEAT)
        with capturedLogs() as events:
            client.clock.advance(TIMEOUT - 0.01)
            self.assertEqual(events, [])
            client.clock.advance(0.01)
        self.assertEqual(len([e for e in events if "heartbeat timeout" in e["log_format"]]), 1)
        self.assertFalse(client.transport.disconnecting)

    def test_otherDeadlinesStillClose(self) -> None:
        """Only the heartbeat timeout is affected: a missing ACK still closes."""
        connector, clock = serve(Application(), replace(CONFIG, disconnect_on_timeout=False))
        client = TCPClient(connector, clock)
        client.send(HANDSHAKE)
        clock.advance(CONFIG.ack_timeout or 0)
        self.assertTrue(client.transport.disconnecting)


class OptionTests(SynchronousTestCase):
    def config(self, *argv: str) -> ConnectorConfig:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options.connector_config()

    def test_option(self) -> None:
        self.assertTrue(self.config().disconnect_on_timeout)
        self.assertFalse(self.config("--no-disconnect-on-timeout").disconnect_on_timeout)

    def test_help(self) -> None:
        self.assertIn("--no-disconnect-on-timeout", str(tap.Options()))
