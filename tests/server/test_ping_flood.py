"""WebSocket control frames from a hostile client (issue 12): a ping flood is cut off.

Autobahn answers every ping with a pong itself, so before this a client that pinged and never
read grew the server's write buffer without limit. Now pings and pongs spend a control-frame
bucket (the request rate and burst) and every pong counts against the slow-reader cap.
benchmarks/ping_flood.py measures the same on a real socket.
"""

from __future__ import annotations

from dataclasses import replace

from twisted.logger import capturedLogs, formatEvent

from pomelo_twisted.ops.metrics import ConnectorMetrics
from pomelo_twisted.server.closing import close_cause
from pomelo_twisted.server.limits import OutboundGuard
from tests.support.shedding import CONFIG, HEARTBEAT, Harness, client_frame, request

PING, PONG = 9, 10
PAYLOAD = b"p" * 125  # the largest control frame payload


def pong_count(written: bytes) -> int:
    """Server pongs (unmasked, 125-byte payload) in C{written}."""
    return written.count(bytes([0x80 | PONG, 125]) + PAYLOAD)


class PingFloodTests(Harness):
    config = replace(CONFIG, max_requests_per_second=100, request_burst=200)

    def test_flood_is_aborted_after_the_burst(self) -> None:
        metrics = ConnectorMetrics(self.connector)
        protocol, transport = self.working_ws()
        socket = self.socket_of(protocol)
        with capturedLogs() as events:
            self.receive(protocol, client_frame(PAYLOAD, PING) * 1000)
        self.assertTrue(transport.disconnected)  # aborted
        self.assertEqual(pong_count(transport.value()), 200)  # the burst, then nothing
        self.assertTrue(socket.close_reason.startswith("rate limit"), socket.close_reason)
        self.assertEqual(close_cause(socket.close_reason), "limit")
        self.assertIsNone(socket.session)
        lines = [formatEvent(e) for e in events if "control frames" in formatEvent(e)]
        self.assertEqual(len(lines), 1)
        self.assertIn("192.0.2.7", lines[0])
        self.assertIn("max_requests_per_second 100", lines[0])
        self.assertIn('pomelo_closes_total{cause="limit"} 1.0', metrics.exposition().decode())
        # more pings after the abort are not answered
        transport.clear()
        self.receive(protocol, client_frame(PAYLOAD, PING) * 10)
        self.assertEqual(pong_count(transport.value()), 0)

    def test_answers_before_the_flood_leave_first(self) -> None:
        """A request, then a flood, in one read: its answer is sent before the abort, as when
        they come in separate reads (how the bytes were read changes nothing)."""
        protocol, transport = self.working_ws()
        self.receive(protocol, client_frame(request(1)) + client_frame(PAYLOAD, PING) * 300)
        self.assertTrue(transport.disconnected)
        self.assertIn(b'"code":200', transport.value())

    def test_pings_within_the_rate_are_answered(self) -> None:
        protocol, transport = self.working_ws()
        for _ in range(5):
            self.receive(protocol, client_frame(HEARTBEAT), client_frame(PAYLOAD, PING) * 150)
            self.clock.advance(2)  # 200 tokens back
        self.assertFalse(transport.disconnecting)
        self.assertEqual(pong_count(transport.value()), 750)

    def test_unsolicited_pongs_count_too(self) -> None:
        protocol, transport = self.working_ws()
        self.receive(protocol, client_frame(PAYLOAD, PONG) * 201)
        self.assertTrue(transport.disconnected)
        self.assertEqual(close_cause(self.socket_of(protocol).close_reason), "limit")

    def test_control_frames_have_a_bucket_of_their_own(self) -> None:
        """A client at its request rate may still ping (and is answered 429, not cut off)."""
        protocol, transport = self.working_ws()
        self.receive(protocol, *(client_frame(request(mid)) for mid in range(1, 202)))
        self.receive(protocol, client_frame(PAYLOAD, PING))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(pong_count(transport.value()), 1)


class PongOutboundCapTests(Harness):
    """Without a rate, pongs still count against max_outbound_buffer."""

    config = replace(CONFIG, max_requests_per_second=None, max_outbound_buffer=10_000)

    def test_never_reading_pinger_is_cut_off_at_the_cap(self) -> None:
        protocol, transport = self.working_ws()
        guard = transport.producer
        assert isinstance(guard, OutboundGuard)
        guard.pauseProducing()  # the transport's buffer is full: the client is not reading
        with capturedLogs() as events:
            for _ in range(100):
                self.receive(protocol, client_frame(PAYLOAD, PING) * 10)
                if transport.disconnected:
                    break
        self.assertTrue(transport.disconnected)
        # 10 000 bytes of pongs (127 bytes each) and the rest of that read, not 1000 pongs
        self.assertLess(pong_count(transport.value()), 10_000 // 127 + 11)
        socket = self.socket_of(protocol)
        self.assertEqual(close_cause(socket.close_reason), "limit")
        self.assertTrue(any("max_outbound_buffer" in formatEvent(e) for e in events))

    def test_reading_pinger_is_kept(self) -> None:
        protocol, transport = self.working_ws()
        self.receive(protocol, client_frame(PAYLOAD, PING) * 1000)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(pong_count(transport.value()), 1000)
        self.receive(protocol, client_frame(request(1)))
        self.assertIn(b'"code":200', transport.value())
