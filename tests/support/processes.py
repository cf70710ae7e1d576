"""Real ``twistd pomelo-connector`` processes for the cluster's end-to-end tests, run from the
checkout (its ``twisted/plugins`` and ``pomelo_twisted``), each bounded and killed in cleanup.

Every wait polls with a deadline, in real time, without blocking the reactor."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

__all__ = [
    "ROOT",
    "Twistd",
    "can_connect",
    "free_port",
    "twistd_argv",
    "twistd_command",
    "wait_until",
]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def twistd_command(*args: str) -> list[str]:
    """The command line of ``twistd -n --pidfile= ARGS`` run by this Python (ARGS: twistd's
    own options, then the plugin and its options)."""
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        *args,
    ]


def twistd_argv(*args: str) -> list[str]:
    """The command line of ``twistd -n pomelo-connector ARGS`` run by this Python."""
    return twistd_command("pomelo-connector", *args)


def can_connect(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {what}")
        await deferLater(reactor, 0.02, lambda: None)


class Twistd:
    """One ``twistd -n pomelo-connector ARGS`` process; its output goes to a file."""

    def __init__(self, case: SynchronousTestCase, *args: str) -> None:
        self.output_path = tempfile.mktemp(prefix="pomelo-twistd-", suffix=".log")
        case.addCleanup(self._cleanup)
        self._file = open(self.output_path, "wb")  # noqa: SIM115 - closed in cleanup
        self.process = subprocess.Popen(
            twistd_argv(*args),
            cwd=ROOT,
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    @property
    def output(self) -> str:
        with open(self.output_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    async def wait_exit(self, timeout: float) -> int:
        await wait_until(lambda: self.process.poll() is not None, timeout, "twistd exited")
        return self.process.returncode

    async def stop(self, timeout: float = 15) -> int:
        """SIGTERM (a graceful drain), then wait for the exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout)

    async def kill(self, timeout: float = 10) -> int:
        """SIGKILL, as a crash would (no drain, no cleanup), then wait for the exit: -9."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        return await self.wait_exit(timeout)

    def _cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._file.close()
        os.unlink(self.output_path)
