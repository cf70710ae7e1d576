"""L{pomelo_twisted.cluster.node.RedisCluster} against a real redis-server: several nodes in
one process, each with its own session service and in-memory sessions.

Real time only where Redis needs it: every wait polls with a deadline (L{until})."""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.task import deferLater

from pomelo_twisted.cluster.envelope import encode_envelope
from pomelo_twisted.cluster.node import DuplicateServerId, RedisCluster
from pomelo_twisted.services.cluster import ClusterTimeout, ClusterUnavailable
from pomelo_twisted.services.session import Session, SessionError
from tests.support.cluster import FakeConnection, connect, start_node, until
from tests.support.redis import RedisTestCase

HEARTBEAT = 0.2  # node keys live 0.6 s: a stopped node is reaped within ~1 s
TIMEOUT = 1.0


class ClusterTestCase(RedisTestCase):
    async def node(
        self,
        server_id: str,
        policy: str | None = None,
        start: bool = True,
        url: str | None = None,
        password: str | None = None,
    ) -> RedisCluster:
        return await start_node(
            self,
            url or self.redis.url,
            server_id,
            heartbeat=HEARTBEAT,
            timeout=TIMEOUT,
            start=start,
            password=password,
            policy=policy,
        )

    async def fields(self, node: RedisCluster, uid: str) -> list[str]:
        return sorted(await node.link.call("HKEYS", f"t:u:{uid}"))

    async def index(self, node: RedisCluster, of: RedisCluster) -> list[str]:
        return sorted(await node.link.call("SMEMBERS", f"t:ni:{of.node_id}"))

    async def eventually_fields(self, node: RedisCluster, uid: str, expected: list[str]) -> None:
        seen: list[list[str]] = []

        async def poll() -> None:
            deadline = time.monotonic() + 5
            while True:
                got = await self.fields(node, uid)
                seen.append(got)
                if got == sorted(expected):
                    return
                if time.monotonic() > deadline:
                    self.fail(f"fields of {uid}: {got}, expected {sorted(expected)}")
                await deferLater(reactor, 0.01, lambda: None)

        await poll()


def field(node: RedisCluster, session: Session) -> str:
    return f"{node.node_id}|{session.id}"


class DirectoryTests(ClusterTestCase):
    def test_bind_unbind_close(self) -> Deferred[None]:
        async def run() -> None:
            a = await self.node("conn-a")
            s1, conn1 = connect(a.session_service)
            s2, _ = connect(a.session_service)
            await a.bind(s1, "007")  # stays a string: no number conversion anywhere
            s2.bind("007")  # plain local bind: recorded in the background
            await self.eventually_fields(a, "007", [field(a, s1), field(a, s2)])
            self.assertEqual(await self.index(a, a), [f"{s1.id} 007", f"{s2.id} 007"])
            self.assertEqual(
                sorted(await a.get_sids_by_uid("007")), [(a.node_id, s1.id), (a.node_id, s2.id)]
            )
            await a.unbind(s2, "007")
            await self.eventually_fields(a, "007", [field(a, s1)])
            conn1.close()
            await self.eventually_fields(a, "007", [])
            self.assertEqual(await self.index(a, a), [])
            self.assertEqual(await a.get_status_by_uids(["007"]), {"007": False})

        return ensureDeferred(run())

    def test_graceful_stop_removes_entries(self) -> Deferred[None]:
        async def run() -> None:
            a = await self.node("conn-a")
            b = await self.node("conn-b")
            s, _ = connect(b.session_service)
            await b.bind(s, "u")
            self.assertEqual(await a.get_status_by_uids(["u"]), {"u": True})
            await b.stopService()
            self.assertEqual(await self.fields(a, "u"), [])
            self.assertEqual(await a.link.call("SMEMBERS", "t:nodes"), [a.node_id])
            self.assertEqual(await a.link.call("EXISTS", "t:s:conn-b"), 0)

        return ensureDeferred(run())

    def test_duplicate_server_id_refused(self) -> Deferred[None]:
        async def run() -> None:
            a = await self.node("conn-a")
            twin = await self.node("conn-a", start=False)
            error = await self.assertFailure(twin.started, DuplicateServerId)
            self.assertIn(a.node_id, str(error))
            self.assertIn("--server-id", str(error))
            await twin.stopService()
            # the first node is untouched
            self.assertEqual(await a.link.call("GET", "t:s:conn-a"), a.node_id)

        return ensureDeferred(run())

    def test_dead_node_reaped(self) -> Deferred[None]:
        """A node that stops refreshing (a crash) loses its entries; then a reject-new login
        elsewhere succeeds."""

        async def run() -> None:
            a = await self.node("conn-a", "reject-new")
            b = await self.node("conn-b", "reject-new")
            sb, _ = connect(b.session_service)
            await b.bind(sb, "u")
            sa, _ = connect(a.session_service)
            await self.assertFailure(a.bind(sa, "u"), SessionError)
            b._beat.stop()  # b "crashes": no more heartbeats
            started = time.monotonic()
            await self.eventually_fields(a, "u", [])
            self.assertLess(time.monotonic() - started, 3)
            self.assertEqual(await a.link.call("SMEMBERS", "t:nodes"), [a.node_id])
            self.assertEqual(await self.index(a, b), [])
            await a.bind(sa, "u")
            self.assertEqual(sa.uid, "u")

        return ensureDeferred(run())


