"""A real, throw-away C{redis-server} for the cluster tests.

Started on a free loopback port without persistence in a temporary directory, killed in the
test's cleanup. A missing redis-server is a failure, never a skip: CI's ``.ci/run`` installs it
(``apt-get install redis-server``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

__all__ = ["RedisServer", "start_redis"]

MISSING = (
    "redis-server is not installed: the cluster tests need a real one "
    "(.ci/run installs it: apt-get install redis-server)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process, which can be killed and started again on the same port."""

    def __init__(self, executable: str, directory: str) -> None:
        self.executable = executable
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait (at most C{timeout} seconds) until it answers PING."""
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self.ping():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer PING within {timeout} s")
            time.sleep(0.02)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """Send one command (inline form) and return the raw first reply chunk: for checks."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(" ".join(args).encode() + b"\r\n")
            return s.recv(65536)

    def kill(self) -> None:
        """SIGKILL it, as a crash would, and wait until it is gone."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)


def start_redis(case: SynchronousTestCase) -> RedisServer:
    """A running redis-server for C{case}, killed (and its directory removed) in cleanup."""
    executable = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if executable is None:
        case.fail(MISSING)
    directory = tempfile.mkdtemp(prefix="pomelo-redis-")
    case.addCleanup(shutil.rmtree, directory, True)
    server = RedisServer(executable, directory)
    case.addCleanup(server.kill)
    server.start()
    return server
