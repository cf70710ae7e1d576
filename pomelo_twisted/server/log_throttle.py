# -*- test-case-name: tests.server.test_log_throttle,tests.server.test_logs -*-
"""Log throttles: what clients can make the server write is bounded (docs/security.md).

Every log line that clients can repeat at will goes through a throttle here, so that a bot or
a reconnect storm can neither fill the disk nor spend the server's CPU on formatting, and what
a throttle holds back is counted, never silently lost:

 - L{Throttle}: at most C{limit} events per window. Each connection has one for the lines its
   messages cause (an unknown route, a bad body, a failing handler) and one for its "over the
   request rate" line; what they refuse is counted in the metrics.
 - L{KeyedThrottle}: a L{Throttle} per key, for the connector's tracebacks (one per route).
 - L{RateLimitedLog}: the connector's crowd log, for the lines a crowd of clients repeats
   (refused connections, failed TLS handshakes): per kind of line, the first of a window is
   logged in full and the rest are counted in one summary line when the window ends.

All three count events in the same windows (L{Throttle}'s); they were two modules, C{throttle}
and C{logs}, with two window implementations. They are one module named for what they do to
the log, not C{limits}, which bounds what clients may send and hold (requests, connections,
buffers). L{Throttle} and L{KeyedThrottle} read no clock (their callers pass the time in, as
for the limits); L{RateLimitedLog} needs one for its summaries.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Final

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

__all__ = ["KeyedThrottle", "RateLimitedLog", "Throttle"]

#: The window end of a throttle that has seen no event: any time opens its first window.
_NEVER: Final = float("-inf")


def _check(interval: float, limit: int) -> None:
    if interval < 0 or limit < 1:
        raise ValueError("a throttle needs an interval >= 0 and a limit >= 1")


class Throttle:
    """At most C{limit} events in each window of C{interval} seconds.

    A window starts with the first event allowed after the previous one ended, so an idle
    throttle costs nothing and the first event always passes.

    @ivar suppressed: events refused so far.
    @ivar window_end: when the current window ends (the next event from then on opens a new
        one).
    """

    __slots__ = ("_count", "interval", "limit", "suppressed", "window_end")

    def __init__(self, interval: float, limit: int = 1) -> None:
        _check(interval, limit)
        self.interval = interval
        self.limit = limit
        self.suppressed = 0
        self.window_end = _NEVER
        self._count = 0

    def allow(self, now: float) -> bool:
        """Count an event at C{now}; return whether it may go ahead (be logged)."""
        if now >= self.window_end:
            self.window_end = now + self.interval
            self._count = 1
            return True
        if self._count < self.limit:
            self._count += 1
            return True
        self.suppressed += 1
        return False


class KeyedThrottle:
    """A L{Throttle} per key (a route), for at most C{max_keys} keys at a time.

    Past C{max_keys} the oldest key is forgotten (its next event passes), so that keys chosen by
    a client cannot grow memory.
    """

    __slots__ = ("_throttles", "interval", "limit", "max_keys", "suppressed")

    def __init__(self, interval: float, limit: int = 1, max_keys: int = 1024) -> None:
        _check(interval, limit)
        self.interval = interval
        self.limit = limit
        self.max_keys = max_keys
        self.suppressed = 0
        self._throttles: dict[Hashable, Throttle] = {}

    def allow(self, key: Hashable, now: float) -> bool:
        """Count an event for C{key} at C{now}; return whether it may go ahead."""
        throttles = self._throttles
        throttle = throttles.get(key)
        if throttle is None:
            if len(throttles) >= self.max_keys:
                del throttles[next(iter(throttles))]
            throttle = throttles[key] = Throttle(self.interval, self.limit)
        if throttle.allow(now):
            return True
        self.suppressed += 1
        return False

    def __len__(self) -> int:
        return len(self._throttles)


class RateLimitedLog:
    """At most one line per kind per C{interval} seconds, then one line counting the rest.

    The first event of a kind is logged in full. Events of the same kind within C{interval}
    seconds of it are only counted; when the interval ends, one line of the same level says
    how many there were. The next event after that is logged in full again.

    @ivar interval: the seconds an event of one kind silences the next ones for.
    """

    def __init__(self, clock: IReactorTime, interval: float = 10.0) -> None:
        _check(interval, 1)
        self.clock = clock
        self.interval = interval
        #: kind -> its windows; its C{suppressed} counts the events held back since the last
        #: summary, so a summary is due whenever it is not 0.
        self._kinds: dict[str, Throttle] = {}

    def emit(self, log: Logger, kind: str, level: LogLevel, format: str, /, **fields: Any) -> bool:
        """Log C{format} with C{fields} on C{log}, unless an event of C{kind} was logged less
        than C{interval} seconds ago; return whether it was logged.

        @param kind: what the summary line counts, e.g. C{"refusing connections over
            max_connections"}; one of a few fixed texts (never an address: each kind is
            remembered).
        """
        now = self.clock.seconds()
        throttle = self._kinds.get(kind)
        if throttle is None:
            throttle = self._kinds[kind] = Throttle(self.interval)
        if throttle.allow(now):
            log.emit(level, format, **fields)
            return True
        if throttle.suppressed == 1:  # the first held back since the last summary
            self.clock.callLater(
                throttle.window_end - now, self._summarise, log, kind, level, throttle
            )
        return False

    def _summarise(self, log: Logger, kind: str, level: LogLevel, throttle: Throttle) -> None:
        # A reactor running late may have let the next window open (and count) before this
        # call: those events are in this count, and the next one held back calls again.
        count, throttle.suppressed = throttle.suppressed, 0
        log.emit(
            level,
            "{kind}: {count} more in the last {interval:g} s (logged once per interval)",
            kind=kind,
            count=count,
            interval=self.interval,
        )
