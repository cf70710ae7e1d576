# -*- test-case-name: tests.client -*-
"""The raw TCP transport of a client: the package stream straight on the socket."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from .link import LinkOwner, _Link


class PomeloClientProtocol(Protocol):
    """The raw TCP transport of a L{PomeloClient}: the package stream straight on the socket."""

    def __init__(self, client: LinkOwner) -> None:
        self._client = client
        self._link: _Link | None = None

    def connectionMade(self) -> None:
        setTcpNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setTcpNoDelay is not None:
            with suppress(OSError, NotImplementedError):
                setTcpNoDelay(True)
        self._link = self._client._linkMade(self)
        if self._link is not None:
            self._link.open()

    def dataReceived(self, data: bytes) -> None:
        link = self._link
        if link is not None:
            link.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.connectionLost(reason)

    def writePackages(self, packages: list[bytes]) -> None:
        self.transport.writeSequence(packages)  # type: ignore[union-attr]

    def loseConnection(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def abortConnection(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]


class _TCPFactory(Factory[PomeloClientProtocol]):
    def __init__(self, client: LinkOwner) -> None:
        self.client = client

    def buildProtocol(self, addr: Any) -> PomeloClientProtocol:
        return PomeloClientProtocol(self.client)


__all__ = [
    "PomeloClientProtocol",
]
