# -*- test-case-name: tests.ops.test_signals,tests.ops.test_signal_stress -*-
"""Shutdown signals handled from the reactor loop, never inside the signal handler.

Twisted's own handlers (C{ReactorBase.sigTerm}, C{sigInt}, C{sigBreak}) log "Received SIGTERM"
from inside the Python signal handler. A signal runs its handler in the main thread between
two bytecodes, wherever that thread is: if it is inside a log observer that holds a lock (a
file observer's, a queue's), the handler's log call waits for that lock forever, and the
process never exits (U{Twisted issue #7736<https://github.com/twisted/twisted/issues/7736>}).

L{ShutdownSignals} replaces those handlers with one that only records the signal number and
writes one byte to a pipe of its own; the pipe's reading end is a reader of the reactor, which
then calls C{on_signal(signum)} from the loop, where logging and stopping are safe. The handler
does not use C{reactor.callFromThread} or the reactor's waker, so it does not depend on how
they are built.

L{install_shutdown_signals} installs it once the reactor runs (after the reactor's own handlers,
which it replaces); L{stop_on_signal} is the usual C{on_signal}: the first signal stops the
reactor (so twistd exits by that signal, status 143 for SIGTERM), a later one calls C{hurry}.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, Protocol

from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["SHUTDOWN_SIGNALS", "ShutdownSignals", "install_shutdown_signals", "stop_on_signal"]

#: The signals that stop the process: those Twisted's reactor handles on POSIX. SIGHUP is left
#: alone (its default ends the process at once, as under plain twistd).
SHUTDOWN_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)

_log = Logger(namespace="pomelo_twisted.ops.signals")


class _Reactor(Protocol):
    """What L{ShutdownSignals} needs of a reactor."""

    def addReader(self, reader: IReadDescriptor) -> None: ...

    def removeReader(self, reader: IReadDescriptor) -> None: ...

    def callWhenRunning(self, callable: Callable[..., Any], *args: object) -> Any: ...


@implementer(IReadDescriptor)
class ShutdownSignals:
    """Handlers for C{signals} that call C{on_signal(signum)} from the reactor loop.

    Call L{install} from the main thread while the reactor runs (or use
    L{install_shutdown_signals}). The handlers stay installed until L{uninstall}: under twistd
    that is never, so that a signal during the last steps of the exit is handled safely too.

    @ivar installed: whether the handlers are in place.
    """

    def __init__(
        self,
        reactor: _Reactor,
        on_signal: Callable[[int], object],
        signals: Iterable[int] = SHUTDOWN_SIGNALS,
    ) -> None:
        self._reactor = reactor
        self._on_signal = on_signal
        self._signals = tuple(signals)
        #: Signal numbers received and not yet passed on (appended by the handler).
        self._pending: deque[int] = deque()
        self._previous: dict[int, Any] = {}
        self._read_fd = self._write_fd = -1
        self._reading = False
        self.installed = False

    def install(self) -> None:
        """Open the pipe, add its reader to the reactor, and replace the signals' handlers.

        @raise ValueError: not called from the main thread (Python runs handlers only there).
        """
        if self.installed:
            return
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("signal handlers can only be installed from the main thread")
        self._read_fd, self._write_fd = os.pipe()  # not inherited by child processes
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._reactor.addReader(self)
        self._reading = True
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        self.installed = True

    def uninstall(self) -> None:
        """Put the previous handlers back, remove the reader and close the pipe."""
        if not self.installed:
            return
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        if self._reading:
            self._reactor.removeReader(self)
            self._reading = False
        os.close(self._read_fd)
        os.close(self._write_fd)
        self._read_fd = self._write_fd = -1
        self.installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: no log, no lock; record the number and wake the reactor."""
        self._pending.append(signum)
        with contextlib.suppress(OSError):  # a full pipe: the loop has a wake-up coming anyway
            os.write(self._write_fd, b"\0")

    # IReadDescriptor, served by the reactor loop

    def fileno(self) -> int:
        return self._read_fd

    def doRead(self) -> None:
        """Empty the pipe, then pass every recorded signal on, in order."""
        try:
            while os.read(self._read_fd, 512):
                pass
        except BlockingIOError:
            pass
        while self._pending:
            signum = self._pending.popleft()
            try:
                self._on_signal(signum)
            except Exception:
                _log.failure("error handling signal {signum}", signum=signum)

    def connectionLost(self, reason: Failure) -> None:
        """The reactor dropped its readers (it is stopping): keep the handlers and the pipe."""
        self._reading = False

    def logPrefix(self) -> str:
        return "ShutdownSignals"


def install_shutdown_signals(
    reactor: _Reactor,
    on_signal: Callable[[int], object],
    signals: Iterable[int] = SHUTDOWN_SIGNALS,
) -> ShutdownSignals:
    """Replace the handlers of C{signals} with L{ShutdownSignals} once C{reactor} runs.

    C{reactor.run()} installs Twisted's handlers as it starts; these are installed just
    after (C{callWhenRunning}), or at once if the reactor already runs. Call this from the
    main thread, before or after C{reactor.run()}.

    @param on_signal: called from the reactor loop with each signal's number; see
        L{stop_on_signal} for the usual one.
    @return: the installed (or soon installed) handlers, for L{ShutdownSignals.uninstall}.
    """
    handlers = ShutdownSignals(reactor, on_signal, signals)
    reactor.callWhenRunning(handlers.install)
    return handlers


class _Stoppable(Protocol):
    def stop(self) -> None: ...


def stop_on_signal(
    reactor: _Stoppable, hurry: Callable[[], object] | None = None
) -> Callable[[int], None]:
    """An C{on_signal} that stops C{reactor} on the first signal and hurries on the next.

    The first signal is logged ("Received SIGTERM, shutting down.", as Twisted does) and stops
    the reactor; it is also recorded as the reactor's exit signal, so twistd ends the process
    with it once stopped (status 128 + the signal's number). A later signal (or any signal
    once the reactor was stopped some other way) is logged and calls C{hurry}, if given
    (it may be called more than once).
    """
    stopping = False

    def on_signal(signum: int) -> None:
        nonlocal stopping
        name = signal.Signals(signum).name
        if not stopping:
            stopping = True
            _log.info("Received {signal}, shutting down.", signal=name)
            if hasattr(reactor, "_exitSignal"):  # twistd and twist read it after run() returns
                reactor._exitSignal = signum
            try:
                reactor.stop()
                return
            except ReactorNotRunning:
                pass  # already stopping: treat it as the later signal it is
        if hurry is None:
            _log.info("Received {signal} while shutting down.", signal=name)
            return
        _log.info("Received {signal} while shutting down: not waiting any longer.", signal=name)
        hurry()

    return on_signal
