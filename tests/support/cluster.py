"""In-memory sessions for the cluster tests: a fake connection that records pushes and kicks."""

from __future__ import annotations

from typing import Any

import orjson
from twisted.internet.address import IPv4Address
from zope.interface import implementer

from pomelo_twisted.protocol.message import decode_message
from pomelo_twisted.protocol.package import decode_packages
from pomelo_twisted.services.interfaces import ISessionConnection
from pomelo_twisted.services.session import Session, SessionService


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

    def pushes(self) -> list[tuple[str, Any]]:
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