class MessagingTests(ClusterTestCase):
    def test_push_across_nodes(self) -> Deferred[None]:
        async def run() -> None:
            a = await self.node("conn-a")
            b = await self.node("conn-b")
            sa, conn_a = connect(a.session_service)
            sb, conn_b = connect(b.session_service)
            sb2, conn_b2 = connect(b.session_service)
            await a.bind(sa, "ua")
            await b.bind(sb, "ub")
            await b.bind(sb2, "ub")
            offline = await a.push_by_uids("onChat", {"t": 1}, ["ub", "ua", "nobody", "ub"])
            self.assertEqual(offline, ["nobody"])
            await until(lambda: conn_b.packages and conn_b2.packages)
            self.assertEqual(conn_a.pushes(), [("onChat", {"t": 1})])
            self.assertEqual(conn_b.pushes(), [("onChat", {"t": 1})])
            self.assertEqual(conn_b2.pushes(), [("onChat", {"t": 1})])
            # encoded once by the sender: the very bytes arrive
            self.assertEqual(conn_b.packages[0], conn_a.packages[0])

        return ensureDeferred(run())

    def test_kick_across_nodes(self) -> Deferred[None]:
        async def run() -> None:
            a = await self.node("conn-a")
            b = await self.node("conn-b")
            sa, conn_a = connect(a.session_service)
            sb, conn_b = connect(b.session_service)
            sb2, conn_b2 = connect(b.session_service)
            for s in (sa, sb, sb2):
                await (a if s is sa else b).bind(s, "u")
            self.assertEqual(await a.kick("u", "bye"), 3)
            self.assertEqual(
                (conn_a.kicks, conn_b.kicks, conn_b2.kicks), (["bye"], ["bye"], ["bye"])
            )
            self.assertEqual(await a.kick("u"), 0)
            s3, conn3 = connect(b.session_service)
            self.assertTrue(await a.kick_by_session(b.node_id, s3.id, "out"))
            self.assertEqual(conn3.kicks, ["out"])
            self.assertFalse(await a.kick_by_session(b.node_id, s3.id, "out"))

        return ensureDeferred(run())

    def test_kick_timeout_names_silent_node(self) -> Deferred[None]:
        async def run() -> None:
            a = await self.node("conn-a")
            b = await self.node("conn-b")
            sb, _ = connect(b.session_service)
            await b.bind(sb, "u")
            b._handlers = {}  # type: ignore[misc]  # b reads its inbox but never answers
            started = time.monotonic()
            error = await self.assertFailure(a.kick("u"), ClusterTimeout)
            self.assertLess(time.monotonic() - started, TIMEOUT + 1)
            self.assertEqual(error.missing, [b.node_id])
            self.assertEqual(error.partial, 0)

        return ensureDeferred(run())

    def test_broadcast(self) -> Deferred[None]:
        async def run() -> None:
            a = await self.node("conn-a")
            b = await self.node("conn-b")
            sa, conn_a = connect(a.session_service)
            sb, conn_b = connect(b.session_service)
            _, conn_free = connect(b.session_service)
            await a.bind(sa, "ua")
            await b.bind(sb, "ub")
            self.assertEqual(await a.broadcast("onAll", {"n": 1}, binded=True), 2)
            self.assertEqual(await b.broadcast("onAll", {"n": 2}), 2)
            await until(lambda: len(conn_a.packages) == 2 and len(conn_b.packages) == 2)
            await until(lambda: conn_free.packages)
            self.assertEqual(conn_a.pushes(), [("onAll", {"n": 1}), ("onAll", {"n": 2})])
            # no order across senders: b's own broadcast is local, a's comes through Redis
            self.assertCountEqual(conn_b.pushes(), [("onAll", {"n": 1}), ("onAll", {"n": 2})])
            self.assertEqual(conn_free.pushes(), [("onAll", {"n": 2})])

        return ensureDeferred(run())

    def test_channels_across_nodes(self) -> Deferred[None]:
        async def run() -> None:
            a = await self.node("conn-a")
            b = await self.node("conn-b")
            c = await self.node("conn-c")  # no sessions: pushes from elsewhere
            sa, conn_a = connect(a.session_service)
            sb, conn_b = connect(b.session_service)
            await a.bind(sa, "ua")
            await b.bind(sb, "ub")
            for uid in ("ua", "ub", "gone"):
                await a.channel_add("room", uid)
            self.assertEqual(sorted(await c.channel_members("room")), ["gone", "ua", "ub"])
            self.assertEqual(await c.channel_push("room", "onRoom", {"r": 1}), ["gone"])
            await until(lambda: conn_a.packages and conn_b.packages)
            self.assertTrue(await b.channel_leave("room", "ub"))
            self.assertFalse(await b.channel_leave("room", "ub"))
            self.assertEqual(await c.channel_push("room", "onRoom", {"r": 2}), ["gone"])
            await until(lambda: len(conn_a.packages) == 2)
            self.assertEqual(conn_a.pushes(), [("onRoom", {"r": 1}), ("onRoom", {"r": 2})])
            self.assertEqual(conn_b.pushes(), [("onRoom", {"r": 1})])
            await c.channel_destroy("room")
            self.assertEqual(await a.channel_members("room"), [])
            self.assertEqual(await a.channel_push("room", "onRoom", {}), [])

        return ensureDeferred(run())

    def test_dead_node_before_reaping(self) -> Deferred[None]:
        """A node that vanished without a graceful stop, its key not yet expired: pushes to
        its uids count as undelivered and kicks count 0, at once."""

        async def run() -> None:
            a = await self.node("conn-a")
            b = await self.node("conn-b")
            sb, _ = connect(b.session_service)
            await b.bind(sb, "ub")
            b._beat.stop()
            # not yet reaped, however slow this machine: b's liveness key lasts a minute (on
            # b's own connection, after any heartbeat still in flight)
            await b.link.call("PEXPIRE", f"t:n:{b.node_id}", 60000)
            await b.link.stop()  # no more inbox reader; the directory still names b
            self.assertEqual(await a.get_status_by_uids(["ub"]), {"ub": True})
            started = time.monotonic()
            self.assertEqual(await a.push_by_uids("onChat", {}, ["ub"]), ["ub"])
            self.assertEqual(await a.kick("ub"), 0)
            self.assertFalse(await a.kick_by_session(b.node_id, sb.id))
            self.assertLess(time.monotonic() - started, TIMEOUT)
            self.assertEqual((a.undelivered, a.dropped), (3, 0))

        return ensureDeferred(run())

    def test_malformed_messages_dropped(self) -> Deferred[None]:
        async def run() -> None:
            a = await self.node("conn-a")
            for junk in (b"", b"hello", b"PT1Z\x00\x00\x00\x00", b"PT1P\x00\x00\x00\x09{}"):
                await a.link.publish(a.inbox, junk)
            await a.link.publish(a.inbox, encode_envelope("P", {"from": "x"}))  # no uids
            await until(lambda: a.dropped == 5, what="five drops")

        return ensureDeferred(run())


