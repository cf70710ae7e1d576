"""Shutdown signals: handled from the reactor loop, so a signal that lands while a log observer
holds its lock cannot hang the process (Twisted issue #7736).

The process tests run children with a bounded wait: a child that does not exit in time is
reported as hung and killed, never waited for.
"""

from __future__ import annotations

import select
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from twisted.internet.error import ReactorNotRunning
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.demo import make_app
from pomelo_twisted.ops.service import ConnectorService
from pomelo_twisted.ops.signals import ShutdownSignals, install_shutdown_signals, stop_on_signal
from pomelo_twisted.protocol.package import PackageType, encode_package
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import PomeloConnectorFactory
from tests.support.signals import (
    HOLDING,
    exited_within,
    handshake_once,
    listening_port,
    start,
    twistd,
    wait_for,
)

#: Seconds a child may take to start (imports on a busy machine) and to reach the trigger.
STARTUP = 30.0
#: Seconds after the signal within which a child must have exited; past it, it is hung. The
#: drains below have no client to wait for (drain timeout 1 s anyway).
EXIT = 10.0


class ShutdownSignalsTests(SynchronousTestCase):
    """The handler records and wakes; the reactor loop passes the signals on."""

    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        self.received: list[int] = []
        self.handlers = install_shutdown_signals(self.reactor, self.received.append)
        self.addCleanup(self.handlers.uninstall)

    def test_installed_when_the_reactor_runs(self) -> None:
        """Not before the reactor runs (it installs its own then), and replacing them after."""
        before = signal.getsignal(signal.SIGTERM)
        self.assertFalse(self.handlers.installed)
        self.reactor.run()
        self.assertTrue(self.handlers.installed)
        self.assertIn(self.handlers, self.reactor.readers)
        self.assertEqual(signal.getsignal(signal.SIGTERM), self.handlers._handle)
        self.assertEqual(signal.getsignal(signal.SIGINT), self.handlers._handle)
        self.handlers.uninstall()
        self.assertEqual(signal.getsignal(signal.SIGTERM), before)
        self.assertNotIn(self.handlers, self.reactor.readers)

    def test_signal_wakes_the_loop_then_reaches_on_signal(self) -> None:
        """A real SIGTERM: nothing is called in the handler; the pipe is readable; doRead calls."""
        self.reactor.run()
        self.assertEqual(signal.getsignal(signal.SIGTERM), self.handlers._handle)  # or no raise
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
        self.assertEqual(self.received, [])
        readable, _, _ = select.select([self.handlers.fileno()], [], [], 0)
        self.assertEqual(readable, [self.handlers.fileno()])
        self.handlers.doRead()
        self.assertEqual(self.received, [signal.SIGTERM, signal.SIGINT])
        readable, _, _ = select.select([self.handlers.fileno()], [], [], 0)
        self.assertEqual(readable, [])

    def test_an_error_in_on_signal_is_logged_and_the_reader_stays(self) -> None:
        def fail(signum: int) -> None:
            raise RuntimeError(signum)

        handlers = ShutdownSignals(self.reactor, fail)
        handlers.install()
        self.addCleanup(handlers.uninstall)
        handlers._handle(signal.SIGTERM, None)
        handlers._handle(signal.SIGTERM, None)
        handlers.doRead()  # does not raise: the reactor would drop the reader
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_kept_after_the_reactor_drops_its_readers(self) -> None:
        """At shutdown the reactor drops every reader; a signal then still hits our handler."""
        self.reactor.run()
        self.handlers.connectionLost(None)  # type: ignore[arg-type]
        self.handlers._handle(signal.SIGTERM, None)
        self.assertEqual(signal.getsignal(signal.SIGTERM), self.handlers._handle)
        self.handlers.uninstall()  # closes the pipe without removing a reader twice
        self.assertFalse(self.handlers.installed)


class _Reactor(MemoryReactor):
    """A reactor that refuses a second stop, as Twisted's does."""

    _exitSignal: int | None = None

    def stop(self) -> None:
        if self.hasStopped:
            raise ReactorNotRunning()
        super().stop()


class StopOnSignalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = _Reactor()
        self.hurried: list[None] = []
        self.on_signal = stop_on_signal(self.reactor, lambda: self.hurried.append(None))

    def test_first_stops_and_sets_the_exit_signal(self) -> None:
        self.on_signal(signal.SIGTERM)
        self.assertTrue(self.reactor.hasStopped)
        self.assertEqual(self.reactor._exitSignal, signal.SIGTERM)
        self.assertEqual(self.hurried, [])

    def test_later_ones_hurry(self) -> None:
        self.on_signal(signal.SIGINT)
        self.on_signal(signal.SIGTERM)
        self.on_signal(signal.SIGTERM)
        self.assertEqual(self.hurried, [None, None])
        self.assertEqual(self.reactor._exitSignal, signal.SIGINT)

    def test_reactor_already_stopping_hurries(self) -> None:
        self.reactor.stop()
        self.on_signal(signal.SIGTERM)
        self.assertEqual(self.hurried, [None])

    def test_without_hurry(self) -> None:
        on_signal = stop_on_signal(self.reactor)
        on_signal(signal.SIGTERM)
        on_signal(signal.SIGTERM)
        self.assertTrue(self.reactor.hasStopped)


