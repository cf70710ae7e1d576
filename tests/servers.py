"""Shared pieces of the tests that run a real connector for external clients (node, Chromium)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from pomelo_twisted.connector import Connector
from pomelo_twisted.hybrid import PomeloConnectorFactory


class TrackingFactory(PomeloConnectorFactory):
    """The connector's factory, remembering each connection so the test can clean up after it."""

    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        self.connections: list[tuple[Any, defer.Deferred[None]]] = []

    def buildProtocol(self, addr: Any) -> Any:
        proto = super().buildProtocol(addr)
        lost: defer.Deferred[None] = defer.Deferred()
        original = proto.connectionLost

        def connectionLost(reason: Failure) -> None:
            try:
                original(reason)
            finally:
                if not lost.called:
                    lost.callback(None)

        proto.connectionLost = connectionLost  # type: ignore[method-assign,assignment]
        self.connections.append((proto, lost))
        return proto
