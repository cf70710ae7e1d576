# -*- test-case-name: tests.test_service,tests.test_limits -*-
"""A Twisted service that runs a connector on one or more endpoints and drains on stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .connector import Connector
from .limits import read_blocklist_file

__all__ = ["ConnectorService"]


class ConnectorService(MultiService):
    """Listen on every endpoint description with one factory; on stop, kick and drain.

    Stopping stops listening first, then kicks every connected client with C{stop_reason} and
    waits up to C{drain_timeout} seconds for them to go, so that the KICK packages reach them.
    A port that cannot be bound fails C{startService}, which makes ``twistd`` exit non-zero.

    With C{blocklist_file}, the connector's blocklist is the configured entries plus the file's,
    and the file is re-read every C{blocklist_interval} seconds while the service runs: an edit
    applies to new connections without a restart (and a file that cannot be read keeps the
    list as it was).
    """

    log = Logger()

    def __init__(
        self,
        factory: Any,
        endpoints: list[str],
        reactor: Any,
        stop_reason: str = "server shutting down",
        drain_timeout: float = 3.0,
        blocklist_file: str | None = None,
        blocklist_interval: float = 5.0,
    ) -> None:
        super().__init__()
        self.factory = factory
        self.connector: Connector = factory.connector
        self.reactor: IReactorTime = reactor
        self.stop_reason = stop_reason
        self.drain_timeout = drain_timeout
        self.blocklist_file = blocklist_file
        self.blocklist_interval = blocklist_interval
        self._blocklist_text: str | None = None
        self._blocklist_poll: LoopingCall | None = None
        for description in endpoints:
            strports.service(description, factory, reactor=reactor).setServiceParent(self)

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

    def stopService(self) -> Deferred[Any]:
        poll, self._blocklist_poll = self._blocklist_poll, None
        if poll is not None and poll.running:
            poll.stop()
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
