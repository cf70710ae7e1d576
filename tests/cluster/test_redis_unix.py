"""Cluster mode over a UNIX socket (C{unix:///path?db=N}) against a real redis-server."""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import TestCase

from pomelo_twisted.services.cluster import ClusterUnavailable
from tests.support.cluster import connect, start_node, until
from tests.support.redis import start_redis


class RedisUnixTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.redis = start_redis(self, unix=True)
        assert self.redis.unix_path is not None
        self.path = self.redis.unix_path

    def test_push_and_kick_over_a_unix_socket(self) -> Deferred[None]:
        """Both connections use the socket and the URL's database; push, kick and a Redis
        restart work as over TCP."""

        async def run() -> None:
            url = f"unix://{self.path}?db=3"
            a = await start_node(self, url, "conn-a")
            b = await start_node(self, url, "conn-b")
            for node in (a, b):
                for proto in (node.link._cmd, node.link._sub):
                    self.assertEqual(proto.transport.getPeer().name, self.path.encode())
            info = await a.link.call("CLIENT", "INFO")
            self.assertIn(" db=3 ", info)
            self.assertIn(" flags=U ", info)  # Redis: a UNIX socket client
            session, conn = connect(a.session_service)
            await a.bind(session, "ua")
            self.assertEqual(await a.link.call("HKEYS", "t:u:ua"), [f"{a.node_id}|{session.id}"])
            self.assertIn(b"*0", self.redis.command("HKEYS", "t:u:ua"))  # not in db 0
            self.assertEqual(await b.push_by_uids("onChat", {"n": 1}, ["ua"]), [])
            await until(lambda: conn.pushes() == [("onChat", {"n": 1})], what="push arrives")

            self.redis.kill()
            await until(lambda: not a.link.up, what="a sees Redis down")
            await self.assertFailure(b.kick("ua"), ClusterUnavailable)
            self.redis.start()
            await until(lambda: a.synced and b.synced, timeout=10, what="both resynced")
            self.assertEqual(await b.kick("ua", "bye"), 1)
            self.assertEqual(conn.kicks, ["bye"])

        return ensureDeferred(run())

    def test_missing_socket_is_unavailable(self) -> Deferred[None]:
        """A path where no Redis listens: never up, calls fail at once, and it joins as soon
        as Redis listens there."""

        async def run() -> None:
            self.redis.kill()
            os.unlink(self.path)
            a = await start_node(self, f"unix://{self.path}", "conn-a", start=False)
            await self.assertFailure(a.kick("u"), ClusterUnavailable)
            self.assertFalse(a.link.up)
            self.redis.start()
            await a.started
            self.assertEqual(await a.kick("u"), 0)

        return ensureDeferred(run())
