"""A Twisted service that runs a connector on one or more endpoints and drains on stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .connector import Connector

__all__ = ["ConnectorService"]


class ConnectorService(MultiService):
    """Listen on every endpoint description with one factory; on stop, kick and drain.

    Stopping stops listening first, then kicks every connected client with C{stop_reason} and
    waits up to C{drain_timeout} seconds for them to go, so that the KICK packages reach them.
    A port that cannot be bound fails C{startService}, which makes ``twistd`` exit non-zero.
    """

    log = Logger()

    def __init__(
        self,
        factory: Any,
        endpoints: list[str],
        reactor: Any,
        stop_reason: str = "server shutting down",
        drain_timeout: float = 3.0,
    ) -> None:
        super().__init__()
        self.factory = factory
        self.connector: Connector = factory.connector
        self.reactor: IReactorTime = reactor
        self.stop_reason = stop_reason
        self.drain_timeout = drain_timeout
        for description in endpoints:
            strports.service(description, factory, reactor=reactor).setServiceParent(self)

    def privilegedStartService(self) -> None:
        _clearly(super().privilegedStartService)

    def startService(self) -> None:
        _clearly(super().startService)

    def stopService(self) -> Deferred[Any]:
        stopped = super().stopService() or succeed(None)

        def drain(_: Any) -> Deferred[Any]:
            count = self.connector.kick_all(self.stop_reason)
            self.log.info("stopped listening; kicked {count} clients", count=count)
            return self.connector.wait_closed(self.drain_timeout)

        return stopped.addCallback(drain)


def _clearly(start: Callable[[], None]) -> None:
    """Run C{start}; a port that cannot be bound exits with one clear line (twistd: rc 1)."""
    try:
        start()
    except CannotListenError as e:
        raise SystemExit(f"pomelo-connector: {e}") from e
