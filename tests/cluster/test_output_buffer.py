"""A subscriber that falls behind Redis's pub/sub output-buffer limit is cut off by Redis; the
node reconnects, subscribes again and resyncs, and pushes reach its sessions again (against a
real redis-server with a small limit)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import TestCase

from tests.support.cluster import connect, start_node, until
from tests.support.redis import start_redis


class OutputBufferLimitTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.redis = start_redis(self)
        # Any subscriber with more than 64 KiB unread is disconnected at once.
        reply = self.redis.command(
            "CONFIG", "SET", "client-output-buffer-limit", '"pubsub 64kb 0 0"'
        )
        self.assertTrue(reply.startswith(b"+OK"), reply)

    def test_subscriber_over_the_limit_recovers(self) -> Deferred[None]:
        async def run() -> None:
            a: Any = await start_node(self, self.redis.url, "conn-a")
            b: Any = await start_node(self, self.redis.url, "conn-b")
            session, conn = connect(a.session_service)
            await a.bind(session, "ua")
            # a's subscriber stops reading; b pushes ~2 MiB to the uid on a: Redis gives up on it
            subscriber = a.link._sub
            subscriber.transport.pauseProducing()
            big = {"blob": "x" * 32768}
            for _ in range(64):
                await b.push_by_uids("onChat", big, ["ua"])
            await until(
                lambda: a.link._sub is not subscriber, what="the subscriber cut off", timeout=20
            )
            # Redis cut it off, not the node's own deaf-subscriber probe (which counts restarts).
            self.assertEqual(a.subscriber_restarts, 0)
            subscriber.transport.resumeProducing()
            await until(
                lambda: a.link.up and a.synced, what="a resubscribed and resynced", timeout=20
            )
            before = len(conn.pushes())
            self.assertEqual(await b.push_by_uids("onChat", {"n": 1}, ["ua"]), [])
            await until(
                lambda: conn.pushes()[before:] == [("onChat", {"n": 1})], what="push after recovery"
            )

        return ensureDeferred(run())
