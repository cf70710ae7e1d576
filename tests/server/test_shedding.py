"""Shedding instead of answering (issue 12): a connection over a request rate is not read.

Before, 500 connections from one address, each over its rate, had every request answered 429
and kept the server at 100 % CPU. Now a connection whose bucket (its own, or its address's
shared one) is empty is answered 429 for what was already read, then not read until the bucket
is full again; one that goes straight back over for
C{rate_limit_close_after} seconds is aborted. benchmarks/noisy_neighbour.py measures the effect
on a real socket.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from pomelo_twisted.ops import tap
from pomelo_twisted.ops.metrics import ConnectorMetrics
from pomelo_twisted.server.closing import close_cause
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.limits import RATE_LIMITED_CODE, SharedBuckets, TokenBucket
from tests.support.shedding import (
    CONFIG,
    HEARTBEAT,
    OTHER_PEER,
    PEER,
    Harness,
    client_frame,
    notify,
    request,
    responses,
)


def codes(written: bytes) -> list[int]:
    return [json.loads(body)["code"] for _, body in responses(written)]


class ShedHarness(Harness):
    """Shedding without its random jitter unless a test sets C{jitter} (in [0, 1))."""

    jitter = 0.0

    def build(self, config: ConnectorConfig, **changes: Any) -> None:
        super().build(config, **changes)
        self.connector.random = lambda: self.jitter


class PiecesTests(Harness):
    def test_bucket_wait(self) -> None:
        bucket = TokenBucket(rate=2.0, burst=4, now=0.0)
        self.assertEqual(bucket.wait(4, 0.0), 0.0)
        for _ in range(4):
            bucket.take(0.0)
        self.assertEqual(bucket.wait(2, 0.0), 1.0)
        self.assertEqual(bucket.wait(2, 0.5), 0.5)
        self.assertEqual(bucket.wait(10, 0.0), 2.0)  # never more than the burst

    def test_shared_buckets(self) -> None:
        buckets = SharedBuckets(rate=1.0, burst=2)
        a = buckets.acquire("a", 0.0)
        self.assertIs(buckets.acquire("a", 0.0), a)
        self.assertIsNot(buckets.acquire("b", 0.0), a)
        buckets.release("a")
        self.assertEqual(len(buckets), 2)
        buckets.release("a")
        buckets.release("b")
        buckets.release("b")  # one too many: nothing to free
        self.assertEqual(len(buckets), 0)

    def test_config_checks(self) -> None:
        self.assertRaises(ValueError, ConnectorConfig, max_requests_per_second_per_ip=-1)
        self.assertRaises(ValueError, ConnectorConfig, rate_limit_close_after=-1)

    def test_twistd_options(self) -> None:
        options = tap.Options()
        options.parseOptions([])
        config = options.connector_config()
        self.assertEqual(config.max_requests_per_second_per_ip, 2000.0)
        self.assertEqual(config.rate_limit_close_after, 10.0)
        options = tap.Options()
        options.parseOptions(
            ["--max-requests-per-second-per-ip", "50", "--rate-limit-close-after", "0"]
        )
        config = options.connector_config()
        self.assertEqual(config.max_requests_per_second_per_ip, 50.0)
        self.assertIsNone(config.rate_limit_close_after)
        options = tap.Options()
        options.parseOptions(["--max-requests-per-second-per-ip", "0"])
        self.assertIsNone(options.connector_config().max_requests_per_second_per_ip)


class ConnectionRateTests(ShedHarness):
    config = replace(
        CONFIG,
        max_requests_per_second=2,
        request_burst=3,
        max_requests_per_second_per_ip=None,
        rate_limit_close_after=5.0,
    )

    def test_over_rate_answers_what_was_read_then_stops_reading(self) -> None:
        protocol, transport = self.working()
        socket = self.socket_of(protocol)
        self.receive(protocol, b"".join(request(mid) for mid in range(1, 6)))
        self.assertEqual(codes(transport.value()), [200, 200, 200, 429, 429])
        self.assertFalse(transport.reading)
        self.assertTrue(socket.shedding)
        # read again once the bucket is full (3 tokens at 2 a second): 1.5 s
        self.clock.advance(1.49)
        self.assertFalse(transport.reading)
        self.clock.advance(0.01)
        self.assertTrue(transport.reading)
        self.assertFalse(socket.shedding)
        transport.clear()
        self.receive(protocol, request(6), request(7))
        self.assertEqual(codes(transport.value()), [200, 200])
        self.assertFalse(transport.disconnecting)

    def test_jitter(self) -> None:
        """Read again after the bucket's wait and up to half as long again, at random."""
        self.jitter = 0.5
        protocol, transport = self.working()
        self.receive(protocol, request(1) * 5)
        self.clock.advance(1.87)  # 1.5 s, and a quarter of that (half of SHED_JITTER's 0.5)
        self.assertFalse(transport.reading)
        self.clock.advance(0.01)
        self.assertTrue(transport.reading)

    def test_notify_over_rate_sheds_too(self) -> None:
        protocol, transport = self.working()
        self.receive(protocol, notify() * 4)
        self.assertFalse(transport.reading)

    def test_staying_over_the_rate_is_aborted(self) -> None:
        metrics = ConnectorMetrics(self.connector)
        protocol, transport = self.working()
        socket = self.socket_of(protocol)
        with capturedLogs() as events:
            for mid in range(1, 20):
                self.receive(protocol, HEARTBEAT, request(mid) * 5)
                if transport.disconnected:
                    break
                self.clock.advance(1.5)  # shed until the bucket is full, then straight back over
        self.assertTrue(transport.disconnected)  # aborted
        self.assertEqual(self.clock.seconds(), 6.0)  # the first shed at least 5 s after 0
        # the last read: a full bucket (3 tokens), then the 429 that closes it leaves before
        # the abort; the fifth request of that read is not handled
        self.assertEqual(codes(transport.value())[-4:], [200, 200, 200, 429])
        self.assertEqual(len(codes(transport.value())), 5 * 4 + 4)
        self.assertEqual(close_cause(socket.close_reason), "limit")
        [line] = [formatEvent(e) for e in events if "rate_limit_close_after" in formatEvent(e)]
        self.assertIn("192.0.2.7", line)
        self.assertIn('pomelo_closes_total{cause="limit"} 1.0', metrics.exposition().decode())

    def test_occasional_bursts_are_kept(self) -> None:
        """Going over now and then (not straight back over after a shed) never closes."""
        protocol, transport = self.working()
        for mid in range(1, 30):
            self.receive(protocol, HEARTBEAT, request(mid) * 5)
            self.clock.advance(1.5)  # read again
            self.clock.advance(1.5)  # quiet for more than a second
        self.assertFalse(transport.disconnecting)

    def test_off(self) -> None:
        self.build(self.config, rate_limit_close_after=None)
        protocol, transport = self.working()
        for mid in range(1, 30):
            self.receive(protocol, HEARTBEAT, request(mid) * 5)
            self.clock.advance(1)
        self.assertFalse(transport.disconnecting)

    def test_lost_while_shed_leaves_no_timer(self) -> None:
        protocol, transport = self.working()
        self.receive(protocol, request(1) * 5)
        self.assertFalse(transport.reading)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_well_behaved_client_gets_no_timer(self) -> None:
        """Under the rate: nothing paused, no timer but the heartbeat's, nothing logged."""
        protocol, transport = self.working()
        with capturedLogs() as events:
            for mid in range(1, 20):
                self.receive(protocol, HEARTBEAT, request(mid))
                self.assertEqual(len(self.clock.getDelayedCalls()), 1)
                self.clock.advance(1)
        self.assertTrue(transport.reading)
        self.assertEqual(codes(transport.value()), [200] * 19)
        self.assertEqual([e for e in events if e["log_level"].name != "debug"], [])

    def test_websocket_pauses_the_tcp_transport(self) -> None:
        protocol, transport = self.working_ws()
        self.receive(protocol, *(client_frame(request(mid)) for mid in range(1, 6)))
        self.assertIn(b'{"code":429}', transport.value())
        self.assertFalse(transport.reading)
        self.clock.advance(1.5)
        self.assertTrue(transport.reading)

    def test_kick_while_shed(self) -> None:
        """A WebSocket kicked while shed is read again in time for its closing handshake."""
        protocol, transport = self.working_ws()
        self.receive(protocol, *(client_frame(request(mid)) for mid in range(1, 6)))
        self.socket_of(protocol).kick("bye")
        self.clock.advance(1.5)
        self.assertTrue(transport.reading)


