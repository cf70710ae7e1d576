"""The twistd plugin: discovery, options, service construction."""

from __future__ import annotations

from twisted.application.service import IServiceMaker, MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.ops import tap
from pomelo_twisted.ops.service import ConnectorService
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import PomeloConnectorFactory
from pomelo_twisted.services.application import Application
from tests.support.options import tap_options


def make_app() -> Application:
    """An app factory importable as tests.ops.test_tap:make_app."""
    app = Application("game")
    app.add_handler("game.h.m", lambda msg, session: {"code": 200})
    return app


def not_an_app() -> object:
    return object()


class PluginTests(SynchronousTestCase):
    def test_discovered(self) -> None:
        """twistd finds the plugin through twisted.plugin discovery."""
        names = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("pomelo-connector", names)
        self.assertEqual(names["pomelo-connector"].options, tap.Options)


class OptionsTests(SynchronousTestCase):
    parse = staticmethod(tap_options)

    def test_defaults(self) -> None:
        """No options: the demo on tcp:3010 for this machine only, heartbeat 3, dict and
        protobuf on; an app of one's own listens on every interface."""
        options = self.parse()
        self.assertEqual(options["listen"], ["tcp:3010:interface=127.0.0.1"])
        self.assertEqual(self.parse("--app", "tests.test_tap:make_app")["listen"], ["tcp:3010"])
        config = options.connector_config()
        self.assertEqual(config.heartbeat, 3)
        self.assertTrue(config.use_dict)
        self.assertTrue(config.use_protobuf)
        self.assertIsNone(options["app"])

    def test_everything(self) -> None:
        options = self.parse(
            "--listen",
            "tcp:1",
            "--listen",
            "tcp:2:interface=127.0.0.1",
            "--heartbeat",
            "5",
            "--heartbeat-timeout",
            "7.5",
            "--no-dict",
            "--no-protobuf",
            "--max-package-size",
            "1000",
            "--single-session",
            "--server-id",
            "c-9",
            "--handshake-timeout",
            "0",
        )
        self.assertEqual(options["listen"], ["tcp:1", "tcp:2:interface=127.0.0.1"])
        config = options.connector_config()
        self.assertEqual(
            (config.heartbeat, config.heartbeat_timeout, config.use_dict, config.use_protobuf),
            (5, 7.5, False, False),
        )
        self.assertEqual(config.max_package_size, 1000)
        self.assertTrue(config.single_session)
        self.assertEqual(config.server_id, "c-9")
        self.assertIsNone(config.handshake_timeout)

    def test_bad_values(self) -> None:
        for argv in (
            ["--heartbeat", "-1"],
            ["--max-package-size", "0"],
            ["--max-package-size", "16777216"],
            ["--config", "/nonexistent/dir"],
            ["--heartbeat", "x"],
        ):
            self.assertRaises(usage.UsageError, self.parse, *argv)

    def test_help_mentions_options(self) -> None:
        text = str(tap.Options())
        for option in (
            "--listen",
            "--app",
            "--config",
            "--heartbeat",
            "--no-dict",
            "--no-protobuf",
            "--heartbeat-timeout",
        ):
            self.assertIn(option, text)


class LoadAppTests(SynchronousTestCase):
    def test_demo(self) -> None:
        app = tap.load_app(None)
        self.assertIn("connector.entryHandler.entry", app.routes)

    def test_user_app(self) -> None:
        app = tap.load_app("tests.ops.test_tap:make_app")
        self.assertEqual(app.routes, ["game.h.m"])

    def test_bad_specs(self) -> None:
        for spec in (
            "nocolon",
            "no.such.module:f",
            "tests.ops.test_tap:missing",
            "tests.ops.test_tap:not_an_app",
        ):
            self.assertRaises(usage.UsageError, tap.load_app, spec)


class ServiceTests(SynchronousTestCase):
    def test_one_port_per_listen(self) -> None:
        reactor = MemoryReactorClock()
        connector = Connector(tap.load_app(None), reactor)
        service = ConnectorService(
            PomeloConnectorFactory(connector), ["tcp:3010", "tcp:3011"], reactor
        )
        self.assertIsInstance(service, MultiService)
        self.assertEqual(len(list(service)), 2)
        service.startService()
        self.assertEqual([p[0] for p in reactor.tcpServers], [3010, 3011])
        self.successResultOf(service.stopService())

    def test_bad_endpoint(self) -> None:
        options = tap.Options()
        options.parseOptions(["--listen", "nosuchendpoint:1"])
        self.assertRaises(usage.UsageError, tap.makeService, options)


class CryptoOptionsTests(SynchronousTestCase):
    def test_use_crypto(self) -> None:
        options = tap.Options()
        options.parseOptions(["--use-crypto", "--rsa-max-modulus-bits", "2048"])
        config = options.connector_config()
        self.assertTrue(config.use_crypto)
        self.assertEqual(config.rsa_max_modulus_bits, 2048)

    def test_default_off(self) -> None:
        options = tap.Options()
        options.parseOptions([])
        self.assertFalse(options.connector_config().use_crypto)

    def test_small_modulus_refused(self) -> None:
        options = tap.Options()
        self.assertRaises(usage.UsageError, options.parseOptions, ["--rsa-max-modulus-bits", "256"])