class PolicyTests(ClusterTestCase):
    def test_reject_new(self) -> Deferred[None]:
        async def run() -> None:
            a = await self.node("conn-a", "reject-new")
            b = await self.node("conn-b", "reject-new")
            sa, _ = connect(a.session_service)
            sb, _ = connect(b.session_service)
            await a.bind(sa, "u")
            error = await self.assertFailure(b.bind(sb, "u"), SessionError)
            self.assertEqual(
                str(error), "singleSession is enabled, and session has already bound with uid: u"
            )
            self.assertIsNone(sb.uid)
            await a.bind(sa, "u")  # the holder binding again is fine

        return ensureDeferred(run())

    def test_kick_old(self) -> Deferred[None]:
        async def run() -> None:
            a = await self.node("conn-a", "kick-old")
            b = await self.node("conn-b", "kick-old")
            sa, conn_a = connect(a.session_service)
            sb, conn_b = connect(b.session_service)
            await a.bind(sa, "u")
            await b.bind(sb, "u")
            self.assertEqual(conn_a.kicks, ["kick"])  # acknowledged before bind fired
            self.assertEqual(conn_b.kicks, [])
            await self.eventually_fields(a, "u", [field(b, sb)])

        return ensureDeferred(run())

    async def race(self, policy: str) -> None:
        a = await self.node("conn-a", policy)
        b = await self.node("conn-b", policy)
        pairs: list[tuple[tuple[Session, FakeConnection], tuple[Session, FakeConnection]]] = []
        binds = []
        for i in range(50):
            pa, pb = connect(a.session_service), connect(b.session_service)
            pairs.append((pa, pb))
            binds.append(a.bind(pa[0], f"u{i}"))
            binds.append(b.bind(pb[0], f"u{i}"))
        results = await DeferredList(binds, consumeErrors=True)
        for ok, value in results:
            if not ok:
                value.trap(SessionError)
        for i, ((s1, _), (s2, _)) in enumerate(pairs):
            alive = [s for s in (s1, s2) if not s.closed and s.uid == f"u{i}"]
            self.assertEqual(len(alive), 1, f"u{i}: {alive}")
            node = a if alive[0] is s1 else b
            await self.eventually_fields(a, f"u{i}", [field(node, alive[0])])

    def test_race_reject_new(self) -> Deferred[None]:
        return ensureDeferred(self.race("reject-new"))

    def test_race_kick_old(self) -> Deferred[None]:
        return ensureDeferred(self.race("kick-old"))