class AddressBudgetTests(ShedHarness):
    config = replace(
        CONFIG,
        max_requests_per_second=None,
        max_requests_per_second_per_ip=5,  # bursts of 10
        rate_limit_close_after=None,
    )

    def test_connections_of_one_address_share_a_budget(self) -> None:
        a, ta = self.working()
        b, tb = self.working(IPv4Address("TCP", PEER.host, 50001))
        c, tc = self.working(IPv4Address("TCP", PEER.host, 50002))
        other, tother = self.working(OTHER_PEER)
        with capturedLogs() as events:
            for protocol in (a, b, c, other):
                self.receive(protocol, b"".join(request(mid) for mid in range(1, 5)))
        self.assertEqual(codes(ta.value()), [200] * 4)
        self.assertEqual(codes(tb.value()), [200] * 4)
        self.assertEqual(codes(tc.value()), [200, 200, RATE_LIMITED_CODE, RATE_LIMITED_CODE])
        self.assertEqual(codes(tother.value()), [200] * 4)  # another address: its own budget
        self.assertEqual([t.reading for t in (ta, tb, tc, tother)], [True, True, False, True])
        [line] = [formatEvent(e) for e in events if "per_ip" in formatEvent(e)]
        self.assertIn("max_requests_per_second_per_ip 5", line)
        self.assertIn("192.0.2.7", line)
        # the budget refills at 5 a second for the address as a whole: full after 2 s
        self.clock.advance(1.99)
        self.assertFalse(tc.reading)
        self.clock.advance(0.01)
        self.assertTrue(tc.reading)
        ta.clear()
        self.receive(a, b"".join(request(mid) for mid in range(5, 17)))
        self.assertEqual(codes(ta.value()), [200] * 10 + [RATE_LIMITED_CODE] * 2)

    def test_ipv6_slash_64_shares_one_budget(self) -> None:
        one, t1 = self.working(IPv6Address("TCP", "2001:db8:1:2::1", 1))
        two, t2 = self.working(IPv6Address("TCP", "2001:db8:1:2::ffff", 1))
        elsewhere, t3 = self.working(IPv6Address("TCP", "2001:db8:1:3::1", 1))
        self.receive(one, request(1) * 10)
        self.receive(two, request(2))
        self.receive(elsewhere, request(3))
        self.assertEqual(codes(t1.value()), [200] * 10)
        self.assertEqual(codes(t2.value()), [RATE_LIMITED_CODE])
        self.assertEqual(codes(t3.value()), [200])

    def test_budgets_follow_the_open_connections(self) -> None:
        protocols = [self.working(IPv4Address("TCP", f"192.0.2.{n}", 1))[0] for n in range(5)]
        protocols.append(self.working(IPv4Address("TCP", "192.0.2.0", 2))[0])
        buckets = self.connector._ip_buckets
        assert buckets is not None
        self.assertEqual(len(buckets), 5)
        for protocol in protocols:
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(buckets), 0)

    def test_off(self) -> None:
        self.build(self.config, max_requests_per_second_per_ip=None)
        protocol, transport = self.working()
        self.receive(protocol, request(1) * 100)
        self.assertEqual(codes(transport.value()), [200] * 100)
        self.assertIsNone(self.connector._ip_buckets)
