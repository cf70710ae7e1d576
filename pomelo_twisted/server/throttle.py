# -*- test-case-name: tests.server.test_throttle -*-
"""Log throttles: what a client can make the server write is bounded (docs/security.md).

A client that triggers a log line on every message (an unknown route, a bad body, a handler
that raises) must not be able to fill the disk or spend the server's CPU on formatting. Each
connection has a L{Throttle} for the lines its messages cause; the connector has a
L{KeyedThrottle} for tracebacks, one per route. What a throttle refuses is counted (here and
in the metrics), never silently lost.

Like the limits in L{pomelo_twisted.server.limits}, nothing here reads a clock: callers pass
the time in.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["KeyedThrottle", "Throttle"]


class Throttle:
    """At most C{limit} events in each window of C{interval} seconds.

    A window starts with the first event allowed after the previous one ended, so an idle
    throttle costs nothing and the first event always passes.

    @ivar suppressed: events refused so far.
    """

    __slots__ = ("_count", "_start", "interval", "limit", "suppressed")

    def __init__(self, interval: float, limit: int = 1) -> None:
        if interval < 0 or limit < 1:
            raise ValueError("a throttle needs an interval >= 0 and a limit >= 1")
        self.interval = interval
        self.limit = limit
        self.suppressed = 0
        self._start: float | None = None
        self._count = 0

    def allow(self, now: float) -> bool:
        """Count an event at C{now}; return whether it may go ahead (be logged)."""
        start = self._start
        if start is None or now - start >= self.interval:
            self._start = now
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
        Throttle(interval, limit)  # the same checks
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
