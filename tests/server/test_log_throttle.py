"""Log lines a client can cause are throttled per connection, tracebacks per route (issue 12).

Before, one address within every default limit grew the log by megabytes a second: an INFO
line per unknown-route notify, a warning and an error per bad protobuf body, a traceback per
unserialisable response. Now each connection logs at most CLIENT_LOG_LINES such lines per
CLIENT_LOG_INTERVAL, a traceback is logged once per route per TRACEBACK_INTERVAL, and the rest
are counted in C{pomelo_log_lines_suppressed_total}. The crowd log (L{RateLimitedLog}), for
lines a crowd of clients repeats, lives in the same module; tests/server/test_logs.py has the
connector's use of it.
"""

from __future__ import annotations

from dataclasses import replace

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import LogEvent, Logger, LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.ops.metrics import ConnectorMetrics
from pomelo_twisted.server.connector import TRACEBACK_INTERVAL
from pomelo_twisted.server.log_throttle import KeyedThrottle, RateLimitedLog, Throttle
from pomelo_twisted.server.socket import CLIENT_LOG_INTERVAL, CLIENT_LOG_LINES
from tests.support.shedding import (
    CONFIG,
    OTHER_PEER,
    RAISES,
    UNSERIALISABLE,
    Harness,
    notify,
    request,
    responses,
)

PROTO = "connector.entryHandler.proto"
UNKNOWN = "connector.nowhere.nothing"


def lines(events: list[LogEvent], text: str) -> list[LogEvent]:
    return [e for e in events if text in formatEvent(e)]


