# -*- test-case-name: tests.test_service,tests.test_limits,tests.test_metrics -*-
"""A Twisted service that runs a connector on one or more endpoints, drains, and shows metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..server.connector import Connector
from ..server.limits import read_blocklist_file

if TYPE_CHECKING:
    from .metrics import ConnectorMetrics, HealthResource

__all__ = ["ConnectorService"]


class ConnectorService(MultiService):
    """Listen on every endpoint description with one factory; on stop, drain.

    Stopping (SIGTERM under twistd) runs L{drain}: stop listening, kick every connected client
    with C{stop_reason}, and wait up to C{drain_timeout} seconds for them to go, so that the
    KICK packages reach them. L{drain} can also be called at any time, as an API. A port that
    cannot be bound fails C{startService}, which makes ``twistd`` exit non-zero.

    With C{blocklist_file}, the connector's blocklist is the configured entries plus the file's,
    and the file is re-read every C{blocklist_interval} seconds while the service runs: an edit
    applies to new connections without a restart (and a file that cannot be read keeps the
    list as it was).

    With C{metrics_endpoint} (an endpoint description such as
    C{"tcp:9100:interface=127.0.0.1"}), Prometheus metrics are served there at C{/metrics} and
    a health check at C{/healthz} (C{200 ok}, then C{503 draining} from the start of a drain).
    The connector's L{ConnectorMetrics<pomelo_twisted.metrics.ConnectorMetrics>} is used, or one
    is made. That endpoint is closed last, after the drain, so a scrape during it sees it.

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
    ) -> None:
        """
        @param drain_timeout: seconds a drain waits for kicked clients to go; C{None} for the
            connector's C{kick_close_timeout} (after which lingering clients are aborted).
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
        self.blocklist_interval = blocklist_interval
        self.draining = False
        #: Who waits for the drain under way (None before and after it).
        self._drain_waiters: list[Deferred[int]] | None = None
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
        for description in endpoints:
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
        _clearly(super().startService)

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
            self.log.info(
                "draining: stopped listening; kicked {count} clients with reason {reason!r}; "
                "waiting up to {timeout} s for them to go",
                count=count,
                reason=reason,
                timeout=timeout,
            )
            return self.connector.wait_closed(timeout)

        def done(result: object) -> None:
            if isinstance(result, Failure):
                self.log.failure("draining failed", result)
            left = len(self.connector.sockets)
            if left:
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


def _clearly(start: Callable[[], None]) -> None:
    """Run C{start}; a port that cannot be bound exits with one clear line (twistd: rc 1)."""
    try:
        start()
    except CannotListenError as e:
        raise SystemExit(f"pomelo-connector: {e}") from e
