"""The operator's view of cluster mode through ``twistd pomelo-connector --redis --metrics``:
the cluster metrics on a real scrape, /healthz following Redis, the new options."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody

from pomelo_twisted.client import PomeloClient
from pomelo_twisted.ops.cluster import ClusteredService
from tests.support.cluster import start_service
from tests.support.options import tap_options as parse
from tests.support.processes import free_port
from tests.support.redis import RedisTestCase

ROUTE = "connector.entryHandler."


def sample(text: str, name: str) -> float | None:
    """The value of the sample line C{name} (with its labels) in an exposition, or None."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


class OptionsTests(SynchronousTestCase):
    def test_cluster_flags_need_redis(self) -> None:
        for flag in ("--cluster-mixed-versions", "--healthz-requires-redis"):
            error = self.assertRaises(usage.UsageError, parse, flag)
            self.assertIn(f"{flag} needs --redis", str(error))
        options = parse("--redis", "redis://h", "--cluster-mixed-versions")
        self.assertTrue(options["cluster-mixed-versions"])


class OperatorViewTests(RedisTestCase):
    timeout = 40

    def setUp(self) -> None:
        super().setUp()
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    async def server(self, server_id: str, *args: str) -> tuple[ClusteredService, int, int]:
        metrics = free_port()
        service, port = await start_service(
            self,
            self.redis.url,
            "ops",
            server_id,
            "--metrics",
            f"tcp:{metrics}:interface=127.0.0.1",
            *args,
        )
        return service, port, metrics

    async def get(self, port: int, path: str) -> tuple[int, str]:
        agent = Agent(reactor, pool=self.pool)
        response = await agent.request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
        body = await readBody(response)
        return response.code, body.decode()

    async def wait_for(self, port: int, path: str, check: Any, what: str) -> tuple[int, str]:
        deadline = time.monotonic() + 10
        while True:
            code, text = await self.get(port, path)
            if check(code, text):
                return code, text
            if time.monotonic() > deadline:
                self.fail(f"{what}: last answer {code} {text[:2000]!r}")
            await deferLater(reactor, 0.05, lambda: None)

    def test_metrics_and_healthz(self) -> Deferred[None]:
        async def run() -> None:
            _, port1, metrics1 = await self.server("conn-1")
            _, port2, metrics2 = await self.server("conn-2", "--healthz-requires-redis")
            alice = PomeloClient(reactor, request_timeout=5, handshake_timeout=5)
            await alice.connect(f"tcp:host=127.0.0.1:port={port1}")
            self.addCleanup(alice.close)
            bob = PomeloClient(reactor, request_timeout=5, handshake_timeout=5)
            await bob.connect(f"tcp:host=127.0.0.1:port={port2}")
            self.addCleanup(bob.close)
            await alice.request(ROUTE + "bind", {"uid": "alice"})
            answer = await bob.request(ROUTE + "kick", {"uid": "alice", "reason": "bye"})
            self.assertEqual(answer, {"code": 200})
            await bob.request(ROUTE + "broadcast", {"hi": 1})

            _, text = await self.wait_for(
                metrics2,
                "/metrics",
                lambda c, t: sample(t, "pomelo_cluster_nodes") == 2,
                "two nodes seen",
            )
            self.assertEqual(sample(text, "pomelo_cluster_redis_up"), 1)
            self.assertEqual(sample(text, 'pomelo_cluster_published_total{kind="kick"}'), 1)
            self.assertEqual(sample(text, 'pomelo_cluster_received_total{kind="ack"}'), 1)
            self.assertEqual(sample(text, "pomelo_cluster_kick_seconds_count"), 1)
            self.assertEqual(sample(text, 'pomelo_cluster_published_total{kind="broadcast"}'), 1)
            self.assertGreater(sample(text, 'pomelo_cluster_published_total{kind="probe"}'), 0)
            for name in (
                "undelivered",
                "dropped",
                "kick_timeouts",
                "subscriber_restarts",
                "resyncs",
                "redis_resets",
            ):
                self.assertEqual(sample(text, f"pomelo_cluster_{name}_total"), 0, name)
            _, text = await self.get(metrics1, "/metrics")
            self.assertEqual(sample(text, 'pomelo_cluster_received_total{kind="kick"}'), 1)
            self.assertEqual(sample(text, 'pomelo_cluster_received_total{kind="broadcast"}'), 1)
            self.assertEqual(await self.get(metrics1, "/healthz"), (200, "ok\ncluster: up\n"))
            self.assertEqual(await self.get(metrics2, "/healthz"), (200, "ok\ncluster: up\n"))

            self.redis.kill()
            # by default the process still serves its own clients: 200, the state on line 2
            await self.wait_for(
                metrics1, "/healthz", lambda c, t: c == 200 and "cluster: down" in t, "down"
            )
            _, text = await self.wait_for(
                metrics2, "/healthz", lambda c, t: c == 503, "503 when required"
            )
            self.assertIn("cluster: down", text)
            _, text = await self.get(metrics1, "/metrics")
            self.assertEqual(sample(text, "pomelo_cluster_redis_up"), 0)

            self.redis.start()  # empty
            await self.wait_for(metrics2, "/healthz", lambda c, t: c == 200, "back up")
            _, text = await self.wait_for(
                metrics1,
                "/metrics",
                lambda c, t: sample(t, "pomelo_cluster_redis_up") == 1,
                "up again",
            )
            self.assertEqual(sample(text, "pomelo_cluster_resyncs_total"), 1)
            self.assertEqual(sample(text, "pomelo_cluster_redis_resets_total"), 1)

        return ensureDeferred(run())