def formatted(events: list[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events]


class ThrottleTests(SynchronousTestCase):
    def test_limit_per_window(self) -> None:
        throttle = Throttle(10.0, 3)
        self.assertEqual([throttle.allow(t * 0.1) for t in range(5)], [True] * 3 + [False] * 2)
        self.assertEqual(throttle.suppressed, 2)
        self.assertFalse(throttle.allow(9.9))
        self.assertTrue(throttle.allow(10.0))  # a new window starts with the next event
        self.assertTrue(throttle.allow(19.0))
        self.assertTrue(throttle.allow(19.5))
        self.assertFalse(throttle.allow(19.9))
        self.assertEqual(throttle.suppressed, 4)

    def test_bad_arguments(self) -> None:
        self.assertRaises(ValueError, Throttle, -1.0)
        self.assertRaises(ValueError, Throttle, 1.0, 0)
        self.assertRaises(ValueError, KeyedThrottle, 1.0, 0)

    def test_keyed(self) -> None:
        throttle = KeyedThrottle(60.0)
        self.assertTrue(throttle.allow("a", 0.0))
        self.assertTrue(throttle.allow("b", 0.0))
        self.assertFalse(throttle.allow("a", 59.0))
        self.assertTrue(throttle.allow("a", 60.0))
        self.assertEqual(throttle.suppressed, 1)

    def test_keys_are_bounded(self) -> None:
        throttle = KeyedThrottle(60.0, max_keys=3)
        for key in range(100):
            throttle.allow(key, 0.0)
        self.assertEqual(len(throttle), 3)
        self.assertFalse(throttle.allow(99, 1.0))
        self.assertTrue(throttle.allow(0, 1.0))  # forgotten: allowed again


class RateLimitedLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.log = RateLimitedLog(self.clock, interval=10)
        self.logger = Logger(namespace="test")

    def emit(self, n: int) -> bool:
        return self.log.emit(self.logger, "refusing x", LogLevel.warn, "refusing {n}", n=n)

    def test_first_then_summary(self) -> None:
        """The first event in full, the rest of the interval counted in one line."""
        with capturedLogs() as events:
            self.assertEqual([self.emit(n) for n in range(5)], [True] + [False] * 4)
            self.clock.advance(9)
            self.emit(5)
            self.assertEqual(formatted(events), ["refusing 0"])
            self.clock.advance(1)
        self.assertEqual(
            formatted(events),
            ["refusing 0", "refusing x: 5 more in the last 10 s (logged once per interval)"],
        )
        self.assertEqual({e["log_level"] for e in events}, {LogLevel.warn})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_next_interval_logs_in_full(self) -> None:
        with capturedLogs() as events:
            self.emit(1)
            self.clock.advance(10)
            self.emit(2)
        self.assertEqual(formatted(events), ["refusing 1", "refusing 2"])
        self.assertEqual(self.clock.getDelayedCalls(), [])  # nothing counted, no summary due

    def test_kinds_apart(self) -> None:
        with capturedLogs() as events:
            self.emit(1)
            self.log.emit(self.logger, "other", LogLevel.info, "other {n}", n=2)
        self.assertEqual(formatted(events), ["refusing 1", "other 2"])

    def test_late_summary(self) -> None:
        """A reactor that reads a socket before it runs a due summary: the next window opens
        first, and still no count is lost, no line logged early, no error raised."""
        with capturedLogs() as events:
            for n in range(4):
                self.emit(n)  # 0 logged, 1 to 3 held back: a summary due at 10
            self.clock.rightNow = 10.0  # the time passes, the summary has not run yet
            self.assertTrue(self.emit(4))  # a new window
            self.assertFalse(self.emit(5))
            self.clock.advance(0)  # the summary runs, late
            self.assertFalse(self.emit(6))  # still the window opened at 10
            self.clock.advance(10)
        summary = "refusing x: {} more in the last 10 s (logged once per interval)"
        self.assertEqual(
            formatted(events),
            ["refusing 0", "refusing 4", summary.format(4), summary.format(1)],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bad_interval(self) -> None:
        """Refused when built, not at the first line (in the middle of admitting a client)."""
        self.assertRaises(ValueError, RateLimitedLog, self.clock, -1.0)


class LogThrottleTests(Harness):
    # Every message reaches its handler (only the log throttle is under test), and connections
    # stay open across the intervals without heartbeats.
    config = replace(
        CONFIG, heartbeat=0, max_requests_per_second=None, max_requests_per_second_per_ip=None
    )

    def setUp(self) -> None:
        super().setUp()
        self.metrics = ConnectorMetrics(self.connector)

    def suppressed(self, kind: str) -> str:
        return f'pomelo_log_lines_suppressed_total{{kind="{kind}"}}'

    def assertSuppressed(self, kind: str, count: int) -> None:
        self.assertIn(f"{self.suppressed(kind)} {count:.1f}", self.metrics.exposition().decode())

    def test_unknown_route_notifies(self) -> None:
        protocol, _ = self.working()
        with capturedLogs() as events:
            self.receive(protocol, notify(UNKNOWN) * 1000)
        self.assertEqual(len(lines(events, UNKNOWN)), CLIENT_LOG_LINES)
        self.assertSuppressed("line", 1000 - CLIENT_LOG_LINES)
        # the next window logs again, as few
        self.clock.advance(CLIENT_LOG_INTERVAL)
        with capturedLogs() as events:
            for _ in range(10):
                self.receive(protocol, notify(UNKNOWN) * 100)
                self.clock.advance(CLIENT_LOG_INTERVAL / 10)
        self.assertEqual(len(lines(events, UNKNOWN)), CLIENT_LOG_LINES)
        self.assertSuppressed("line", 2000 - 2 * CLIENT_LOG_LINES)

    def test_per_connection(self) -> None:
        """Each connection has its own budget: one client cannot silence another's lines."""
        first, _ = self.working()
        second, _ = self.working(OTHER_PEER)
        with capturedLogs() as events:
            self.receive(first, notify(UNKNOWN) * 100)
            self.receive(second, notify(UNKNOWN))
        found = lines(events, UNKNOWN)
        self.assertEqual(len(found), CLIENT_LOG_LINES + 1)

    def test_bad_protobuf_bodies(self) -> None:
        """A warning per bad body (the error line for the 500 not fitting the proto is gone)."""
        self.build(self.config, use_protobuf=True)
        self.metrics = ConnectorMetrics(self.connector)
        protocol, transport = self.working()
        with capturedLogs() as events:
            self.receive(protocol, *(request(mid, PROTO, b"\xff" * 8) for mid in range(1, 301)))
        self.assertEqual(len(responses(transport.value())), 300)  # every request answered
        self.assertEqual(len(lines(events, "bad protobuf body")), CLIENT_LOG_LINES)
        self.assertEqual(lines(events, "does not fit"), [])
        self.assertSuppressed("line", 300 - CLIENT_LOG_LINES)

    def test_one_traceback_per_route_per_interval(self) -> None:
        first, transport = self.working()
        second, _ = self.working(OTHER_PEER)
        third, _ = self.working(IPv4Address("TCP", "203.0.113.9", 1))
        with capturedLogs() as events:
            self.receive(first, *(request(mid, UNSERIALISABLE) for mid in range(1, 101)))
            self.receive(second, *(request(mid, UNSERIALISABLE) for mid in range(1, 101)))
            self.receive(third, request(1, RAISES))  # another route: its own traceback
        self.flushLoggedErrors(TypeError, RuntimeError)  # counted below, from capturedLogs
        # every request was answered {"code":500}
        self.assertEqual(
            [body for _, body in responses(transport.value())], [b'{"code":500}'] * 100
        )
        tracebacks = [e for e in events if "log_failure" in e]
        self.assertEqual(len(tracebacks), 2)
        self.assertEqual(sorted(e["route"] for e in tracebacks), [RAISES, UNSERIALISABLE])
        short = [e for e in events if "log_failure" not in e and "JSON" in formatEvent(e)]
        # the rest of both connections' budgets: one line each, without a traceback
        self.assertEqual(len(short), 2 * CLIENT_LOG_LINES - 1)
        self.assertIn("TypeError", formatEvent(short[0]))
        self.assertNotIn("Traceback", formatEvent(short[0]))
        self.assertSuppressed("traceback", 2 * CLIENT_LOG_LINES - 1)
        self.assertSuppressed("line", 200 - 2 * CLIENT_LOG_LINES)
        # a minute later, a traceback again
        self.clock.advance(TRACEBACK_INTERVAL)
        with capturedLogs() as events:
            self.receive(first, request(102, UNSERIALISABLE))
        self.assertEqual(len([e for e in events if "log_failure" in e]), 1)
        self.flushLoggedErrors(TypeError)

    def test_failures_inside_the_filter_chain(self) -> None:
        """With filters or an error handler the app logs its own failures: still one
        traceback per route per interval, the rest counted."""
        self.connector.app.before(lambda route, msg, session: None)
        first, transport = self.working()
        second, _ = self.working(OTHER_PEER)
        with capturedLogs() as events:
            self.receive(first, *(request(mid, RAISES) for mid in range(1, 51)))
            self.receive(second, *(request(mid, RAISES) for mid in range(1, 51)))
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual([body for _, body in responses(transport.value())], [b'{"code":500}'] * 50)
        self.assertEqual(len([e for e in events if "log_failure" in e]), 1)
        self.assertSuppressed("traceback", 99)
        self.clock.advance(TRACEBACK_INTERVAL)
        with capturedLogs() as events:
            self.receive(first, request(51, RAISES))
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(len([e for e in events if "log_failure" in e]), 1)

    def test_well_behaved_client_logs_nothing(self) -> None:
        protocol, _ = self.working()
        with capturedLogs() as events:
            self.receive(protocol, *(request(mid) for mid in range(1, 100)))
        self.assertEqual([e for e in events if e.get("log_level").name != "debug"], [])
        self.assertIsNone(self.socket_of(protocol)._log_throttle)  # made at the first line
