"""Recovery of cluster nodes against a real redis-server: a process that stalls longer than
its TTL, a stall that must not be taken for a deaf subscriber, Redis losing its data (an
epoch), and nodes whose routes or protos differ."""

from __future__ import annotations

import time

from twisted.internet.defer import Deferred, ensureDeferred

from pomelo_twisted.cluster.node import MixedVersions, RedisCluster, codec_fingerprint
from pomelo_twisted.protocol.codec import ServerCodec
from pomelo_twisted.protocol.dictionary import RouteDictionary
from tests.support.cluster import connect, start_node, until
from tests.support.redis import RedisTestCase


class StallTests(RedisTestCase):
    def test_reaped_while_stalled_rewrites_its_entries(self) -> Deferred[None]:
        """A node whose heartbeats stop longer than the TTL is reaped by the others; at its
        next heartbeat it notices its expired key and writes its entries back."""

        async def run() -> None:
            a = await start_node(self, self.redis.url, "conn-a")
            b = await start_node(self, self.redis.url, "conn-b")
            sa, conn_a = connect(a.session_service)
            await a.bind(sa, "ua")
            a._beat.stop()  # a stalls (its heartbeats stop; it keeps reading its inbox)
            await until(lambda: b.link.up, what="b up")
            fields = []

            async def reaped() -> bool:
                fields[:] = await b.link.call("HKEYS", "t:u:ua")
                return not fields

            deadline = time.monotonic() + 5
            while not await reaped():
                self.assertLess(time.monotonic(), deadline, "a was never reaped")
                await until(lambda: True)
            self.assertEqual(await b.push_by_uids("onChat", {}, ["ua"]), ["ua"])
            a._beat.start(a.heartbeat, now=True)  # a wakes up
            await until(lambda: a.resyncs == 1, what="a rewrote its entries")
            self.assertEqual(await b.link.call("HKEYS", "t:u:ua"), [f"{a.node_id}|{sa.id}"])
            self.assertEqual(await b.push_by_uids("onChat", {"n": 1}, ["ua"]), [])
            await until(lambda: conn_a.pushes() == [("onChat", {"n": 1})], what="push arrives")

        return ensureDeferred(run())

    def test_stall_is_not_a_deaf_subscriber(self) -> Deferred[None]:
        """The whole process blocks for longer than the deafness threshold: its probes wait
        unread in the socket, timers run first; the subscriber must not be restarted."""

        async def run() -> None:
            a = await start_node(self, self.redis.url, "conn-a")
            b = await start_node(self, self.redis.url, "conn-b")
            sa, conn_a = connect(a.session_service)
            await a.bind(sa, "ua")
            threshold = 2 * a.heartbeat + a.timeout
            time.sleep(threshold + 0.5)  # blocks the reactor, as a loaded machine can
            # a few heartbeats after the stall
            beats = time.monotonic() + 4 * a.heartbeat
            await until(lambda: time.monotonic() > beats)
            self.assertEqual((a.subscriber_restarts, b.subscriber_restarts), (0, 0))
            await until(lambda: a.synced and b.synced, what="both synced")
            self.assertEqual(await b.push_by_uids("onChat", {}, ["ua"]), [])
            await until(lambda: conn_a.pushes() == [("onChat", {})], what="push arrives")

        return ensureDeferred(run())


