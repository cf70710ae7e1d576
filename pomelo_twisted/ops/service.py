# -*- test-case-name: tests.ops.test_service,tests.server.test_limits,tests.ops.test_metrics -*-
"""A Twisted service that runs a connector on one or more endpoints, drains, and shows metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..server.connector import Connector
from ..server.limits import read_blocklist_file
from .endpoints import with_backlog
from .signals import ShutdownSignals, install_shutdown_signals, stop_on_signal

if TYPE_CHECKING:
    from .metrics import ConnectorMetrics, HealthResource

__all__ = ["OPEN_FILES_MARGIN", "ConnectorService"]


class ConnectorService(MultiService):
    """Listen on every endpoint description with one factory; on stop, drain.

    Stopping (SIGTERM under twistd) runs L{drain}: stop listening, kick every connected client
    with C{stop_reason}, and wait up to C{drain_timeout} seconds for them to go, so that the
    KICK packages reach them. L{drain} can also be called at any time, as an API. A port that
    cannot be bound fails C{startService}, which makes ``twistd`` exit non-zero.

    A C{tcp:} or C{ssl:} endpoint that names no C{backlog=} gets C{backlog=511} (as
    Node), not Twisted's 50. Once listening, one line says where (with C{startup_note} if
    given), and a warning follows if the open-files limit (C{ulimit -n}) is too low for the
    connector's C{max_connections}.

    With C{blocklist_file}, the connector's blocklist is the configured entries plus the file's,
    and the file is re-read every C{blocklist_interval} seconds while the service runs: an edit
    applies to new connections without a restart (and a file that cannot be read keeps the
    list as it was).

    With C{metrics_endpoint} (an endpoint description such as
    C{"tcp:9100:interface=127.0.0.1"}), Prometheus metrics are served there at C{/metrics} and
    a health check at C{/healthz} (C{200 ok}, then C{503 draining} from the start of a drain).
    The connector's L{ConnectorMetrics<pomelo_twisted.ops.metrics.ConnectorMetrics>} is used, or one
    is made. That endpoint is closed last, after the drain, so a scrape during it sees it.

    With C{shutdown_signals} (as C{twistd pomelo-connector} runs it), SIGTERM and SIGINT are
    handled by L{ShutdownSignals} once the reactor runs, in place of Twisted's handlers, which
    log from inside the signal handler and can hang the process there (Twisted #7736). The first
    signal stops the reactor, hence this service (the drain); a second one L{hurry}s the drain.

    @ivar draining: whether a drain has begun.
    @ivar metrics_service: the service listening on C{metrics_endpoint}, or C{None}.
    """

    log = Logger()

    def __init__(
        self,
        factory: Any,
        endpoints: list[str],
        reactor: Any,
        stop_reason: str = "server shutting down",
        drain_timeout: float | None = 3.0,
        blocklist_file: str | None = None,
        blocklist_interval: float = 5.0,
        metrics_endpoint: str | None = None,
        startup_note: str = "",
        shutdown_signals: bool = False,
    ) -> None:
        """
        @param startup_note: said at the end of the line logged once listening.
        @param drain_timeout: seconds a drain waits for kicked clients to go; C{None} for the
            connector's C{kick_close_timeout} (after which lingering clients are aborted).
        @param shutdown_signals: handle SIGTERM and SIGINT with L{ShutdownSignals} (they stay
            installed until the process exits).
        @raise ValueError: an endpoint description cannot be parsed.
        """
        super().__init__()
        self.factory = factory
        self.connector: Connector = factory.connector
        self.reactor: IReactorTime = reactor
        self.stop_reason = stop_reason
        if drain_timeout is None:
            drain_timeout = self.connector.config.kick_close_timeout
        self.drain_timeout = drain_timeout
        self.blocklist_file = blocklist_file
        self.startup_note = startup_note
        self.blocklist_interval = blocklist_interval
        self.draining = False
        #: Who waits for the drain under way (None before and after it).
        self._drain_waiters: list[Deferred[int]] | None = None
        #: The drain's wait for the kicked clients to go, while it waits.
        self._drain_wait: Deferred[None] | None = None
        self._hurried = False
        self.shutdown_signals = shutdown_signals
        self._signals: ShutdownSignals | None = None
        self._blocklist_text: str | None = None
        self._blocklist_poll: LoopingCall | None = None
        self.metrics_service: IService | None = None
        #: With C{metrics_endpoint}: the metrics served, and the C{/healthz} page.
        self.metrics: ConnectorMetrics | None = None
        self.health: HealthResource | None = None
        if metrics_endpoint is not None:
            from .metrics import ConnectorMetrics, HealthResource, metrics_site

            metrics = self.connector.metrics
            if not isinstance(metrics, ConnectorMetrics):
                metrics = ConnectorMetrics(self.connector)
            metrics.add_kick_reason(stop_reason)
            self.metrics = metrics
            self.health = HealthResource(lambda: self.draining)
            site = metrics_site(metrics, lambda: self.draining, self.health)
            # The first child: started first, and stopped last (see stopService).
            self.metrics_service = strports.service(metrics_endpoint, site, reactor=reactor)
            self.metrics_service.setServiceParent(self)
        self._listeners: list[IService] = []
        self.endpoints = [with_backlog(description) for description in endpoints]
        for description in self.endpoints:
            listener = strports.service(description, factory, reactor=reactor)
            listener.setServiceParent(self)
            self._listeners.append(listener)

    def privilegedStartService(self) -> None:
        _clearly(super().privilegedStartService)

    def startService(self) -> None:
        if self.blocklist_file is not None:
            self.reload_blocklist()
            poll = LoopingCall(self.reload_blocklist)
            poll.clock = self.reactor
            poll.start(self.blocklist_interval, now=False)
            self._blocklist_poll = poll
        if self.shutdown_signals and self._signals is None:
            reactor: Any = self.reactor  # a full reactor: it runs, reads and stops
            on_signal = stop_on_signal(reactor, hurry=self.hurry)
            self._signals = install_shutdown_signals(reactor, on_signal)
        _clearly(super().startService)
        self.log.info(
            "listening on {endpoints}{note}",
            endpoints=", ".join(self.endpoints),
            note=f" ({self.startup_note})" if self.startup_note else "",
        )
        self.check_open_files_limit()

    def check_open_files_limit(self) -> bool:
        """Warn if the open-files limit leaves no room for C{max_connections}; return whether.

        Each connection is a file descriptor; past the limit, accepting fails with EMFILE
        while the server still has slots. L{OPEN_FILES_MARGIN} are kept for listeners, logs
        and whatever the app opens.
        """
        limit = self.connector.config.max_connections
        soft = _open_files_limit()
        if not limit or soft is None or soft >= limit + OPEN_FILES_MARGIN:
            return False
        self.log.warn(
            "the open-files limit (ulimit -n) is {soft}, too low for max_connections {limit}: "
            "raise it to {wanted} or more (ulimit -n, or LimitNOFILE= in a systemd unit)",
            soft=soft,
            limit=limit,
            wanted=limit + OPEN_FILES_MARGIN,
        )
        return True

    def reload_blocklist(self) -> bool:
        """Re-read C{blocklist_file} if it changed; return whether the blocklist was replaced."""
        path = self.blocklist_file
        if path is None:
            return False
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if text == self._blocklist_text:
                return False
            entries, errors = read_blocklist_file(path)
        except OSError as e:
            if self._blocklist_text is not None:  # say it once, not every poll
                self.log.error("blocklist file unreadable, keeping the list: {e}", e=e)
                self._blocklist_text = None
            return False
        for error in errors:
            self.log.error("blocklist file: skipping {error}", error=error)
        self._blocklist_text = text
        static = self.connector.config.blocklist
        self.connector.blocklist.replace([*static, *entries])
        self.log.info(
            "blocklist: {count} entries ({file} from {path}); new connections are checked "
            "against it",
            count=len(self.connector.blocklist),
            file=len(entries),
            path=path,
        )
        return True

    def drain(self, reason: str | None = None, timeout: float | None = None) -> Deferred[int]:
        """Stop accepting, kick every client with C{reason}, wait up to C{timeout} for them to go.

        Listening stops on every connector endpoint (not on the metrics endpoint, whose
        C{/healthz} answers C{503 draining} from now on, and whose C{pomelo_draining} gauge is 1).
        Each working connection gets a KICK with C{reason} and is closed gracefully; a client
        that lingers is aborted after the connector's C{kick_close_timeout}. Connections not yet
        classified as TCP or WebSocket are not kicked. The service keeps running: stop it (or
        the process) afterwards. A drain happens once; calling again waits for the first one.

        @param reason: the kick reason; C{stop_reason} by default.
        @param timeout: seconds to wait; C{drain_timeout} by default.
        @return: a Deferred firing with the number of connections still open when the clients
            had all gone (0) or the deadline passed.
        """
        if self.draining:
            if self._drain_waiters is None:  # over: the clients are gone or the deadline passed
                return succeed(len(self.connector.sockets))
            waiter: Deferred[int] = Deferred()
            self._drain_waiters.append(waiter)
            return waiter
        d: Deferred[int] = Deferred()
        self._drain_waiters = [d]
        reason = self.stop_reason if reason is None else reason
        timeout = self.drain_timeout if timeout is None else timeout
        self.draining = self.connector.draining = True
        if self.connector.metrics is not None:
            self.connector.metrics.add_kick_reason(reason)
        if self._blocklist_poll is not None and self._blocklist_poll.running:
            self._blocklist_poll.stop()
        self._blocklist_poll = None
        stopping = [maybeDeferred(s.stopService) for s in self._listeners if s.running]
        stopped: Deferred[Any] = DeferredList(stopping) if stopping else succeed(None)

        def kick(_: object) -> Deferred[None]:
            count = self.connector.kick_all(reason)
            wait = 0.0 if self._hurried else timeout
            self.log.info(
                "draining: stopped listening; kicked {count} clients with reason {reason!r}; "
                "waiting up to {timeout} s for them to go",
                count=count,
                reason=reason,
                timeout=wait,
            )
            self._drain_wait = self.connector.wait_closed(wait)
            return self._drain_wait

        def done(result: object) -> None:
            self._drain_wait = None
            left = len(self.connector.sockets)
            if isinstance(result, Failure) and not result.check(CancelledError):  # not hurry()
                self.log.failure("draining failed", result)
            if left and self._hurried:
                self.log.warn("drain cut short: {left} clients still connected", left=left)
            elif left:
                self.log.warn(
                    "drained: {left} clients still connected after {timeout} s",
                    left=left,
                    timeout=timeout,
                )
            else:
                self.log.info("drained: every client has gone")
            waiters, self._drain_waiters = self._drain_waiters or [], None
            for waiter in waiters:
                waiter.callback(left)

        stopped.addCallback(kick).addBoth(done)
        return d

    def hurry(self) -> None:
        """Stop waiting for kicked clients: end the drain under way now, or the next one at once.

        The clients are still kicked; those that linger are cut off after the connector's
        C{kick_close_timeout}, or when the reactor stops. Under C{shutdown_signals}, a second
        SIGTERM or SIGINT calls this.
        """
        self._hurried = True
        wait, self._drain_wait = self._drain_wait, None
        if wait is not None:
            wait.cancel()  # done() sees the CancelledError; the later callback is ignored

    def stopService(self) -> Deferred[Any]:
        """Drain (or wait for the drain under way), then stop the metrics endpoint."""
        poll, self._blocklist_poll = self._blocklist_poll, None
        if poll is not None and poll.running:
            poll.stop()

        def rest(_: object) -> Deferred[Any]:
            Service.stopService(self)
            running = [s for s in reversed(list(self)) if s.running]
            return DeferredList([maybeDeferred(s.stopService) for s in running])

        return self.drain(self.stop_reason, self.drain_timeout).addCallback(rest)


#: File descriptors kept beyond C{max_connections} by L{ConnectorService.check_open_files_limit}.
OPEN_FILES_MARGIN = 64


def _open_files_limit() -> int | None:
    """The soft limit on open files, or C{None} when unknown or unlimited."""
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def _clearly(start: Callable[[], None]) -> None:
    """Run C{start}; a port that cannot be bound exits with one clear line (twistd: rc 1)."""
    try:
        start()
    except CannotListenError as e:
        raise SystemExit(f"pomelo-connector: {e}") from e
