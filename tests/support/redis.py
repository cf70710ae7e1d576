"""A real, throw-away C{redis-server} for the cluster tests.

Started on a free loopback port without persistence in a temporary directory, killed in the
test's cleanup. A missing redis-server is installed on first use (Debian's package, when the
tests run as root with apt-get, as CI and this project's machines do), so the README's test
command needs no step of its own. If it cannot be had, the test fails under CI (``.ci/run``
installs it first) and elsewhere skips, saying how to get it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase, TestCase

from .tools import Unavailable, unavailable

__all__ = ["RedisServer", "start_redis"]

MISSING = (
    "redis-server is not installed and could not be installed here: the cluster tests need "
    "a real one (as root: apt-get install redis-server)"
)

#: The longest the first-use install may take, in seconds.
INSTALL_TIMEOUT = 300.0
_LOCK = os.path.join(tempfile.gettempdir(), "pomelo-twisted-redis-install.lock")
#: Why the install failed, once tried in this process (no retry per test).
_failed: list[str] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process, which can be killed and started again on the same port."""

    def __init__(
        self,
        executable: str,
        directory: str,
        tls: tuple[str, str] | None = None,
        unix: bool = False,
    ) -> None:
        """@param tls: C{(key, certificate)} PEM files: also serve TLS, on L{tls_port}.
        @param unix: also serve on a UNIX socket, L{unix_path}."""
        self.executable = executable
        self.directory = directory
        self.port = _free_port()
        self.tls = tls
        self.tls_port = _free_port() if tls else None
        self.unix_path = os.path.join(directory, "redis.sock") if unix else None
        #: Redis's own log, to check what it did (e.g. closed a client over its limits).
        self.log_path = os.path.join(directory, "redis.log")
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
                "--logfile",
                self.log_path,
                *self._tls_args(),
                *(["--unixsocket", self.unix_path] if self.unix_path else []),
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

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        key, certificate = self.tls
        return [
            "--tls-port",
            str(self.tls_port),
            "--tls-key-file",
            key,
            "--tls-cert-file",
            certificate,
            "--tls-ca-cert-file",
            certificate,
            "--tls-auth-clients",
            "no",
        ]

    def log(self) -> str:
        """Everything Redis has logged so far (all its runs on this directory)."""
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

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


def _find() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


def redis_server() -> str:
    """The path of redis-server, installed on first use if it can be; L{Unavailable} if not."""
    executable = _find()
    if executable is not None:
        return executable
    if _failed:
        raise Unavailable(_failed[0])
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        _failed.append(MISSING)
        raise Unavailable(MISSING)
    # One install at a time: trial's -j workers wait for the first one's.
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        executable = _find()
        if executable is None:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for command in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "redis-server"]):
                try:
                    subprocess.run(command, env=env, capture_output=True, timeout=INSTALL_TIMEOUT)
                except (OSError, subprocess.SubprocessError):
                    break
            executable = _find()
    if executable is None:
        _failed.append(MISSING)
        raise Unavailable(MISSING)
    return executable


def start_redis(
    case: SynchronousTestCase, tls: tuple[str, str] | None = None, unix: bool = False
) -> RedisServer:
    """A running redis-server for C{case}, killed (and its directory removed) in cleanup.

    @param tls: C{(key, certificate)}: also serve TLS (see L{RedisServer.tls_port}).
    @param unix: also serve on a UNIX socket (see L{RedisServer.unix_path}).
    """
    try:
        executable = redis_server()
    except Unavailable as e:
        unavailable(case, str(e))
    directory = tempfile.mkdtemp(prefix="pomelo-redis-")
    case.addCleanup(shutil.rmtree, directory, True)
    server = RedisServer(executable, directory, tls, unix)
    case.addCleanup(server.kill)
    server.start()
    return server


class RedisTestCase(TestCase):
    """A trial case with a redis-server of its own for each test (L{redis}), killed after."""

    timeout = 30
    redis: RedisServer

    def setUp(self) -> None:
        self.redis = start_redis(self)
