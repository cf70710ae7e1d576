"""A node's rewrite of its directory entries (the resync) against a real redis-server: binds,
unbinds and closes that happen while it is in flight, and the app's C{resync} event.

The ordering is controlled, not timed: the node's one command connection runs commands in the
order they are sent, and a held reply (L{HeldReply}) keeps a rewrite in flight as long as the
test needs.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.trial.unittest import TestCase

from pomelo_twisted.cluster import scripts
from pomelo_twisted.cluster.node import RedisCluster
from pomelo_twisted.services.application import Application
from pomelo_twisted.services.cluster import ClusterUnavailable
from tests.support.cluster import connect, start_node, until
from tests.support.redis import RedisTestCase


class HeldReply:
    """Holds the reply of the node's next call of C{script}: Redis has run it, the node has
    not seen the answer yet (until L{release})."""

    def __init__(self, case: TestCase, node: RedisCluster, script: scripts.Script) -> None:
        self.held = False
        self._release: Deferred[None] = Deferred()
        real = node.link.evalsha

        def evalsha(sha: str, source: bytes, keys: Any, args: Any) -> Deferred[Any]:
            d = real(sha, source, keys, args)
            if sha != script.sha or self.held:
                return d
            self.held = True
            return d.addCallback(lambda result: self._release.addCallback(lambda _: result))

        case.patch(node.link, "evalsha", evalsha)

    def release(self) -> None:
        self._release.callback(None)


def fail_once(case: TestCase, node: RedisCluster, script: scripts.Script) -> None:
    """The node's next call of C{script} fails unsent, as when the connection drops."""
    real = node.link.evalsha
    failed: list[bool] = []

    def evalsha(sha: str, source: bytes, keys: Any, args: Any) -> Deferred[Any]:
        if sha == script.sha and not failed:
            failed.append(True)
            return fail(ClusterUnavailable("Redis at test: connection lost"))
        return real(sha, source, keys, args)

    case.patch(node.link, "evalsha", evalsha)


async def directory(node: RedisCluster) -> set[tuple[int, str]]:
    """The node's sessions as Redis has them: its index, each checked against the uid's hash."""
    out = set()
    for entry in await node.link.call("SMEMBERS", f"t:ni:{node.node_id}"):
        sid, uid = entry.split(" ", 1)
        fields = await node.link.call("HKEYS", f"t:u:{uid}")
        if f"{node.node_id}|{sid}" in fields:
            out.add((int(sid), uid))
    return out


async def orphans(node: RedisCluster, uids: list[str]) -> list[str]:
    """Fields of this node in the uids' hashes that its index does not list."""
    index = set(await node.link.call("SMEMBERS", f"t:ni:{node.node_id}"))
    out = []
    for uid in uids:
        for field in await node.link.call("HKEYS", f"t:u:{uid}"):
            holder, _, sid = field.rpartition("|")
            if holder == node.node_id and f"{sid} {uid}" not in index:
                out.append(field)
    return out


async def heartbeat(node: RedisCluster) -> None:
    """One heartbeat now (the tests that call this give the node a long period)."""
    beat = node._heartbeat()
    assert beat is not None, "the node is not synced"
    await beat


def local(node: RedisCluster) -> set[tuple[int, str]]:
    """The node's bound sessions."""
    out: set[tuple[int, str]] = set()
    node.session_service.for_each_bound_session(
        lambda s: out.add((s.id, s.uid)) if s.uid is not None else None
    )
    return out


class RewriteRaceTests(RedisTestCase):
    def test_plain_bind_and_close_during_reconnect_rewrite(self) -> Deferred[None]:
        """After Redis comes back the node rewrites its entries; a plain bind made while that
        rewrite is in flight is recorded, and a session closed or unbound meanwhile leaves no
        entry behind."""

        async def run() -> None:
            node = await start_node(self, self.redis.url, "conn-a")
            staying, _ = connect(node.session_service)
            closing, closing_conn = connect(node.session_service)
            leaving, _ = connect(node.session_service)
            late, _ = connect(node.session_service)
            await node.bind(staying, "u-stay")
            await node.bind(closing, "u-close")
            await node.bind(leaving, "u-leave")
            reasons: list[str] = []
            node.on("resync", reasons.append)
            rewrite = HeldReply(self, node, scripts.RESYNC)
            node.link.restart_subscriber()  # down and up again: the node rewrites its entries
            await until(lambda: rewrite.held, what="the rewrite is in flight")
            self.assertFalse(node.synced)
            late.bind("u-late")  # a plain bind: not through app.cluster
            closing_conn.close()
            leaving.unbind("u-leave")
            rewrite.release()
            await until(lambda: reasons, what="the resync event, after the rewrite")
            self.assertEqual((node.resyncs, reasons), (1, ["reconnected"]))
            await node.link.call("PING")  # whatever the rewrite sent has run
            self.assertEqual(await directory(node), local(node))
            self.assertEqual(local(node), {(staying.id, "u-stay"), (late.id, "u-late")})
            uids = ["u-stay", "u-close", "u-leave", "u-late"]
            self.assertEqual(await orphans(node, uids), [])

        return ensureDeferred(run())

    def test_cluster_bind_during_heartbeat_rewrite(self) -> Deferred[None]:
        """Redis lost its data with the connection up: the heartbeat that notices rewrites the
        entries. A C{cluster.bind} whose script ran before that rewrite, but whose answer came
        after the rewrite read the local sessions, keeps its entry."""

        async def run() -> None:
            # the heartbeat is driven by the test, not by the timer
            node = await start_node(self, self.redis.url, "conn-a", heartbeat=60)
            bound, _ = connect(node.session_service)
            binding, _ = connect(node.session_service)
            await node.bind(bound, "u-bound")
            await node.link.call("FLUSHALL")
            beat = ensureDeferred(heartbeat(node))  # finds a new epoch, then rewrites
            bind = node.bind(binding, "u-binding")  # runs in Redis between the two
            await bind
            await beat
            self.assertEqual(node.redis_resets, 1)
            await node.link.call("PING")
            self.assertEqual(await directory(node), local(node))
            self.assertEqual(local(node), {(bound.id, "u-bound"), (binding.id, "u-binding")})

        return ensureDeferred(run())