class RedisFailureTests(ClusterTestCase):
    def test_acl_user_and_wrong_password(self) -> Deferred[None]:
        """An ACL user limited to the prefix is enough; a wrong password is reported and
        every call fails at once, without hanging."""

        async def run() -> None:
            self.redis.command(
                "ACL SETUSER pomelo on >right resetkeys ~t:* resetchannels &t:* +@all -@dangerous"
            )
            self.redis.command("ACL SETUSER default off")
            url = f"redis://pomelo@127.0.0.1:{self.redis.port}/0"
            wrong = await self.node("conn-w", start=False, url=url, password="wrong")
            await until(lambda: wrong.link.error is not None, what="auth failure reported")
            self.assertIn("auth", wrong.link.error or "")
            await self.assertFailure(wrong.kick("u"), ClusterUnavailable)
            a = await self.node("conn-a", url=url, password="right")
            b = await self.node("conn-b", url=url, password="right")
            sb, conn_b = connect(b.session_service)
            await b.bind(sb, "u")
            self.assertEqual(await a.kick("u", "acl"), 1)
            self.assertEqual(conn_b.kicks, ["acl"])

        return ensureDeferred(run())

    def test_redis_killed_then_restarted(self) -> Deferred[None]:
        async def run() -> None:
            a = await self.node("conn-a")
            b = await self.node("conn-b")
            sa, conn_a = connect(a.session_service)
            sb, conn_b = connect(b.session_service)
            await a.bind(sa, "ua")
            await b.bind(sb, "ub")

            self.redis.kill()
            await until(lambda: not a.link.up and not b.link.up, what="both see Redis down")
            started = time.monotonic()
            error = await self.assertFailure(
                a.push_by_uids("onChat", {}, ["ua", "ub"]), ClusterUnavailable
            )
            self.assertIn("this node's sessions only", str(error))
            self.assertEqual(conn_a.pushes(), [("onChat", {})])  # the local half happened
            await self.assertFailure(a.broadcast("onAll", {}), ClusterUnavailable)
            await self.assertFailure(a.get_sids_by_uid("ub"), ClusterUnavailable)
            await self.assertFailure(a.channel_add("room", "ua"), ClusterUnavailable)
            s2, _ = connect(a.session_service)
            await self.assertFailure(a.bind(s2, "x"), ClusterUnavailable)
            self.assertLess(time.monotonic() - started, 0.5)  # failed at once, no waiting
            s2.bind("local")  # the local service goes on
            self.assertEqual(a.session_service.push_by_uids("onLocal", {}, ["local"]), [])

            self.redis.start()  # empty: no persistence
            await until(lambda: a.synced and b.synced, timeout=10, what="both resynced")
            self.assertEqual(await self.fields(a, "ub"), [field(b, sb)])
            self.assertEqual(await self.fields(a, "local"), [field(a, s2)])
            self.assertEqual(await a.push_by_uids("onAgain", {}, ["ub"]), [])
            await until(lambda: conn_b.pushes() == [("onAgain", {})], what="push after restart")
            self.assertEqual(await b.kick("ua", "bye"), 1)
            self.assertEqual(conn_a.kicks, ["bye"])

        return ensureDeferred(run())

    def test_wedged_subscriber_restarted(self) -> Deferred[None]:
        """A subscriber that stays connected but delivers nothing (its subscriptions gone, as
        after some failovers) is noticed by the node's own probes and replaced."""

        async def run() -> None:
            a = await self.node("conn-a")
            b = await self.node("conn-b")
            sa, conn_a = connect(a.session_service)
            await a.bind(sa, "ua")
            await a.link._sub.unsubscribe([a.inbox, a.all_channel])  # connected, yet deaf
            self.assertTrue(a.link.up)
            await until(lambda: a.subscriber_restarts == 1, what="subscriber restarted")
            await until(lambda: a.synced, what="a resynced")
            self.assertEqual(await b.push_by_uids("onChat", {"n": 1}, ["ua"]), [])
            await until(lambda: conn_a.pushes() == [("onChat", {"n": 1})], what="push arrives")
            self.assertEqual(b.subscriber_restarts, 0)  # b's probes kept coming

        return ensureDeferred(run())

    def test_unreachable_at_start(self) -> Deferred[None]:
        async def run() -> None:
            self.redis.kill()
            a = await self.node("conn-a", start=False)
            started = time.monotonic()
            await self.assertFailure(a.kick("u"), ClusterUnavailable)
            self.assertLess(time.monotonic() - started, 0.5)
            self.redis.start()
            await a.started
            self.assertEqual(await a.kick("u"), 0)

        return ensureDeferred(run())
