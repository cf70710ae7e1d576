"""Tests for L{pomelo_twisted.client.backoff}: the reconnection delays."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.client import (
    Backoff,
)


class BackoffTests(SynchronousTestCase):
    def test_delays(self) -> None:
        policy = Backoff(initial=2, factor=2, maximum=30, jitter=0)
        self.assertEqual([policy.delay(n) for n in range(1, 7)], [2, 4, 8, 16, 30, 30])

    def test_long_outage(self) -> None:
        """Attempt 5000 of a client retrying forever: the maximum, not an OverflowError."""
        self.assertEqual(Backoff(jitter=0).delay(5000), 30.0)

    def test_jitter(self) -> None:
        policy = Backoff(initial=1, factor=3, maximum=5, jitter=0.5, random=lambda: 0.5)
        self.assertEqual([policy.delay(n) for n in (1, 2, 3)], [1.25, 3.75, 6.25])

    def test_defaults(self) -> None:
        """libpomelo2's: 2 s, doubling, at most 30 s, forever."""
        policy = Backoff()
        self.assertEqual((policy.initial, policy.factor, policy.maximum), (2.0, 2.0, 30.0))
        self.assertIsNone(policy.max_attempts)
        for n in range(1, 10):
            self.assertLessEqual(policy.delay(n), 33.0)
