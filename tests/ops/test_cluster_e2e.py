"""The issue's "done when": real ``twistd pomelo-connector --redis`` processes act as one
server for the official JavaScript client libraries over TCP and WebSocket, on two ports and
on one ``reuseport:`` port. A uid bound on one process is kicked from the other and reached by
broadcasts from the other (tests/interop/cluster_client.js drives the clients).

Needs ``node`` and ``npm install`` in tests/interop, as tests/test_interop.py does."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.processes import Twistd, can_connect, free_port, wait_until
from tests.support.redis import start_redis

INTEROP_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "interop")
CLIENT = os.path.join(INTEROP_DIR, "cluster_client.js")


def metric(text: str, name: str) -> float:
    """The sum of every sample of C{name} (whatever its labels) in an exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            total += float(line.split()[-1])
    return total


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


class ClusterEndToEndTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise SkipTest("node is not installed: the end-to-end test drives the official JS libs")
        for name in ("pomelo-protocol", "pomelo-protobuf", "ws"):
            if not os.path.isdir(os.path.join(INTEROP_DIR, "node_modules", name)):
                self.fail(f"tests/interop/node_modules lacks {name}: run `npm install` there")
        self.node = node
        self.redis = start_redis(self)

    def connector(self, server_id: str, listen: str, metrics: int) -> Twistd:
        return Twistd(
            self,
            "--listen",
            listen,
            "--metrics",
            f"tcp:{metrics}:interface=127.0.0.1",
            "--redis",
            self.redis.url,
            "--redis-prefix",
            "e2e",
            "--server-id",
            server_id,
            "--cluster-heartbeat",
            "0.5",
        )

    async def clients(self, count: int, *endpoints: str) -> dict[str, Any]:
        out, err, code = await getProcessOutputAndValue(
            self.node,
            [CLIENT, "u", str(count), *endpoints],
            env=dict(os.environ),
            path=INTEROP_DIR,
            reactor=reactor,
        )
        try:
            result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.fail(f"cluster_client.js: exit {code}\nstdout: {out!r}\nstderr: {err!r}")
        self.assertTrue(result["ok"], f"{result}\nstderr: {err.decode(errors='replace')}")
        self.assertEqual(code, 0)
        return result

    async def stop(self, *processes: Twistd) -> None:
        for process in processes:
            self.assertIn(await process.stop(), (0, -15), process.output)
            self.assertNotIn("Traceback", process.output)

    def test_two_ports(self) -> Deferred[None]:
        async def run() -> None:
            port_a, port_b, metrics_a, metrics_b = (free_port() for _ in range(4))
            a = self.connector("conn-a", f"tcp:{port_a}:interface=127.0.0.1", metrics_a)
            b = self.connector("conn-b", f"tcp:{port_b}:interface=127.0.0.1", metrics_b)
            await wait_until(lambda: can_connect(port_a) and can_connect(port_b), 30, "listening")
            # u0 (tcp) and u2 (ws) on a; u1 (ws) and u3 (tcp) on b; u0 kicks u1, u2, u3
            result = await self.clients(
                4,
                f"127.0.0.1:{port_a}:tcp",
                f"127.0.0.1:{port_b}:ws",
                f"127.0.0.1:{port_a}:ws",
                f"127.0.0.1:{port_b}:tcp",
            )
            self.assertEqual(result["steps"]["kick"]["kicked"], 3)
            text_a, text_b = scrape(metrics_a), scrape(metrics_b)
            # the broadcasts of b's clients reached a's through Redis, and the other way round
            self.assertEqual(metric(text_a, 'pomelo_cluster_received_total{kind="broadcast"}'), 2)
            self.assertEqual(metric(text_b, 'pomelo_cluster_received_total{kind="broadcast"}'), 2)
            # u1 and u3, bound on b, were kicked from a, and b acknowledged
            self.assertEqual(metric(text_b, 'pomelo_cluster_received_total{kind="kick"}'), 2)
            self.assertEqual(metric(text_a, "pomelo_cluster_kick_seconds_count"), 2)
            await self.stop(a, b)

        return ensureDeferred(run())

    def test_one_reuseport_port(self) -> Deferred[None]:
        async def run() -> None:
            port, metrics_a, metrics_b = free_port(), free_port(), free_port()
            listen = f"reuseport:{port}:interface=127.0.0.1"
            a = self.connector("conn-a", listen, metrics_a)
            b = self.connector("conn-b", listen, metrics_b)
            ready = []

            def both_up() -> bool:
                ready[:] = []
                for m in (metrics_a, metrics_b):
                    try:
                        ready.append(metric(scrape(m), "pomelo_cluster_redis_up"))
                    except OSError:
                        return False
                return ready == [1, 1]

            await wait_until(both_up, 30, "both processes joined and listen")
            count = 16  # the kernel spreads them: all on one process has odds of 2 in 65536
            await self.clients(count, f"127.0.0.1:{port}:tcp", f"127.0.0.1:{port}:ws")
            text_a, text_b = scrape(metrics_a), scrape(metrics_b)
            served = [metric(t, "pomelo_connections_total") for t in (text_a, text_b)]
            self.assertEqual(sum(served), count)
            self.assertTrue(all(served), f"connections per process: {served}")
            # each process got the other's clients' broadcasts through Redis
            for text, mine in zip((text_a, text_b), served, strict=True):
                self.assertEqual(
                    metric(text, 'pomelo_cluster_received_total{kind="broadcast"}'), count - mine
                )
            # the kicker's process kicked the other's clients through it
            kicks = [
                metric(t, 'pomelo_cluster_received_total{kind="kick"}') for t in (text_a, text_b)
            ]
            self.assertEqual(sorted(kicks)[0], 0)
            self.assertIn(sorted(kicks)[1], served)
            await self.stop(a, b)

        return ensureDeferred(run())
