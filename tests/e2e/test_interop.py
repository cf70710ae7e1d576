"""
Interop tests: the connector against the official Pomelo JavaScript libraries.

C{tests/interop/client.js} is a client built, like Pomelo's JS WebSocket client, from the npm
packages C{pomelo-protocol} 0.1.6 (packages and messages), C{pomelo-protobuf} 0.4.0 (bodies) and
C{ws}. It connects over raw TCP or WebSocket, handshakes, answers heartbeats as the JS client does,
runs every route of the demo app (see the demo's C{ROUTES.md}) and finally kicks itself. It prints
one line of JSON with a result per step and exits 0 only if every step passed.

The connector runs in this process on the real reactor; each client is a C{node} child process.
Needs C{node} on C{PATH}; the first test runs C{npm install} in C{tests/interop} when its packages
are missing (L{tests.support.npm}). Without C{node}, or C{npm} to install them, the tests are
skipped, except under CI (C{CI} set), where they fail instead.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support.npm import node, node_packages
from tests.support.servers import DemoServerMixin, decode_output, json_result
from tests.support.tools import Unavailable, unavailable

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTEROP_DIR = os.path.join(HERE, "interop")
CLIENT_JS = os.path.join(INTEROP_DIR, "client.js")
NODE_PACKAGES = ("pomelo-protocol", "pomelo-protobuf", "ws")

#: How long a listening client may take to say it is ready, and to finish.
LISTENER_READY_TIMEOUT = 10.0
LISTENER_EXIT_TIMEOUT = 15.0


class _Listener(ProcessProtocol):
    """A C{client.js ... listen} child: C{ready} fires on its READY line, C{ended} on its exit."""

    def __init__(self) -> None:
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[tuple[bytes, bytes, int | None]] = defer.Deferred()
        self.out = b""
        self.err = b""

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data
        if not self.ready.called and b"READY\n" in self.err:
            self.ready.callback(None)

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        if not self.ready.called:
            self.ready.errback(
                RuntimeError(
                    "the listening client exited before it was ready:\n"
                    f"stdout: {decode_output(self.out)}\nstderr: {decode_output(self.err)}"
                )
            )
        self.ended.callback((self.out, self.err, code))


class InteropTests(DemoServerMixin, TestCase):
    """The demo app, served by the connector, driven by Node clients built on the npm libraries."""

    timeout = 30

    def setUp(self) -> Any:
        try:
            self.node = node()
            node_packages(INTEROP_DIR, NODE_PACKAGES)
        except Unavailable as e:
            unavailable(
                self,
                f"{e} (the interop tests drive the connector with the official Pomelo "
                "JavaScript libraries under Node.js)",
            )
        self.env = dict(os.environ)
        return self.startDemoServer()

    def _args(self, transport: str, *extra: str) -> list[str]:
        return [CLIENT_JS, "127.0.0.1", str(self.portNumber), transport, *extra]

    def runClient(self, transport: str) -> Any:
        """Run C{client.js} over C{transport} to the end; fire with its result, or fail."""
        d = getProcessOutputAndValue(
            self.node, self._args(transport), env=self.env, path=INTEROP_DIR, reactor=reactor
        )

        def failed(reason: Failure) -> Any:
            # getProcessOutputAndValue errbacks with (out, err, signal) when the process is killed.
            if isinstance(reason.value, tuple) and len(reason.value) == 3:
                out, err, signal = reason.value
                return out, err, f"signal {signal}"
            return reason

        d.addErrback(failed)
        d.addCallback(lambda res: self.checkResult(f"{transport} client", *res))
        return d

    def checkResult(
        self, what: str, out: bytes, err: bytes, code: int | str | None
    ) -> dict[str, Any]:
        """Assert that a client exited 0 with C{"ok": true}; show everything it printed if not."""
        result = json_result(out)
        if code != 0 or result is None or result.get("ok") is not True:
            shown = (
                json.dumps(result, indent=2, ensure_ascii=False)
                if result is not None
                else decode_output(out)
            )
            self.fail(
                f"{what} (port {self.portNumber}) failed, exit status {code}.\n"
                f"result:\n{shown}\nstderr:\n{decode_output(err)}"
            )
        return result

    @defer.inlineCallbacks
    def assertConnectionsClosed(self) -> Any:
        """Every client connection has gone on the server side too (the kick closed it)."""
        yield self.connector.wait_closed(5.0)
        self.assertEqual(
            self.connector.sockets,
            set(),
            "the server still has connections open after every client has finished",
        )

    @defer.inlineCallbacks
    def startListener(self, transport: str, expectFrom: str) -> Any:
        """Start a client that waits for one C{onBroadcast} push sent by a C{expectFrom} client."""
        listener = _Listener()
        process = reactor.spawnProcess(
            listener,
            self.node,
            [self.node, *self._args(transport, "listen", expectFrom)],
            env=self.env,
            path=INTEROP_DIR,
        )

        def kill() -> None:
            with contextlib.suppress(ProcessExitedAlready):
                process.signalProcess("KILL")

        killer = reactor.callLater(LISTENER_EXIT_TIMEOUT, kill)

        def ended(result: Any) -> Any:
            if killer.active():
                killer.cancel()
            return result

        listener.ended.addBoth(ended)
        self.addCleanup(self._reap, process, listener)
        ready = listener.ready
        timer = reactor.callLater(LISTENER_READY_TIMEOUT, ready.cancel)
        try:
            yield ready
        except defer.CancelledError:
            self.fail(
                f"the {transport} listening client was not ready after "
                f"{LISTENER_READY_TIMEOUT} s:\n"
                f"stdout: {decode_output(listener.out)}\nstderr: {decode_output(listener.err)}"
            )
        finally:
            if timer.active():
                timer.cancel()
        return listener

    def _reap(self, process: Any, listener: _Listener) -> defer.Deferred[Any]:
        """Kill a listening client that is still running at the end of a test, and wait for it."""
        if not listener.ended.called:
            with contextlib.suppress(ProcessExitedAlready):
                process.signalProcess("KILL")
        return listener.ended

    # The tests -----------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_tcp(self) -> Any:
        """A raw TCP client runs every demo route."""
        yield self.runClient("tcp")
        yield self.assertConnectionsClosed()

    @defer.inlineCallbacks
    def test_websocket(self) -> Any:
        """A WebSocket client runs every demo route."""
        yield self.runClient("ws")
        yield self.assertConnectionsClosed()

    @defer.inlineCallbacks
    def test_tcp_and_websocket_together(self) -> Any:
        """A TCP and a WebSocket client run every route at the same time, on the same port.

        Each one also receives the other's broadcast, which it must ignore.
        """
        # Wait for both, even when one fails, so that no child process outlives the test.
        outcomes = yield defer.DeferredList(
            [self.runClient("tcp"), self.runClient("ws")], consumeErrors=True
        )
        failures = [value for succeeded, value in outcomes if not succeeded]
        if len(failures) == 1:
            failures[0].raiseException()
        if failures:
            self.fail("\n\n".join(str(f.value) for f in failures))
        self.assertEqual([value["transport"] for _, value in outcomes], ["tcp", "ws"])
        yield self.assertConnectionsClosed()

    @defer.inlineCallbacks
    def _broadcastAcross(self, sender: str, receiver: str) -> Any:
        listener = yield self.startListener(receiver, sender)
        yield self.runClient(sender)
        out, err, code = yield listener.ended
        result = self.checkResult(f"{receiver} listening client", out, err, code)
        self.assertEqual(result["steps"]["listen"]["body"]["from"], sender)
        yield self.assertConnectionsClosed()

    def test_broadcast_tcp_to_websocket(self) -> defer.Deferred[Any]:
        """A broadcast requested by a TCP client reaches a WebSocket client."""
        return self._broadcastAcross("tcp", "ws")

    def test_broadcast_websocket_to_tcp(self) -> defer.Deferred[Any]:
        """A broadcast requested by a WebSocket client reaches a TCP client."""
        return self._broadcastAcross("ws", "tcp")