class _Transport:
    """Just enough transport for a connection that never goes away by itself."""

    name = "tcp"

    def writePackages(self, data: bytes) -> None:
        pass

    def writePackageSequence(self, packages: list[bytes]) -> None:
        self.writePackages(b"".join(packages))

    def loseConnection(self) -> None:
        pass

    def abortConnection(self) -> None:
        pass

    def getPeer(self) -> Any:
        from twisted.internet.address import IPv4Address

        return IPv4Address("TCP", "127.0.0.1", 40000)


class HurryTests(SynchronousTestCase):
    """A second signal while draining: the drain stops waiting for lingering clients."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.connector = Connector(make_app(), self.reactor, ConnectorConfig(heartbeat=3))
        self.service = ConnectorService(
            PomeloConnectorFactory(self.connector), ["tcp:3010"], self.reactor, drain_timeout=3.0
        )
        self.service.startService()
        sock = self.connector.build_socket(_Transport())  # type: ignore[arg-type]
        sock.dataReceived(encode_package(PackageType.HANDSHAKE, b'{"sys":1}'))
        sock.dataReceived(encode_package(PackageType.HANDSHAKE_ACK))
        self.reactor.advance(0)

    def test_hurry_ends_the_wait(self) -> None:
        d = self.service.stopService()
        self.reactor.advance(1)
        self.assertNoResult(d)
        self.service.hurry()
        self.successResultOf(d)
        self.service.hurry()  # again: nothing left to hurry
        self.assertEqual(len(self.connector.sockets), 1)  # cut off when the process exits
        self.reactor.advance(10)  # the expired deadline does nothing more

    def test_hurry_before_the_drain(self) -> None:
        """A hurry that comes before the drain begins: the drain kicks and does not wait."""
        self.service.hurry()
        d = self.service.drain()
        self.assertNoResult(d)  # one reactor turn, for the KICK to be written
        self.reactor.advance(0)
        self.assertEqual(self.successResultOf(d), 1)


def _child(mode: str, log: Path) -> Any:
    return start([sys.executable, "-m", "tests.support.signals", mode], log)


class LockedObserverTests(SynchronousTestCase):
    """SIGTERM while the log observer holds its lock (the child raises it from inside)."""

    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp())

    def run_child(self, mode: str) -> tuple[int | None, str]:
        log = self.dir / f"{mode}.log"
        process = _child(mode, log)
        self.addCleanup(exited_within, process, 0)
        self.assertIsNotNone(wait_for(log, HOLDING, STARTUP), log.read_text())
        return exited_within(process, EXIT), log.read_text()

    def test_stock_handler_hangs(self) -> None:
        """Twisted's own handler logs in the handler: it waits for the lock forever."""
        status, text = self.run_child("stock")
        self.assertIsNone(status, f"the stock child exited ({status}), it should hang:\n{text}")
        self.assertNotIn("Received SIGTERM", text)

    def test_our_handler_stops(self) -> None:
        """Ours logs from the loop, once the observer has let go of its lock, and stops."""
        status, text = self.run_child("ours")
        self.assertEqual(status, 0, text)
        self.assertIn("Received SIGTERM, shutting down.", text)
        self.assertIn("reactor stopped; exit signal 15", text)


class TwistdLockedObserverTests(SynchronousTestCase):
    """C{twistd pomelo-connector} gets SIGTERM inside its first close line's log call."""

    def check(self, reactor: str | None) -> None:
        log = Path(tempfile.mkdtemp()) / "twistd.log"
        command = [
            *twistd("--logger=tests.support.signals.on_close_line", reactor=reactor),
            *("pomelo-connector", "--listen", "tcp:0:interface=127.0.0.1", "--drain-timeout", "1"),
        ]
        process = start(command, log)
        self.addCleanup(exited_within, process, 0)
        port = listening_port(log, STARTUP)
        self.assertIsNotNone(port, log.read_text())
        assert port is not None
        self.assertTrue(handshake_once(port))  # its close line is the trigger
        self.assertIsNotNone(wait_for(log, HOLDING, STARTUP), log.read_text())
        status = exited_within(process, EXIT)
        text = log.read_text()
        self.assertEqual(status, -signal.SIGTERM, f"hung or failed ({status}):\n{text}")
        self.assertIn("Received SIGTERM, shutting down.", text)
        self.assertIn("drained: every client has gone", text)
        self.assertIn("Server Shut Down.", text)

    def test_pomelo_epoll(self) -> None:
        self.check(None)

    def test_epoll(self) -> None:
        self.check("epoll")


class MainThreadOnlyTests(SynchronousTestCase):
    def test_install_from_another_thread_fails_cleanly(self) -> None:
        reactor = MemoryReactor()
        handlers = ShutdownSignals(reactor, lambda signum: None)
        errors: list[BaseException] = []

        def install() -> None:
            try:
                handlers.install()
            except ValueError as e:
                errors.append(e)

        thread = threading.Thread(target=install)
        thread.start()
        thread.join(10)
        self.assertEqual(len(errors), 1)
        self.assertFalse(handlers.installed)
        self.assertEqual(reactor.readers, set())
