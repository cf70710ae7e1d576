"""Cluster mode in real ``twistd`` processes: a duplicate ``--server-id`` is refused with exit
status 1 and one clear line, and never listens meanwhile."""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred

from tests.support.processes import Twistd, can_connect, free_port, wait_until
from tests.support.redis import RedisTestCase


class DuplicateServerIdTests(RedisTestCase):
    timeout = 90

    def args(self, port: int) -> list[str]:
        return [
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--redis",
            self.redis.url,
            "--redis-prefix",
            "dup",
            "--server-id",
            "conn-dup",
            "--cluster-heartbeat",
            "0.2",
        ]

    def test_refused_with_status_1(self) -> Deferred[None]:
        async def run() -> None:
            port1, port2 = free_port(), free_port()
            first = Twistd(self, *self.args(port1))
            await wait_until(lambda: can_connect(port1), 30, "the first process listens")
            second = Twistd(self, *self.args(port2))
            listened = []

            def watch() -> bool:
                if can_connect(port2):
                    listened.append(True)
                return second.returncode is not None

            await wait_until(watch, 30, "the second process exits")
            self.assertEqual(second.returncode, 1, second.output)
            self.assertEqual(listened, [], "the refused process listened during the check")
            lines = [line for line in second.output.splitlines() if "already used" in line]
            self.assertEqual(len(lines), 1, second.output)
            self.assertIn("server id 'conn-dup' is already used by the live node", lines[0])
            self.assertIn("--server-id", lines[0])
            self.assertNotIn("Traceback", second.output)
            # the first is untouched
            self.assertTrue(can_connect(port1))
            # twistd ends a SIGTERM'd process by that signal, after the graceful stop
            self.assertIn(await first.stop(), (0, -15), first.output)
            self.assertIn("Server Shut Down", first.output)

        return ensureDeferred(run())
