# -*- test-case-name: tests.server.test_logs -*-
"""Log lines that a crowd of clients can repeat: at most one line, and one summary, per interval.

A warning about one refused connection is useful; ten thousand of them, when a bot or a
reconnect storm hits a limit, bury everything else. L{RateLimitedLog} logs the first event of a
kind at once, counts the next ones, and logs their count when the interval ends.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """At most one line per kind per C{interval} seconds, then one line counting the rest.

    The first event of a kind is logged in full. Events of the same kind within C{interval}
    seconds of it are only counted; when the interval ends, one line of the same level says
    how many there were. The next event after that is logged in full again.

    @ivar interval: the seconds an event of one kind silences the next ones for.
    """

    def __init__(self, clock: IReactorTime, interval: float = 10.0) -> None:
        self.clock = clock
        self.interval = interval
        #: kind -> (when its interval ends, events suppressed since, the summary's timer)
        self._windows: dict[str, tuple[float, int, IDelayedCall | None]] = {}

    def emit(self, log: Logger, kind: str, level: LogLevel, format: str, /, **fields: Any) -> bool:
        """Log C{format} with C{fields} on C{log}, unless an event of C{kind} was logged less
        than C{interval} seconds ago; return whether it was logged.

        @param kind: what the summary line counts, e.g. C{"refusing connections over
            max_connections"}; one of a few fixed texts (never an address: each kind is
            remembered).
        """
        now = self.clock.seconds()
        window = self._windows.get(kind)
        if window is None or now >= window[0]:
            self._windows[kind] = (now + self.interval, 0, None)
            log.emit(level, format, **fields)
            return True
        end, suppressed, call = window
        if call is None:
            call = self.clock.callLater(end - now, self._summarise, log, kind, level)
        self._windows[kind] = (end, suppressed + 1, call)
        return False

    def _summarise(self, log: Logger, kind: str, level: LogLevel) -> None:
        _, suppressed, _ = self._windows.pop(kind)
        log.emit(
            level,
            "{kind}: {count} more in the last {interval:g} s (logged once per interval)",
            kind=kind,
            count=suppressed,
            interval=self.interval,
        )
