"""Shared pieces of the tests that run a real connector, or other processes (node, Chromium)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString
from twisted.python.failure import Failure

from pomelo_twisted.demo import make_app
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import PomeloConnectorFactory


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


class DemoServerMixin:
    """For a trial C{TestCase}: the demo app served on a free loopback port, torn down after."""

    connector: Connector
    factory: TrackingFactory
    port: Any
    portNumber: int

    def startDemoServer(self) -> defer.Deferred[None]:
        """Listen; sets C{connector}, C{factory}, C{port} and C{portNumber}."""
        self.connector = Connector(make_app(), reactor, ConnectorConfig())
        self.factory = TrackingFactory(self.connector)
        d = serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(self.factory)

        def listening(port: Any) -> None:
            self.port = port
            self.portNumber = port.getHost().port
            self.addCleanup(self._stopServer)  # type: ignore[attr-defined]

        return d.addCallback(listening)

    @defer.inlineCallbacks
    def _stopServer(self) -> Any:
        """Stop listening, and abort any connection still open (only after a failure)."""
        yield self.port.stopListening()
        pending = []
        for proto, lost in self.factory.connections:
            if not lost.called:
                transport = proto.transport
                if transport is not None:
                    transport.abortConnection()
                pending.append(lost)
        if pending:
            yield defer.DeferredList(pending)


def decode_output(data: bytes) -> str:
    """A child process's output as text, for failure messages."""
    return data.decode("utf-8", "replace")


def json_result(stdout: bytes) -> dict[str, Any] | None:
    """A client script's JSON result: the last non-empty line of its output."""
    lines = [line for line in decode_output(stdout).splitlines() if line.strip()]
    if not lines:
        return None
    try:
        result = json.loads(lines[-1])
    except ValueError:
        return None
    return result if isinstance(result, dict) else None


def run_python(code: str) -> subprocess.CompletedProcess[bytes]:
    """Run C{code} in a fresh interpreter with this one's import path (e.g. to check that
    something never imports the global reactor)."""
    env_path = ":".join(p for p in sys.path if p)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env={"PYTHONPATH": env_path}, timeout=60
    )
