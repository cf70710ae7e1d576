"""Pure tests of the cluster's envelopes and Redis URLs (no Redis needed)."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.cluster.envelope import EnvelopeError, decode_envelope, encode_envelope
from pomelo_twisted.cluster.url import parse_redis_url


class EnvelopeTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        data = encode_envelope("P", {"from": "a#1", "uids": ["u"]}, b"\x04\x00\x00\x01x")
        self.assertEqual(data[:4], b"PT1P")
        envelope = decode_envelope(data)
        self.assertEqual(envelope.kind, "P")
        self.assertEqual(envelope.header, {"from": "a#1", "uids": ["u"]})
        self.assertEqual(envelope.payload, b"\x04\x00\x00\x01x")

    def test_unknown_kind_refused(self) -> None:
        self.assertRaises(ValueError, encode_envelope, "X", {})

    def test_malformed(self) -> None:
        for data in (
            b"",
            b"PT1",
            b"PT2P\x00\x00\x00\x02{}",
            b"PT1X\x00\x00\x00\x02{}",
            b"PT1P\x00\x00\x00\x09{}",
            b"PT1P\x00\x00\x00\x02[]",
            b"PT1P\x00\x00\x00\x02{x",
        ):
            self.assertRaises(EnvelopeError, decode_envelope, data)

    @given(st.binary(max_size=64))
    def test_never_crashes(self, data: bytes) -> None:
        with contextlib.suppress(EnvelopeError):
            decode_envelope(data)


class RedisURLTests(SynchronousTestCase):
    def test_forms(self) -> None:
        url = parse_redis_url("redis://127.0.0.1:6380/2")
        self.assertEqual((url.host, url.port, url.db, url.tls), ("127.0.0.1", 6380, 2, False))
        self.assertIsNone(url.password)
        url = parse_redis_url("rediss://pomelo:s%40cret@redis.example/0")
        self.assertEqual(
            (url.username, url.password, url.port, url.tls), ("pomelo", "s@cret", 6379, True)
        )
        self.assertNotIn("cret", str(url))  # never log the password
        url = parse_redis_url("redis://:inurl@h", password="fromfile")
        self.assertEqual((url.username, url.password), (None, "fromfile"))
        url = parse_redis_url("unix:///run/redis.sock?db=3")
        self.assertEqual((url.path, url.db), ("/run/redis.sock", 3))

    def test_bad(self) -> None:
        for bad in (
            "http://h",
            "redis://",
            "redis://h:x",
            "redis://h/-1",
            "redis://h/db",
            "unix://",
        ):
            self.assertRaises(ValueError, parse_redis_url, bad)
