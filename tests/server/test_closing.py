"""Tests for L{pomelo_twisted.server.closing}: the cause label of a close, and the peer as the
close log line prints it."""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.server.closing import CLOSE_CAUSES, close_cause, peer_text


class CloseCauseTests(SynchronousTestCase):
    def test_every_reason_text(self) -> None:
        for why, cause in [
            ("connection lost", "peer"),
            ("kicked: kick", "kick"),
            ("kicked: None", "kick"),
            ("heartbeat timeout", "heartbeat_timeout"),
            ("handshake timeout", "handshake_timeout"),
            ("no handshake ack", "ack_timeout"),
            ("handshake failed (501): client refused by check_client", "handshake_failed"),
            ("protocol error: bad package type 9", "protocol_error"),
            ("text WebSocket message", "protocol_error"),
            ("slow reader: outbound buffer over max_outbound_buffer", "limit"),
            ("write failed", "error"),
            ("closed by server", "server"),
            ("anything an app says", "server"),
        ]:
            self.assertEqual(close_cause(why), cause, why)
            self.assertIn(cause, CLOSE_CAUSES)
        self.assertEqual(close_cause("kicked: bye", draining=True), "shutdown")
        self.assertEqual(close_cause("connection lost", draining=True), "peer")

    def test_peer_text(self) -> None:
        self.assertEqual(peer_text(IPv4Address("TCP", "192.0.2.7", 5)), "192.0.2.7:5")
        self.assertEqual(peer_text(IPv6Address("TCP", "::1", 5)), "[::1]:5")
        self.assertEqual(peer_text(UNIXAddress(b"/run/s")), "/run/s")
        self.assertEqual(peer_text(None), "None")