class RedisLostDataTests(RedisTestCase):
    async def members(self, node: RedisCluster, name: str) -> list[str]:
        return sorted(await node.channel_members(name))

    def test_restarted_empty(self) -> Deferred[None]:
        """Redis restarted without its data: each node sees a new epoch, counts it once, and
        writes back its entries and the channel memberships of the uids it holds."""

        async def run() -> None:
            a = await start_node(self, self.redis.url, "conn-a")
            b = await start_node(self, self.redis.url, "conn-b")
            sa, conn_a = connect(a.session_service)
            sb, conn_b = connect(b.session_service)
            await a.bind(sa, "ua")
            await b.bind(sb, "ub")
            await a.channel_add("room", "ua")
            await b.channel_add("room", "ub")
            await a.channel_add("room", "gone")  # bound nowhere: not written back
            await a.channel_add("hall", "ua")
            await a.channel_leave("hall", "ua")  # left: not written back
            epoch = a.epoch
            self.assertIsNotNone(epoch)
            self.assertEqual(b.epoch, epoch)

            self.redis.kill()
            await until(lambda: not a.link.up and not b.link.up, what="both see Redis down")
            self.redis.start()  # --save '' --appendonly no: empty
            await until(lambda: a.synced and b.synced, timeout=10, what="both resynced")
            self.assertEqual((a.redis_resets, b.redis_resets), (1, 1))
            self.assertNotEqual(a.epoch, epoch)
            self.assertEqual(a.epoch, b.epoch)
            self.assertEqual(await self.members(a, "room"), ["ua", "ub"])
            self.assertEqual(await self.members(a, "hall"), [])
            self.assertEqual(await b.link.call("HKEYS", "t:u:ua"), [f"{a.node_id}|{sa.id}"])
            self.assertEqual(await a.channel_push("room", "onRoom", {"r": 1}), [])
            await until(lambda: conn_a.pushes() and conn_b.pushes(), what="channel push")
            self.assertEqual(conn_b.pushes(), [("onRoom", {"r": 1})])

        return ensureDeferred(run())

    def test_flushed_while_connected(self) -> Deferred[None]:
        """Data lost without a disconnect (FLUSHALL, a failover to an empty replica): the next
        heartbeat finds a new epoch."""

        async def run() -> None:
            a = await start_node(self, self.redis.url, "conn-a")
            b = await start_node(self, self.redis.url, "conn-b")
            sa, conn_a = connect(a.session_service)
            await a.bind(sa, "ua")
            await a.channel_add("room", "ua")
            self.redis.command("FLUSHALL")
            await until(lambda: a.redis_resets == 1 and b.redis_resets == 1, what="resets seen")
            await until(lambda: a.synced)
            self.assertEqual(await self.members(b, "room"), ["ua"])
            self.assertEqual(await b.push_by_uids("onChat", {}, ["ua"]), [])
            await until(lambda: conn_a.pushes() == [("onChat", {})], what="push arrives")
            self.assertEqual(a.link.up, True)  # no reconnection was needed

        return ensureDeferred(run())


class MixedVersionsTests(RedisTestCase):
    def test_other_routes_refused(self) -> Deferred[None]:
        async def run() -> None:
            old = await start_node(self, self.redis.url, "conn-old")
            other = ServerCodec(RouteDictionary(["connector.entryHandler.entry"]), None)
            new = await start_node(self, self.redis.url, "conn-new", codec=other, start=False)
            error = await self.assertFailure(new.started, MixedVersions)
            self.assertIn(old.node_id, str(error))
            self.assertIn("--cluster-mixed-versions", str(error))
            self.assertFalse(new.synced)
            self.assertEqual(await old.link.call("SMEMBERS", "t:nodes"), [old.node_id])
            await new.stopService()
            # explicitly allowed
            mixed = await start_node(
                self, self.redis.url, "conn-mixed", codec=other, mixed_versions=True
            )
            self.assertTrue(mixed.synced)
            await mixed.stopService()
            # once the old node is gone, the new version starts a cluster of its own kind
            await old.stopService()
            await start_node(self, self.redis.url, "conn-new2", codec=other)
            same = await start_node(self, self.redis.url, "conn-same", codec=other)
            self.assertEqual(same.codec_fingerprint, codec_fingerprint(other))

        return ensureDeferred(run())


class PushScriptTests(RedisTestCase):
    def test_one_round_trip_to_several_nodes(self) -> Deferred[None]:
        """The PUSH script builds each node's envelope in Lua: uids that JSON escapes (slash,
        quote, non-ASCII) arrive intact, each node gets only its uids, once."""

        async def run() -> None:
            a = await start_node(self, self.redis.url, "conn-a")
            b = await start_node(self, self.redis.url, "conn-b")
            c = await start_node(self, self.redis.url, "conn-c")
            odd = 'ü/"1\\'
            sb, conn_b = connect(b.session_service)
            sc, conn_c = connect(c.session_service)
            sc2, conn_c2 = connect(c.session_service)
            await b.bind(sb, odd)
            await c.bind(sc, "uc")
            await c.bind(sc2, odd)
            missing = await a.push_by_uids("onChat", {"n": 1}, ["uc", odd, "nobody"])
            self.assertEqual(missing, ["nobody"])
            self.assertEqual(a.published["P"], 2)
            await until(lambda: conn_b.packages and conn_c.packages and conn_c2.packages)
            for conn in (conn_b, conn_c, conn_c2):
                self.assertEqual(conn.pushes(), [("onChat", {"n": 1})])
            self.assertEqual((b.dropped, c.dropped), (0, 0))

        return ensureDeferred(run())
