"""``twistd pomelo-connector --redis``: the cluster options, and two connector services in one
process, each with real clients, acting as one server through a real redis-server."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.client import PomeloClient
from pomelo_twisted.ops.cluster import ClusteredService
from pomelo_twisted.ops.tap import makeService
from pomelo_twisted.services.cluster import LocalCluster
from tests.support.cluster import start_service
from tests.support.options import tap_options as parse
from tests.support.redis import RedisTestCase

ROUTE = "connector.entryHandler."


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        options = parse()
        self.assertIsNone(options["redis"])
        self.assertEqual(options["redis-prefix"], "pomelo")
        self.assertEqual(options["server-id"], "connector-server-1")

    def test_redis_gives_a_unique_server_id(self) -> None:
        options = parse("--redis", "redis://127.0.0.1:6399/1")
        self.assertEqual(options["server-id"], f"{socket.gethostname()}-{os.getpid()}")
        self.assertEqual(options["redis-url"].db, 1)
        options = parse("--redis", "redis://127.0.0.1:6399/1", "--server-id", "conn-7")
        self.assertEqual(options["server-id"], "conn-7")

    def test_password_file(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("s3cret\nignored\n")
        options = parse("--redis", "redis://h", "--redis-password-file", path)
        self.assertEqual(options["redis-url"].password, "s3cret")
        self.assertNotIn("s3cret", str(options["redis-url"]))

    def test_errors(self) -> None:
        for args, message in (
            (["--redis", "http://h"], "--redis"),
            (["--redis", "redis://h", "--redis-password-file", "/nonexistent"], "password"),
            (["--redis-password-file", "/etc/hostname"], "needs --redis"),
            (["--kick-old", "--single-session"], "two different policies"),
            (["--redis", "redis://h", "--redis-prefix", "a b"], "--redis-prefix"),
            (["--cluster-timeout", "0"], "--cluster-timeout"),
        ):
            error = self.assertRaises(usage.UsageError, parse, *args)
            self.assertIn(message, str(error))

    def test_kick_old_without_redis(self) -> None:
        service = makeService(parse("--kick-old", "--listen", "tcp:0"))
        cluster = service.factory.connector.app.cluster  # type: ignore[attr-defined]
        self.assertIsInstance(cluster, LocalCluster)
        self.assertEqual(cluster.policy, "kick-old")


class TwoConnectorsTests(RedisTestCase):
    async def server(self, server_id: str, *args: str) -> tuple[ClusteredService, int]:
        return await start_service(self, self.redis.url, "e2e", server_id, *args)

    async def client(self, port: int) -> PomeloClient:
        client = PomeloClient(reactor, request_timeout=5, handshake_timeout=5)
        await client.connect(f"tcp:host=127.0.0.1:port={port}")
        self.addCleanup(client.close)
        return client

    def test_one_server(self) -> Deferred[None]:
        async def run() -> None:
            one, port1 = await self.server("conn-1", "--single-session")
            two, port2 = await self.server("conn-2", "--single-session")
            alice = await self.client(port1)
            again = await self.client(port2)
            other = await self.client(port2)
            bind = ROUTE + "bind"
            self.assertEqual(
                await alice.request(bind, {"uid": "alice"}), {"code": 200, "uid": "alice"}
            )
            # bound on a live node of the cluster: refused as Pomelo's singleSession does
            self.assertEqual(await again.request(bind, {"uid": "alice"}), {"code": 500})

            pushes: list[tuple[str, Any]] = []
            for name, c in (("alice", alice), ("again", again), ("other", other)):
                c.on("onBroadcast", lambda body, name=name: pushes.append((name, body)))
            self.assertEqual(await other.request(ROUTE + "broadcast", {"hi": 1}), {"code": 200})
            deadline = time.monotonic() + 5
            while len(pushes) < 3 and time.monotonic() < deadline:
                await deferLater(reactor, 0.01, lambda: None)
            self.assertCountEqual(
                pushes, [("alice", {"hi": 1}), ("again", {"hi": 1}), ("other", {"hi": 1})]
            )

            kicked: list[Any] = []
            alice.on_kick(kicked.append)
            answer = await other.request(ROUTE + "kick", {"uid": "alice", "reason": "bye"})
            self.assertEqual(answer, {"code": 200})  # after conn-1 acknowledged the kick
            deadline = time.monotonic() + 5
            while not kicked and time.monotonic() < deadline:
                await deferLater(reactor, 0.01, lambda: None)
            self.assertEqual(kicked, ["bye"])
            # alice's session is gone everywhere: the uid may log in on conn-2 now
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                answer = await again.request(bind, {"uid": "alice"})
                if answer["code"] == 200:
                    break
                await deferLater(reactor, 0.02, lambda: None)
            self.assertEqual(answer, {"code": 200, "uid": "alice"})

            # a graceful stop (drain) takes conn-2's entries out at once
            await two.stopService()
            self.assertEqual(await one.cluster.get_status_by_uids(["alice"]), {"alice": False})

        return ensureDeferred(run())