class ResyncEventTests(RedisTestCase):
    def test_restarted_empty(self) -> Deferred[None]:
        """Redis restarted without its data: the app's listener (registered on the app before
        it had a cluster) is called once, with C{redis-empty}, once the node's entries are
        back in Redis."""

        async def run() -> None:
            app = Application()
            calls: list[tuple[str, bool]] = []
            seen: list[Deferred[Any]] = []

            @app.on_cluster_resync
            def rebuilt(reason: str) -> None:
                calls.append((reason, node.synced))
                seen.append(node.link.call("HKEYS", "t:u:ua"))  # runs after the rewrite

            node = await start_node(self, self.redis.url, "conn-a")
            app.cluster = node
            session, _ = connect(node.session_service)
            await node.bind(session, "ua")
            self.redis.kill()
            await until(lambda: not node.link.up, what="Redis down")
            self.assertEqual(calls, [])
            self.redis.start()  # empty
            await until(lambda: calls, timeout=10, what="the resync event")
            self.assertEqual(calls, [("redis-empty", True)])
            self.assertEqual(await seen[0], [f"{node.node_id}|{session.id}"])
            await heartbeat(node)  # the next heartbeat sees the same epoch: no second event
            self.assertEqual((calls, node.redis_resets, node.resyncs), ([calls[0]], 1, 1))

        return ensureDeferred(run())

    def test_failing_listener_is_logged(self) -> Deferred[None]:
        """A listener that raises is logged; the other listeners still run (here one that
        rebuilds a global channel, as an app would) and the node stays healthy."""

        async def run() -> None:
            node = await start_node(self, self.redis.url, "conn-a", heartbeat=60)
            session, conn = connect(node.session_service)
            await node.bind(session, "ua")

            def broken(reason: str) -> None:
                raise ZeroDivisionError(reason)

            async def rebuild(reason: str) -> None:
                await node.channel_add("lobby", "ua")

            node.on("resync", broken)
            node.on("resync", rebuild)
            self.assertRaises(ValueError, node.on, "resynced", broken)
            await node.link.call("FLUSHALL")
            await heartbeat(node)
            self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
            await until(lambda: node.synced, what="synced")
            self.assertEqual(await node.channel_members("lobby"), ["ua"])
            self.assertEqual(await node.channel_push("lobby", "onLobby", {}), [])
            self.assertEqual(conn.pushes(), [("onLobby", {})])
            self.assertTrue(node.off("resync", broken))
            await heartbeat(node)  # healthy: the next heartbeat finds nothing to redo
            self.assertEqual((node.redis_resets, node.resyncs), (1, 1))

        return ensureDeferred(run())

    def test_rebuild_cut_short(self) -> Deferred[None]:
        """The connection drops while the node writes back what Redis lost: the rewrite after
        the reconnection still writes the channel memberships back, and the event still says
        C{redis-empty} (the epoch it sees then is no longer new)."""

        async def run() -> None:
            node = await start_node(self, self.redis.url, "conn-a", heartbeat=60)
            session, _ = connect(node.session_service)
            await node.bind(session, "ua")
            await node.channel_add("room", "ua")
            reasons: list[str] = []
            node.on("resync", reasons.append)
            await node.link.call("FLUSHALL")
            fail_once(self, node, scripts.RESYNC)
            await heartbeat(node)  # finds the new epoch; its rewrite fails (logged)
            self.assertEqual((node.redis_resets, reasons), (1, []))
            node.link.restart_subscriber()  # the connection drops and comes back
            await until(lambda: reasons, what="the resync event")
            self.assertEqual((node.redis_resets, reasons), (1, ["redis-empty"]))
            self.assertEqual(await node.channel_members("room"), ["ua"])
            self.assertEqual(await directory(node), {(session.id, "ua")})

        return ensureDeferred(run())

    def test_stalled(self) -> Deferred[None]:
        """The node's liveness key expired (a stall): its rewrite ends with C{stalled}."""

        async def run() -> None:
            node = await start_node(self, self.redis.url, "conn-a", heartbeat=60)
            reasons: list[str] = []
            node.on("resync", reasons.append)
            await node.link.call("DEL", f"t:n:{node.node_id}")
            await heartbeat(node)
            self.assertEqual((reasons, node.resyncs), (["stalled"], 1))

        return ensureDeferred(run())
