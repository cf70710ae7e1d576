"""In-memory sessions for the cluster tests: a fake connection that records pushes and kicks,
a node factory, and a bounded real-time wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from pomelo_twisted.ops.tap import makeService
from pomelo_twisted.protocol.codec import ServerCodec
from pomelo_twisted.protocol.message import decode_message
from pomelo_twisted.protocol.package import decode_packages
from pomelo_twisted.services.channel import ChannelService
from pomelo_twisted.services.interfaces import ISessionConnection
from pomelo_twisted.services.session import Session, SessionService
from tests.support.options import tap_options
from tests.support.processes import free_port

if TYPE_CHECKING:
    from pomelo_twisted.cluster.node import RedisCluster
    from pomelo_twisted.ops.cluster import ClusteredService


@implementer(ISessionConnection)
class FakeConnection:
    """Records every package and kick; a kick closes the session at once, as the socket does."""

    def __init__(self, service: SessionService) -> None:
        self.service = service
        self.packages: list[bytes] = []
        self.kicks: list[str | None] = []
        self.session: Session | None = None

    def sendPackage(self, package: bytes) -> bool:
        if self.session is None:
            return False
        self.packages.append(package)
        return True

    def kick(self, reason: str | None) -> None:
        self.kicks.append(reason)
        self.close(reason)

    def close(self, reason: Any = "closed") -> None:
        session, self.session = self.session, None
        if session is not None:
            self.service.remove(session.id, reason)

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40000)

    def pushes(self) -> list[tuple[str | int | None, Any]]:
        """The C{(route, body)} of every push received (services without a dictionary)."""
        out = []
        for package in self.packages:
            for pkg in decode_packages(package):
                message = decode_message(pkg.body)
                out.append((message.route, orjson.loads(message.body)))
        return out


def connect(service: SessionService) -> tuple[Session, FakeConnection]:
    """Admit a fake connection into C{service}; return its session and connection."""
    conn = FakeConnection(service)
    session = conn.session = service.create(conn)
    return session, conn


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> None:
    """Poll C{predicate} every 10 ms in real time; fail after C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {what or predicate}")
        await deferLater(reactor, 0.01, lambda: None)


async def start_node(
    case: SynchronousTestCase,
    url: str,
    server_id: str,
    *,
    heartbeat: float = 0.2,
    timeout: float = 1.0,
    start: bool = True,
    codec: ServerCodec | None = None,
    **options: Any,
) -> RedisCluster:
    """A started L{RedisCluster} with prefix C{t} and in-memory sessions, stopped in cleanup."""
    from pomelo_twisted.cluster.node import RedisCluster

    sessions = SessionService(codec or ServerCodec(None, None), server_id)
    node = RedisCluster(
        sessions,
        ChannelService(sessions),
        url,
        reactor,
        prefix="t",
        heartbeat=heartbeat,
        timeout=timeout,
        max_retry_delay=0.3,
        **options,
    )
    node.startService()
    case.addCleanup(lambda: node.stopService() if node.running else None)
    if start:
        await node.started
    return node


async def start_service(
    case: SynchronousTestCase, url: str, prefix: str, server_id: str, *args: str
) -> tuple[ClusteredService, int]:
    """A started clustered connector service in this process on a free port, stopped in cleanup;
    C{args} are more command-line options. Returns the service and its listening port."""
    from pomelo_twisted.ops.cluster import ClusteredService

    port = free_port()
    options = tap_options(
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--redis",
        url,
        "--redis-prefix",
        prefix,
        "--server-id",
        server_id,
        "--cluster-heartbeat",
        "0.2",
        "--cluster-timeout",
        "1",
        *args,
    )
    service = makeService(options)
    assert isinstance(service, ClusteredService)
    # Two services in one test process: the process's signal handlers are not theirs to take.
    service.connector_service.shutdown_signals = False  # type: ignore[attr-defined]
    service.startService()
    case.addCleanup(lambda: service.stopService() if service.running else None)
    await service.cluster.started
    return service, port
