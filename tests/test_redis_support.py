"""tests/support/redis.py gets redis-server on first use, or says plainly why it cannot."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import redis, tools


class RedisServerOnFirstUseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(redis, "_failed", [])
        self.patch(redis, "_LOCK", self.mktemp())
        self.bin = Path(self.mktemp()).resolve()
        self.bin.mkdir()
        self.log = self.bin / "apt.log"
        # Only our fake tools on PATH: no redis-server yet, an apt-get that "installs" one.
        self.patch(os, "environ", {**os.environ, "PATH": str(self.bin)})
        self.patch(redis, "_find", lambda: redis.shutil.which("redis-server"))

    def fake_apt(self, installs: bool) -> None:
        script = self.bin / "apt-get"
        target = self.bin / "redis-server"
        make = f'printf "#!/bin/sh\\n" > {target}; /bin/chmod +x {target}'
        script.write_text(
            "#!/bin/sh\n"
            f'echo "$@" >> {self.log}\n'
            + (f'[ "$1" = install ] && {{ {make}; }}\n' if installs else "")
            + "exit 0\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def test_installed_with_apt_once(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("the first-use install runs only as root")
        self.fake_apt(installs=True)
        self.assertEqual(redis.redis_server(), str(self.bin / "redis-server"))
        self.assertEqual(
            self.log.read_text().split("\n")[:2], ["update -qq", "install -y -qq redis-server"]
        )
        redis.redis_server()  # found now: no second install
        self.assertEqual(len(self.log.read_text().strip().split("\n")), 2)

    def test_install_fails(self) -> None:
        self.fake_apt(installs=False)
        with self.assertRaises(tools.Unavailable) as caught:
            redis.redis_server()
        self.assertIn("apt-get install redis-server", str(caught.exception))
        with self.assertRaises(tools.Unavailable):  # not tried again in this process
            redis.redis_server()

    def test_no_apt(self) -> None:
        with self.assertRaises(tools.Unavailable):
            redis.redis_server()
        self.assertFalse(self.log.exists())
