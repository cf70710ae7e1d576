"""pomelo-epoll (L{pomelo_twisted.ops.reactor}): Twisted's own reactor tests, and what it changes.

The reactor differs from Twisted's C{EPollReactor} in one method, so the evidence that it is a
correct reactor is Twisted's own conformance suites (TCP clients, ports, connections, aborts,
descriptor sets, system events, timers) run against it, with the two differences it documents.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.test import test_core, test_fdset, test_tcp, test_time
from twisted.internet.test.reactormixins import ReactorBuilder
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from pomelo_twisted.ops import tap
from tests.support.servers import json_result, run_python

_REACTORS = ["pomelo_twisted.ops.reactor.PomeloEPollReactor"]


def _logPrefixDiffers(self: Any) -> None:
    raise SkipTest(
        "by design: legacy log lines emitted while reading show the system '-', not the "
        "descriptor's logPrefix (pomelo_twisted/reactor.py)"
    )


def _epollCannotDetectLostDescriptors(self: Any) -> None:
    # Twisted skips this test for its EPollReactor by class name, for this reason.
    raise SkipTest("epoll cannot detect lost file descriptors (as Twisted's EPollReactor)")


_DIFFERENCES = {
    "test_logPrefix": _logPrefixDiffers,
    "test_lostFileDescriptor": _epollCannotDetectLostDescriptors,
}

for _builder in (
    test_tcp.TCP4ClientTestsBuilder,
    test_tcp.TCP4ConnectorTestsBuilder,
    test_tcp.TCPPortTestsBuilder,
    test_tcp.TCPConnectionTestsBuilder,
    test_tcp.TCPTransportTestsBuilder,
    test_tcp.AbortConnectionTests,
    test_fdset.ReactorFDSetTestsBuilder,
    test_core.SystemEventTestsBuilder,
    test_time.TimeTestsBuilder,
):
    _ours = type(
        _builder.__name__,
        (_builder,),
        {
            "_reactors": _REACTORS,
            "__module__": __name__,
            **{name: skip for name, skip in _DIFFERENCES.items() if hasattr(_builder, name)},
        },
    )
    globals().update(_ours.makeTestCaseClasses())


class _Reader(FileDescriptor):
    """One end of a socket pair, registered for reading; records what happens to it."""

    def __init__(self, reactor: Any, sock: socket.socket, name: str, log: list[str]) -> None:
        super().__init__(reactor)
        self.sock = sock
        self.name = name
        self.events = log
        self.other: _Reader | None = None
        self.failRead = False
        self.failLost = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        self.events.append(f"read {self.name}")
        self.sock.recv(100)
        if self.other is not None:
            self.reactor.removeReader(self.other)  # type: ignore[attr-defined]
        if self.failRead:
            raise ValueError("doRead failed")

    def connectionLost(self, reason: Any) -> None:
        self.events.append(f"lost {self.name}")
        self.reactor.removeReader(self)  # type: ignore[attr-defined]
        if self.failLost:
            raise RuntimeError("connectionLost failed")


class DispatchTestsBuilder(ReactorBuilder):
    """What C{doPoll} keeps from C{callWithLogger}: errors are logged, the poll goes on."""

    _reactors = _REACTORS

    def readers(self, reactor: Any, count: int) -> tuple[list[_Reader], list[str]]:
        log: list[str] = []
        readers = []
        for i in range(count):
            ours, theirs = socket.socketpair()
            self.addCleanup(ours.close)
            self.addCleanup(theirs.close)
            theirs.send(b"x")  # readable before the poll
            reader = _Reader(reactor, ours, "ab"[i], log)
            reactor.addReader(reader)
            self.addCleanup(reactor.removeReader, reader)  # before the sockets close
            readers.append(reader)
        return readers, log

    def test_error_out_of_dispatch_is_logged_and_the_poll_goes_on(self) -> None:
        """A C{connectionLost} that raises is logged; the other ready descriptor is served."""
        reactor = self.buildReactor()
        (a, _b), log = self.readers(reactor, 2)
        a.failRead = True  # Twisted's _doReadOrWrite logs this and disconnects ...
        a.failLost = True  # ... and this escapes it: callWithLogger's job, now doPoll's
        reactor.doPoll(0)
        self.assertIn("read b", log)
        self.assertEqual(sorted(e for e in log if e.endswith("a")), ["lost a", "read a"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_descriptor_removed_earlier_in_the_poll_is_not_served(self) -> None:
        """A descriptor removed while an earlier event of the same poll is handled is skipped."""
        reactor = self.buildReactor()
        (a, b), log = self.readers(reactor, 2)
        a.other, b.other = b, a  # whichever is served first removes the other
        reactor.doPoll(0)
        self.assertEqual(len(log), 1, log)

    def test_interrupted_poll_returns(self) -> None:
        """A poll interrupted by a signal returns, to be retried by the main loop."""
        reactor = self.buildReactor()

        class Interrupted:
            def poll(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
                raise InterruptedError()

        real, reactor._poller = reactor._poller, Interrupted()
        try:
            self.assertIsNone(reactor.doPoll(None))
        finally:
            reactor._poller = real


globals().update(DispatchTestsBuilder.makeTestCaseClasses())


class DefaultReactorTests(SynchronousTestCase):
    """C{twistd pomelo-connector} runs on pomelo-epoll unless a reactor was chosen."""

    def test_installed_when_none_chosen(self) -> None:
        code = (
            "import json, sys\n"
            "from pomelo_twisted.ops import tap\n"
            "options = tap.Options()\n"
            "options.parseOptions(['--listen', 'tcp:0:interface=127.0.0.1'])\n"
            "tap.makeService(options)\n"
            "from twisted.internet import reactor\n"
            "print(json.dumps({'reactor': type(reactor).__module__ + '.' + "
            "type(reactor).__name__}))\n"
        )
        result = run_python(code)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json_result(result.stdout), {"reactor": _REACTORS[0]})

    def test_chosen_reactor_kept(self) -> None:
        """A reactor installed before the service is built (twistd -r, trial) stays."""
        from twisted.internet import reactor

        options = tap.Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
        tap.makeService(options)
        from twisted.internet import reactor as after

        self.assertIs(after, reactor)
