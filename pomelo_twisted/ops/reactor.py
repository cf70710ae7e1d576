# -*- test-case-name: tests.ops.test_reactor -*-
"""Twisted's epoll reactor without a log context per ready socket (C{twistd -r pomelo-epoll}).

L{twisted.internet.epollreactor.EPollReactor} runs every ready descriptor's C{doRead} or
C{doWrite} inside C{twisted.python.log.callWithLogger}: it asks the descriptor for its
C{logPrefix()}, copies the legacy log context into a new dict, pushes it, calls, pops it. With
one small request per read, that wrapper costs as much as a tenth of a connector's time (a
py-spy profile of C{twistd pomelo-connector} under 1,000 connections with one request in
flight each: 11% of the samples, more than decoding and dispatching the request).

L{PomeloEPollReactor} is that reactor with a C{doPoll} that calls the same C{_doReadOrWrite}
directly. What it gives up: legacy C{twisted.python.log.msg} lines emitted while a descriptor
is being read or written show the system C{-} instead of the descriptor's prefix (events of
C{twisted.logger} carry their own namespace and are unchanged). What it keeps: an exception
raised out of the dispatch (say, from a protocol's C{connectionLost}) is logged and the
remaining ready descriptors of that poll are still served, as with C{callWithLogger}.

C{twistd pomelo-connector} installs it when no reactor was chosen with C{twistd -r}; any Twisted
program may choose it with C{twistd -r pomelo-epoll}, C{trial --reactor=pomelo-epoll} or
L{install}. Linux only, as epoll.
"""

from __future__ import annotations

from functools import partial

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor
from twisted.logger import Logger

from ..adapters.internals import Internals

__all__ = ["EPOLL_INTERNALS", "PomeloEPollReactor", "install"]

_log = Logger()


#: What L{PomeloEPollReactor.doPoll} uses of C{EPollReactor} beyond its public interface.
EPOLL_INTERNALS = Internals(
    "pomelo-epoll",
    ("_poller", "_selectables", "_doReadOrWrite"),
    "Twisted's own EPollReactor.doPoll",
)


class PomeloEPollReactor(EPollReactor):
    """An L{EPollReactor} that dispatches ready descriptors without C{callWithLogger}.

    If this Twisted's C{EPollReactor} lacks a private name the override uses
    (L{EPOLL_INTERNALS}), the reactor polls with Twisted's own C{doPoll} instead.
    """

    def __init__(self) -> None:
        super().__init__()
        if not (EPOLL_INTERNALS.ok or EPOLL_INTERNALS.check(self)):
            self.doPoll = self.doIteration = partial(EPollReactor.doPoll, self)  # type: ignore[method-assign]

    def doPoll(self, timeout: float | None) -> None:
        """Wait up to C{timeout} seconds (forever if C{None}) and serve the ready descriptors."""
        try:
            # As EPollReactor: at most one event per tracked descriptor per poll.
            events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except InterruptedError:
            return  # a signal: the main loop runs its handlers and polls again
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue  # removed by the handling of an earlier event of this poll
            try:
                dispatch(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                _log.failure("unhandled error while serving {selectable}", selectable=selectable)

    doIteration = doPoll


def install() -> None:
    """Install a L{PomeloEPollReactor} as C{twisted.internet.reactor}."""
    installReactor(PomeloEPollReactor())
