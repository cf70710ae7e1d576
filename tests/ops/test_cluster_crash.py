"""docs/cluster.md's failure row "a process crashes", with real processes: two ``twistd
pomelo-connector --redis`` sharing a real redis-server, one SIGKILLed (no drain, no cleanup:
its entries stay in Redis) while a uid is bound on it.

- ``--single-session``: the uid's login elsewhere is refused while the dead process's liveness
  key lives, then succeeds within the documented bound (3 heartbeats, plus one for the
  reaping), after which Redis holds nothing naming the dead node.
- ``--kick-old``: the login elsewhere succeeds at once, long before the dead node expires.

The measured times go to the test log (``_trial_temp/test.log``, "crash:")."""

from __future__ import annotations

import time
from typing import Any

import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from pomelo_twisted.client import PomeloClient
from tests.support.processes import Twistd, can_connect, free_port, wait_until
from tests.support.redis import RedisTestCase

BIND = "connector.entryHandler.bind"
PREFIX = "crash"
UID = "u"
#: Allowance over a documented bound for a loaded machine (2 cores shared by the suite).
MARGIN = 1.5
#: --cluster-timeout: the longest a kick's acknowledgement is awaited.
CLUSTER_TIMEOUT = 2.0

_log = Logger()


class ConnectorCrashTests(RedisTestCase):
    timeout = 90

    async def connector(self, server_id: str, policy: str, heartbeat: float) -> tuple[Twistd, int]:
        """A connector process of the cluster, once it listens (it has joined)."""
        port = free_port()
        process = Twistd(
            self,
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--redis",
            self.redis.url,
            "--redis-prefix",
            PREFIX,
            "--server-id",
            server_id,
            "--cluster-heartbeat",
            str(heartbeat),
            "--cluster-timeout",
            str(CLUSTER_TIMEOUT),
            policy,
        )
        await wait_until(
            lambda: process.returncode is not None or can_connect(port), 30, f"{server_id} listens"
        )
        self.assertIsNone(process.returncode, process.output)
        return process, port

    async def client(self, port: int) -> PomeloClient:
        client = PomeloClient(reactor, request_timeout=5, handshake_timeout=5)
        await client.connect(f"tcp:host=127.0.0.1:port={port}")
        self.addCleanup(client.close)
        return client

    async def inspector(self) -> Any:
        """A plain Redis connection, to look at what the processes left there."""
        connection = await txredisapi.Connection(
            "127.0.0.1", self.redis.port, reconnect=False, convertNumbers=False
        )
        self.addCleanup(connection.disconnect)
        return connection

    async def naming(self, redis: Any, node: str) -> list[tuple[str, str]]:
        """Every key under the prefix whose name, hash fields, set members or string value
        name C{node}: C{(key, what)} pairs (SCAN, as a test may; the product never does)."""
        found: list[tuple[str, str]] = []
        cursor = 0
        while True:
            cursor, keys = await redis.scan(cursor, f"{PREFIX}:*", 100)
            for key in keys:
                if node in key:
                    found.append((key, "its name"))
                kind = await redis.type(key)
                items: list[str] = []
                if kind == "hash":
                    items = list(await redis.hkeys(key))
                elif kind == "set":
                    items = list(await redis.smembers(key))
                elif kind == "string":
                    items = [str(await redis.get(key))]
                found += [(key, item) for item in items if node in item]
            if int(cursor) == 0:
                return sorted(found)

    async def node_id(self, redis: Any, server_id: str) -> str:
        node = await redis.get(f"{PREFIX}:s:{server_id}")
        self.assertIsInstance(node, str)
        return str(node)

    async def stop(self, process: Twistd) -> str:
        """Stop a survivor gracefully; its output, checked for tracebacks."""
        self.assertIn(await process.stop(), (0, -15), process.output)
        output = process.output
        self.assertNotIn("Traceback", output)
        return output

    def test_single_session_login_after_reaping(self) -> Deferred[None]:
        heartbeat = 0.5
        # the dead node's liveness key lives 3 heartbeats from its last refresh (made at most
        # one heartbeat before the kill); the survivor reaps it at its next heartbeat
        bound = 3 * heartbeat + heartbeat + MARGIN

        async def run() -> None:
            a, port_a = await self.connector("conn-a", "--single-session", heartbeat)
            b, port_b = await self.connector("conn-b", "--single-session", heartbeat)
            on_a, on_b = await self.client(port_a), await self.client(port_b)
            self.assertEqual(await on_a.request(BIND, {"uid": UID}), {"code": 200, "uid": UID})
            # bound on a live node: refused cluster-wide
            self.assertEqual(await on_b.request(BIND, {"uid": UID}), {"code": 500})
            redis = await self.inspector()
            node_a = await self.node_id(redis, "conn-a")
            before = await self.naming(redis, node_a)
            self.assertEqual(
                sorted({key for key, _ in before}),
                [
                    f"{PREFIX}:n:{node_a}",
                    f"{PREFIX}:ni:{node_a}",
                    f"{PREFIX}:nodes",
                    f"{PREFIX}:s:conn-a",
                    f"{PREFIX}:u:{UID}",
                ],
                before,
            )

            killed = time.monotonic()
            self.assertEqual(await a.kill(), -9)
            answers: list[Any] = []
            while True:
                answer = await on_b.request(BIND, {"uid": UID})
                answers.append(answer)
                if answer == {"code": 200, "uid": UID}:
                    bound_after = time.monotonic() - killed
                    break
                self.assertEqual(answer, {"code": 500})
                if time.monotonic() - killed > bound:
                    self.fail(f"still refused {bound} s after the crash: {len(answers)} tries")
                await deferLater(reactor, 0.02, lambda: None)
            # the dead node's entries held the uid for a while after the crash
            self.assertEqual(answers[0], {"code": 500})
            while (left := await self.naming(redis, node_a)) != []:
                if time.monotonic() - killed > bound:
                    self.fail(f"Redis still names the dead node {bound} s after the crash: {left}")
                await deferLater(reactor, 0.02, lambda: None)
            reaped_after = time.monotonic() - killed
            _log.info(
                "crash: heartbeat {heartbeat} s: login on the survivor {bind:.3f} s after the "
                "SIGKILL ({tries} tries), no key naming the dead node after {reaped:.3f} s",
                heartbeat=heartbeat,
                bind=bound_after,
                tries=len(answers),
                reaped=reaped_after,
            )
            self.assertLess(bound_after, bound)
            self.assertLess(reaped_after, bound)
            node_b = await self.node_id(redis, "conn-b")
            fields = await redis.hkeys(f"{PREFIX}:u:{UID}")
            self.assertEqual([f.partition("|")[0] for f in fields], [node_b])
            self.assertEqual(list(await redis.smembers(f"{PREFIX}:nodes")), [node_b])
            output = await self.stop(b)
            self.assertIn(f"reaped the entries of dead cluster node {node_a}", output)

        return ensureDeferred(run())

    def test_kick_old_login_at_once(self) -> Deferred[None]:
        heartbeat = 2.0  # the dead node stays live in Redis for seconds after the crash

        async def run() -> None:
            a, port_a = await self.connector("conn-a", "--kick-old", heartbeat)
            b, port_b = await self.connector("conn-b", "--kick-old", heartbeat)
            on_a, on_b = await self.client(port_a), await self.client(port_b)
            self.assertEqual(await on_a.request(BIND, {"uid": UID}), {"code": 200, "uid": UID})
            redis = await self.inspector()
            node_a = await self.node_id(redis, "conn-a")
            node_b = await self.node_id(redis, "conn-b")
            inbox = f"{PREFIX}:in:{node_a}"

            killed = time.monotonic()
            self.assertEqual(await a.kill(), -9)
            # the kernel closed the dead process's sockets: Redis drops its subscriber
            subscribers: list[int] = []

            async def listeners() -> int:
                _, count = await redis.execute_command("PUBSUB", "NUMSUB", inbox)
                return int(count)

            while (count := await listeners()) != 0:
                subscribers.append(count)
                if time.monotonic() - killed > MARGIN:
                    self.fail(f"Redis still has a subscriber to {inbox} {MARGIN} s after the kill")
                await deferLater(reactor, 0.02, lambda: None)
            unsubscribed_after = time.monotonic() - killed

            asked = time.monotonic()
            self.assertEqual(await on_b.request(BIND, {"uid": UID}), {"code": 200, "uid": UID})
            took = time.monotonic() - asked
            # the dead node was still live for the directory: the login did not wait for it
            self.assertGreater(int(await redis.execute_command("PTTL", f"{PREFIX}:n:{node_a}")), 0)
            # and its stale entry went with the kick that nobody could receive
            fields = await redis.hkeys(f"{PREFIX}:u:{UID}")
            self.assertEqual([f.partition("|")[0] for f in fields], [node_b])
            _log.info(
                "crash: kick-old: Redis dropped the dead process's subscriber {gone:.3f} s "
                "after the SIGKILL; the login on the survivor took {took:.3f} s",
                gone=unsubscribed_after,
                took=took,
            )
            # not the kick's acknowledgement timeout: no node was waited for
            self.assertLess(took, CLUSTER_TIMEOUT)
            output = await self.stop(b)
            self.assertNotIn("kick-old:", output)

        return ensureDeferred(run())
