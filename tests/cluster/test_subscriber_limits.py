"""A node's subscriber at Redis's limits, against a real redis-server: cut by Redis for not
reading fast enough (C{client-output-buffer-limit pubsub}), stalled on the node's side
without Redis cutting it, and Redis pausing its clients (C{CLIENT PAUSE}).

Where a test needs a slow subscriber it makes one deterministically: the subscriber's socket
gets a small explicit receive buffer (which also turns off the kernel's autotuning, which
would otherwise absorb megabytes on loopback) and the node stops reading it."""

from __future__ import annotations

import socket
import time
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.threads import deferToThread

from pomelo_twisted.cluster.envelope import encode_envelope
from pomelo_twisted.cluster.node import RedisCluster
from pomelo_twisted.services.cluster import ClusterUnavailable
from tests.support.cluster import connect, start_node, until
from tests.support.redis import RedisServer, RedisTestCase

TIMEOUT = 1.0
#: Redis's log line when it closes a client over its output buffer limit.
CUT = "for overcoming of output buffer limits"
#: Each flood message, and the most the flood sends before giving up.
CHUNK = 16 * 1024
FLOOD_LIMIT = 64 * 1024 * 1024


def _resp(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def flood(redis: RedisServer, channel: str, payload: bytes, deadline: float) -> tuple[int, int]:
    """PUBLISH C{payload} to C{channel} over a plain connection (in a thread) until nobody
    receives it any more, at most L{FLOOD_LIMIT} bytes or until C{deadline}.

    @return: (bytes published while the channel had a subscriber, messages that reached it).
    """
    sent = reached = 0
    command = _resp(b"PUBLISH", channel.encode(), payload)
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as s:
        reader = s.makefile("rb")
        while sent < FLOOD_LIMIT and time.monotonic() < deadline:
            s.sendall(command)
            reply = reader.readline()
            if reply != b":1\r\n":
                if reply != b":0\r\n":
                    raise AssertionError(f"PUBLISH answered {reply!r}")
                break
            sent += len(payload)
            reached += 1
    return sent, reached


def subscriber_address(node: RedisCluster) -> str:
    """The subscriber connection as Redis's CLIENT LIST names it (C{addr=host:port})."""
    ours = node.link._sub.transport.getHost()
    return f"addr={ours.host}:{ours.port} "


def clients(redis: RedisServer) -> str:
    return redis.command("CLIENT", "LIST").decode()


def slow_down(node: RedisCluster) -> Any:
    """Make the node's subscriber a slow reader: no reading, and a fixed receive buffer (the
    kernel doubles it: 512 KiB) that the kernel's autotuning cannot grow."""
    transport = node.link._sub.transport
    transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    transport.pauseProducing()
    return transport


class OutputBufferLimitTests(RedisTestCase):
    def test_cut_by_redis_resubscribes_and_resyncs(self) -> Deferred[None]:
        """Redis closes a subscriber past C{client-output-buffer-limit pubsub}: the node sees
        its subscriber lost, reconnects, subscribes again, resyncs, and pushes and kicks from
        another node reach it again. Its deaf probe is far too slow to be what cut it."""

        async def run() -> None:
            self.redis.command("CONFIG", "SET", "client-output-buffer-limit", '"pubsub 64kb 0 0"')
            # heartbeat 5 s: a's deaf probe needs 2*5 + 1 s, then one more beat, to act
            a = await start_node(self, self.redis.url, "conn-a", heartbeat=5.0, timeout=TIMEOUT)
            b = await start_node(self, self.redis.url, "conn-b", heartbeat=0.2, timeout=TIMEOUT)
            sa, conn_a = connect(a.session_service)
            await a.bind(sa, "ua")
            address = subscriber_address(a)
            self.assertIn(address, clients(self.redis))
            transport = slow_down(a)

            started = time.monotonic()
            payload = encode_envelope("H", {"from": "flood"}, b"x" * CHUNK)
            sent, reached = await deferToThread(flood, self.redis, a.inbox, payload, started + 10)
            cut = time.monotonic()
            self.assertLess(sent, FLOOD_LIMIT, "Redis never cut the subscriber")
            await until(lambda: CUT in self.redis.log(), what="Redis logged the cut")
            [line] = [x for x in self.redis.log().splitlines() if CUT in x]
            self.assertIn(address, line)  # that client, nobody else
            self.assertNotIn(address, clients(self.redis))
            # the node did not close it: its side is still open, nothing was restarted
            self.assertTrue(transport.connected)
            self.assertEqual(a.subscriber_restarts, 0)
            self.assertTrue(a.link.up)  # it cannot know before it reads again

            old = a.link._sub
            transport.resumeProducing()  # the slow reader catches up and finds the end
            await until(lambda: not transport.connected, what="a sees its subscriber closed")
            lost = time.monotonic()
            await until(
                lambda: a.link._sub not in (None, old) and a.link.up and a.synced,
                what="a resubscribed and resynced",
            )
            resynced = time.monotonic()
            self.assertEqual((a.resyncs, a.subscriber_restarts), (1, 0))
            self.assertEqual(clients(self.redis).count(" sub=2 "), 2)  # a's and b's

            self.assertEqual(await b.push_by_uids("onChat", {"n": 1}, ["ua"]), [])
            await until(lambda: conn_a.pushes() == [("onChat", {"n": 1})], what="push arrives")
            self.assertEqual(await b.kick("ua", "bye"), 1)
            self.assertEqual(conn_a.kicks, ["bye"])
            print(
                f"\n  Redis cut the subscriber after {sent} bytes published in "
                f"{reached} messages ({cut - started:.2f} s); "
                f"read to the end {lost - cut:.2f} s after resuming, resubscribed and resynced "
                f"{resynced - lost:.2f} s later; {a.received['H']} probes and flood messages read"
            )

        return ensureDeferred(run())


class StalledSubscriberTests(RedisTestCase):
    def test_stalled_under_the_limit_is_replaced_by_the_probe(self) -> Deferred[None]:
        """The node's subscriber stops reading while the rest of the process runs, and Redis
        (default limits: 32 MB) keeps it: the node's own probes stop arriving, and it replaces
        the connection itself. Only the subscriber stalls, unlike the whole-process stall of
        test_cluster_recovery, and it stays subscribed, unlike its wedged subscriber."""

        async def run() -> None:
            a = await start_node(self, self.redis.url, "conn-a", heartbeat=0.2, timeout=TIMEOUT)
            b = await start_node(self, self.redis.url, "conn-b", heartbeat=0.2, timeout=TIMEOUT)
            sa, conn_a = connect(a.session_service)
            await a.bind(sa, "ua")
            address = subscriber_address(a)
            slow_down(a)
            started = time.monotonic()
            await until(lambda: a.subscriber_restarts == 1, what="subscriber replaced")
            replaced = time.monotonic()
            self.assertNotIn(address, clients(self.redis))
            self.assertNotIn(CUT, self.redis.log())  # the node closed it, not Redis
            await until(lambda: a.link.up and a.synced, what="a resynced")
            self.assertEqual(a.resyncs, 1)
            self.assertEqual(await b.push_by_uids("onChat", {"n": 1}, ["ua"]), [])
            await until(lambda: conn_a.pushes() == [("onChat", {"n": 1})], what="push arrives")
            self.assertEqual(await b.kick("ua", "bye"), 1)
            print(f"\n  stalled subscriber replaced after {replaced - started:.2f} s")

        return ensureDeferred(run())


class PauseTests(RedisTestCase):
    """C{CLIENT PAUSE}, as an operator or a failover does: no cluster call hangs."""

    async def nodes(self, heartbeat: float = 0.2) -> tuple[RedisCluster, RedisCluster, Any]:
        a = await start_node(self, self.redis.url, "conn-a", heartbeat=heartbeat, timeout=TIMEOUT)
        b = await start_node(self, self.redis.url, "conn-b", heartbeat=heartbeat, timeout=TIMEOUT)
        sa, conn_a = connect(a.session_service)
        await a.bind(sa, "ua")
        for uid in ("k1", "k2"):
            session, _ = connect(a.session_service)
            await a.bind(session, uid)
        return a, b, conn_a

    async def timed(self, d: Deferred[Any]) -> tuple[Any, float]:
        """What C{d} fires with (a failure's exception) and after how many seconds."""
        started = time.monotonic()
        try:
            result = await d
        except Exception as e:
            result = e
        return result, time.monotonic() - started

    async def works_after(self, a: RedisCluster, b: RedisCluster, conn_a: Any) -> None:
        await until(lambda: a.synced and b.synced, timeout=10, what="both synced again")
        self.assertEqual(await b.push_by_uids("onAfter", {}, ["ua"]), [])
        await until(lambda: ("onAfter", {}) in conn_a.pushes(), what="push after the pause")
        self.assertEqual(await b.kick("k2", "after"), 1)

    def test_short_pause_calls_complete_after_it(self) -> Deferred[None]:
        """Paused for less than the timeout: the calls wait, then complete."""

        async def run() -> None:
            a, b, conn_a = await self.nodes()
            self.assertEqual(self.redis.command("CLIENT", "PAUSE", "400", "ALL"), b"+OK\r\n")
            push, kick, members = await gatherResults(
                [
                    ensureDeferred(self.timed(b.push_by_uids("onChat", {}, ["ua"]))),
                    ensureDeferred(self.timed(b.kick("k1", "paused"))),
                    ensureDeferred(self.timed(a.channel_members("room"))),
                ]
            )
            for _, elapsed in (push, kick, members):
                self.assertGreater(elapsed, 0.3)  # held by the pause
                self.assertLess(elapsed, TIMEOUT)
            self.assertEqual((push[0], kick[0], members[0]), ([], 1, []))
            await until(lambda: ("onChat", {}) in conn_a.pushes(), what="push arrives")
            await self.works_after(a, b, conn_a)

        return ensureDeferred(run())

    def test_long_pause_fails_within_the_timeout(self) -> Deferred[None]:
        """Paused for longer than the timeout: calls in flight fail with ClusterUnavailable
        after the timeout, calls made once the node knows fail at once; then all works."""

        async def run() -> None:
            a, b, conn_a = await self.nodes()
            self.assertEqual(self.redis.command("CLIENT", "PAUSE", "2500", "ALL"), b"+OK\r\n")
            paused = time.monotonic()
            results = await gatherResults(
                [
                    ensureDeferred(self.timed(b.push_by_uids("onChat", {}, ["ua"]))),
                    ensureDeferred(self.timed(b.kick("k1", "paused"))),
                    ensureDeferred(self.timed(a.channel_members("room"))),
                ]
            )
            for result, elapsed in results:
                self.assertIsInstance(result, ClusterUnavailable)
                self.assertGreater(elapsed, TIMEOUT - 0.05)
                self.assertLess(elapsed, TIMEOUT + 0.5)
            self.assertIn("no answer", str(results[0][0]))
            await until(lambda: not b.link.up, what="b knows Redis is not answering")
            result, elapsed = await self.timed(b.push_by_uids("onChat", {}, ["ua"]))
            self.assertIsInstance(result, ClusterUnavailable)
            self.assertLess(elapsed, 0.1)
            self.assertLess(time.monotonic() - paused, 2.5)  # all that during the pause
            await self.works_after(a, b, conn_a)
            print(
                f"\n  failed after {max(e for _, e in results):.2f} s at most; pushes and kicks "
                f"work again {time.monotonic() - paused - 2.5:.2f} s after the pause"
            )

        return ensureDeferred(run())

    def test_write_pause_lets_reads_through(self) -> Deferred[None]:
        """C{CLIENT PAUSE WRITE} (a failover's): a read answers during the pause, a push (a
        script) fails after the timeout; then all works. Slow heartbeats here: a heartbeat
        script queued ahead would hold the read on the ordered connection."""

        async def run() -> None:
            a, b, conn_a = await self.nodes(heartbeat=5.0)
            await a.channel_add("room", "ua")
            self.assertEqual(self.redis.command("CLIENT", "PAUSE", "2000", "WRITE"), b"+OK\r\n")
            members, elapsed = await self.timed(a.channel_members("room"))
            self.assertEqual((members, elapsed < 0.5), (["ua"], True))
            result, elapsed = await self.timed(b.push_by_uids("onChat", {}, ["ua"]))
            self.assertIsInstance(result, ClusterUnavailable)
            self.assertLess(elapsed, TIMEOUT + 0.5)
            await until(lambda: not b.link.up, what="b reconnects")
            await self.works_after(a, b, conn_a)

        return ensureDeferred(run())
