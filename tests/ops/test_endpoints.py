"""The listen backlog, the start-up line and the open-files check of ConnectorService."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.demo import make_app
from pomelo_twisted.ops import service as service_module
from pomelo_twisted.ops import tap
from pomelo_twisted.ops.endpoints import DEFAULT_BACKLOG, split_endpoint, with_backlog
from pomelo_twisted.ops.service import OPEN_FILES_MARGIN, ConnectorService
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import PomeloConnectorFactory


class EndpointTests(SynchronousTestCase):
    def test_split(self) -> None:
        self.assertEqual(
            split_endpoint("tcp:3010:interface=127.0.0.1"),
            ("tcp", ["3010"], {"interface": "127.0.0.1"}),
        )
        self.assertEqual(
            split_endpoint(r"tcp:3010:interface=\:\:1"), ("tcp", ["3010"], {"interface": r"\:\:1"})
        )
        self.assertEqual(split_endpoint("unix:/tmp/s"), ("unix", ["/tmp/s"], {}))

    def test_backlog_added(self) -> None:
        """Node's 511 unless the description names a backlog, for the types that take one."""
        self.assertEqual(DEFAULT_BACKLOG, 511)
        self.assertEqual(with_backlog("tcp:3010"), "tcp:3010:backlog=511")
        self.assertEqual(
            with_backlog("ssl:3011:privateKey=k.pem"), "ssl:3011:privateKey=k.pem:backlog=511"
        )
        self.assertEqual(with_backlog("reuseport:3010"), "reuseport:3010:backlog=511")
        self.assertEqual(with_backlog("tcp:3010:backlog=50"), "tcp:3010:backlog=50")
        self.assertEqual(with_backlog("systemd:domain=INET:index=0"), "systemd:domain=INET:index=0")


class ServiceTests(SynchronousTestCase):
    def build(self, endpoints: list[str], note: str = "", **config: object) -> ConnectorService:
        self.reactor = MemoryReactorClock()
        connector = Connector(make_app(), self.reactor, ConnectorConfig(**config))  # type: ignore[arg-type]
        return ConnectorService(
            PomeloConnectorFactory(connector), endpoints, self.reactor, startup_note=note
        )

    def test_listens_with_backlog(self) -> None:
        service = self.build(["tcp:3010", "tcp:3011:backlog=7"])
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual([(p[0], p[2]) for p in self.reactor.tcpServers], [(3010, 511), (3011, 7)])

    def test_startup_line(self) -> None:
        service = self.build(["tcp:3010:interface=127.0.0.1"], note="the demo")
        self.patch(service_module, "_open_files_limit", lambda: None)
        with capturedLogs() as events:
            service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(
            [formatEvent(e) for e in events if e["log_level"] == LogLevel.info][-1],
            "listening on tcp:3010:interface=127.0.0.1:backlog=511 (the demo)",
        )

    def test_open_files_limit(self) -> None:
        """One warning when ulimit -n cannot hold max_connections and the margin."""
        service = self.build(["tcp:3010"], max_connections=1000)
        self.patch(service_module, "_open_files_limit", lambda: 1000 + OPEN_FILES_MARGIN)
        self.assertFalse(service.check_open_files_limit())
        self.patch(service_module, "_open_files_limit", lambda: 1024)
        with capturedLogs() as events:
            service.startService()
        self.addCleanup(service.stopService)
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn("ulimit -n) is 1024, too low for max_connections 1000", warnings[0])
        self.assertIn("raise it to 1064 or more", warnings[0])

    def test_no_limit_no_warning(self) -> None:
        service = self.build(["tcp:3010"], max_connections=None)
        self.patch(service_module, "_open_files_limit", lambda: 16)
        self.assertFalse(service.check_open_files_limit())


class DemoListenTests(SynchronousTestCase):
    def test_demo_localhost_and_said(self) -> None:
        """No --app, no --listen: this machine only, and the start-up line says so."""
        options = tap.Options()
        options.parseOptions([])
        service = tap.makeService(options)
        assert isinstance(service, ConnectorService)
        self.assertEqual(service.endpoints, ["tcp:3010:interface=127.0.0.1:backlog=511"])
        self.assertIn("--listen tcp:3010 opens it to the network", service.startup_note)

    def test_explicit_listen_no_note(self) -> None:
        options = tap.Options()
        options.parseOptions(["--listen", "tcp:3010"])
        service = tap.makeService(options)
        assert isinstance(service, ConnectorService)
        self.assertEqual(service.endpoints, ["tcp:3010:backlog=511"])
        self.assertEqual(service.startup_note, "")
