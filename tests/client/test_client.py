"""Tests for L{pomelo_twisted.client}: the Twisted client, in memory and end to end.

Two layers, as in the rest of the suite (the sans-IO core is tested in
L{tests.protocol.test_client}):

  - in memory: L{PomeloClient} over iosim and a C{task.Clock}, against this package's server
    with the demo app (L{MemoryServerTests}) or a scripted server that misbehaves on purpose
    (L{ScriptedServerTests}, L{ReconnectTests});
  - real loopback sockets against the demo app, over TCP and WebSocket (L{EndToEndTCPTests},
    L{EndToEndWebSocketTests}): every route of the demo contract, broadcast, kick, the cache,
    and reconnection. Each waits on Deferreds only, bounded by C{timeout}.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    fail,
    inlineCallbacks,
    succeed,
)
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from pomelo_twisted import client as client_module
from pomelo_twisted.client import (
    CLIENT_TYPE,
    Backoff,
    ConnectionClosed,
    HandshakeFailed,
    HandshakeTimeout,
    HeartbeatTimeout,
    Kicked,
    NotConnected,
    PomeloClient,
    RequestTimeout,
)
from pomelo_twisted.client.websocket import PomeloClientWebSocketFactory
from pomelo_twisted.demo import make_app
from pomelo_twisted.protocol.errors import ProtobufError, ProtocolError
from pomelo_twisted.protocol.package import (
    PackageDecoder,
    PackageType,
    encode_package,
)
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import PomeloConnectorFactory
from tests.support.client import (
    ACK,
    BIND,
    BROADCAST,
    ECHO,
    ENTRY,
    HEARTBEAT,
    KICK,
    NOTIFY,
    PROTO,
    PROTO_VALUE,
    PUSH,
    answer_package,
    reference_answers,
)
from tests.support.servers import run_python

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


# --- in memory -------------------------------------------------------------------------------


class RecordingTransport(iosim.FakeTransport):
    """An iosim transport that keeps everything its protocol writes."""

    def __init__(self, protocol: Any, isServer: bool) -> None:
        super().__init__(protocol, isServer)
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)
        super().write(data)


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """Each connection goes to a new protocol of C{server_factory}, in memory (iosim).

    @ivar refuse: how many of the next attempts fail with C{ConnectionRefusedError}.
    """

    def __init__(self, clock: Clock, server_factory: IProtocolFactory) -> None:
        self.clock = clock
        self.server_factory = server_factory
        self.pumps: list[iosim.IOPump] = []
        self.servers: list[Any] = []
        self.client_transports: list[RecordingTransport] = []
        self.refuse = 0
        self.hold = False
        self.attempts = 0

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        self.attempts += 1
        if self.hold:  # a connection attempt that never completes (until cancelled)
            return Deferred()
        if self.refuse:
            self.refuse -= 1
            return fail(ConnectionRefusedError())
        client = factory.buildProtocol(PEER)
        server = self.server_factory.buildProtocol(PEER)
        client_io = RecordingTransport(client, isServer=False)
        self.client_transports.append(client_io)
        self.servers.append(server)
        pump = iosim.connect(
            server, iosim.makeFakeServer(server), client, client_io, greet=False, clock=self.clock
        )
        self.pumps.append(pump)
        return succeed(client)

    def flush(self) -> None:
        """Move bytes on every connection until none moves (a request on one connection
        may write to another)."""
        while any([pump.flush() for pump in self.pumps]):
            pass

    def advance(self, seconds: float, step: float = 0.25) -> None:
        """Let C{seconds} pass in small steps, moving bytes after each."""
        steps = round(seconds / step)
        for _ in range(steps):
            self.clock.advance(step)
            self.flush()


class Events:
    """Everything a client reports, in order."""

    def __init__(self, client: PomeloClient) -> None:
        self.log: list[tuple[Any, ...]] = []
        client.on_connect(lambda answer: self.log.append(("connect", answer)))
        client.on_kick(lambda reason: self.log.append(("kick", reason)))
        client.on_disconnect(lambda f: self.log.append(("disconnect", f.type)))
        client.on_reconnect(lambda n, delay: self.log.append(("reconnect", n, delay)))
        client.on_close(lambda f: self.log.append(("close", f.type)))

    def names(self) -> list[Any]:
        return [entry[0] for entry in self.log]


class MemoryHarness(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def demo_server(self, config: ConnectorConfig | None = None) -> MemoryEndpoint:
        self.connector = Connector(make_app(), self.clock, config or ConnectorConfig())
        return MemoryEndpoint(self.clock, PomeloConnectorFactory(self.connector))

    def connected(
        self, endpoint: MemoryEndpoint, transport: Literal["tcp", "ws"] = "tcp", **kwargs: Any
    ) -> PomeloClient:
        client = PomeloClient(self.clock, **kwargs)
        d = client.connect(endpoint, transport=transport)
        endpoint.flush()
        answer = self.successResultOf(d)
        self.assertEqual(answer["code"], 200)
        self.assertTrue(client.connected)
        return client

    def call(self, endpoint: MemoryEndpoint, client: PomeloClient, route: str, msg: Any) -> Any:
        d = client.request(route, msg)
        endpoint.flush()
        return self.successResultOf(d)


class MemoryServerTests(MemoryHarness):
    """The client and this package's server with the demo app, in memory."""

    def test_routes(self) -> None:
        for transport in ("tcp", "ws"):
            endpoint = self.demo_server()
            client = self.connected(endpoint, transport)
            self.assertEqual(client.heartbeat, 3)
            self.assertEqual(
                self.call(endpoint, client, ENTRY, None), {"code": 200, "msg": "game server is ok."}
            )
            self.assertEqual(self.call(endpoint, client, ECHO, [1, "x"]), [1, "x"])
            self.assertEqual(self.call(endpoint, client, PROTO, PROTO_VALUE), PROTO_VALUE)
            pushed: list[Any] = []
            client.on("onPush", pushed.append)
            self.assertEqual(self.call(endpoint, client, PUSH, {"n": 1}), {"code": 200})
            client.notify(NOTIFY, {"n": 2})  # its push finds no callback
            endpoint.flush()
            notified = client.next_push("onNotify")
            client.notify(NOTIFY, {"n": 3})
            endpoint.flush()
            self.assertEqual(pushed, [{"n": 1}])
            self.assertEqual(self.successResultOf(notified), {"n": 3})
            self.assertEqual(self.call(endpoint, client, "no.such.route", {}), {"code": 500})
            d = client.close()
            endpoint.flush()
            self.successResultOf(d)
            self.assertEqual(self.connector.sockets, set())

    def test_ack_then_heartbeats(self) -> None:
        """The ACK right after the answer; then a heartbeat every interval, so the server
        (which closes after twice the interval of silence) keeps the connection."""
        endpoint = self.demo_server()
        client = self.connected(endpoint)
        written = endpoint.client_transports[0].written
        self.assertEqual(json.loads(written[0][4:])["sys"]["type"], CLIENT_TYPE)
        self.assertEqual(written[1:], [ACK])
        endpoint.advance(20)
        self.assertEqual(written[2:], [HEARTBEAT] * 6)  # at 3, 6, ..., 18 s
        self.assertTrue(client.connected)
        self.assertEqual(len(self.connector.sockets), 1)

    def test_cache_reuse(self) -> None:
        """A second client with the same cache sends the versions; our server then leaves
        dict and protos out, and compression and protobuf still work."""
        endpoint = self.demo_server()
        cache: dict[str, Any] = {}
        first = self.connected(endpoint, cache=cache)
        assert first.answer is not None
        self.assertIn("dict", first.answer["sys"])
        self.assertIn("protos", first.answer["sys"])
        second = self.connected(endpoint, "ws", cache=cache)
        assert second.answer is not None
        self.assertEqual(
            second.answer, {"code": 200, "sys": {"heartbeat": 3, "useDict": True, "useProto": True}}
        )
        self.assertEqual(self.call(endpoint, second, PROTO, PROTO_VALUE), PROTO_VALUE)
        self.assertEqual(self.call(endpoint, second, ECHO, {"a": 1}), {"a": 1})
        # The reference server's own answer to the same request is the same.
        _, reference = reference_answers()
        self.assertEqual(second.answer, reference)

    def test_stale_cache(self) -> None:
        """A cached version the server no longer has: it sends the new ones, which replace
        the cache."""
        endpoint = self.demo_server()
        cache: dict[str, Any] = {
            "dict": {"version": "old", "routeToCode": {"x": 1}, "codeToRoute": {"1": "x"}},
            "protos": {"version": "old", "client": {}, "server": {}},
        }
        client = self.connected(endpoint, cache=cache)
        assert client.answer is not None
        self.assertIn("dict", client.answer["sys"])
        self.assertEqual(cache["dict"]["routeToCode"][ECHO], 3)
        self.assertNotEqual(cache["protos"]["version"], "old")

    def test_websocket_text_message(self) -> None:
        """A text frame breaks the protocol (Pomelo servers send binary): abort."""
        endpoint = self.demo_server()
        client = self.connected(endpoint, "ws")
        events = Events(client)
        pending = client.request(ECHO, {}, timeout=None)
        endpoint.servers[0]._inner.sendMessage(b"{}", isBinary=False)
        endpoint.flush()
        failure = self.failureResultOf(pending, ConnectionClosed)
        self.assertEqual(failure.value.reason.type, ProtocolError)
        self.assertEqual(events.log, [("disconnect", ProtocolError), ("close", ProtocolError)])
        self.assertEqual(self.connector.sockets, set())

    def test_kick_from_another_client(self) -> None:
        for transport in ("tcp", "ws"):
            endpoint = self.demo_server()
            victim = self.connected(endpoint, transport)
            other = self.connected(endpoint, transport)
            events = Events(victim)
            self.call(endpoint, victim, BIND, {"uid": "v"})
            reply = other.request(KICK, {"uid": "v", "reason": "bye"})
            endpoint.flush()
            self.assertEqual(self.successResultOf(reply), {"code": 200})
            self.assertEqual(
                events.log, [("kick", "bye"), ("disconnect", Kicked), ("close", Kicked)]
            )
            self.assertFalse(victim.connected)
            self.failureResultOf(victim.request(ECHO), NotConnected)
            self.assertEqual(len(self.connector.sockets), 1)

    def test_broadcast(self) -> None:
        endpoint = self.demo_server()
        tcp = self.connected(endpoint, "tcp")
        ws = self.connected(endpoint, "ws")
        got = [tcp.next_push("onBroadcast"), ws.next_push("onBroadcast")]
        self.assertEqual(self.call(endpoint, tcp, BROADCAST, {"t": "hi"}), {"code": 200})
        self.assertEqual([self.successResultOf(d) for d in got], [{"t": "hi"}] * 2)

    def test_handshake_refused(self) -> None:
        """The server's check_client hook refuses the client: 501, no reconnect."""
        endpoint = self.demo_server()
        self.connector.app.check_client = lambda type_, version: type_ != "old"
        client = PomeloClient(self.clock, client_type="old", reconnect=Backoff(jitter=0))
        events = Events(client)
        d = client.connect(endpoint)
        endpoint.flush()
        failure = self.failureResultOf(d, HandshakeFailed)
        self.assertEqual(failure.value.code, 501)
        self.assertEqual(events.log, [("close", HandshakeFailed)])
        self.assertEqual(self.connector.sockets, set())
        self.assertEqual(endpoint.attempts, 1)

    def test_user_data(self) -> None:
        """C{user} goes to the server's handshake hook, and its answer comes back."""
        endpoint = self.demo_server()
        seen: list[Any] = []

        def hook(msg: Any, session: Any) -> Any:
            seen.append(msg.get("user"))
            return {"token": "t"}

        self.connector.app.handshake_hook = hook
        client = self.connected(endpoint, user={"name": "bot"})
        self.assertEqual(seen, [{"name": "bot"}])
        assert client.answer is not None
        self.assertEqual(client.answer["user"], {"token": "t"})


class ScriptedServer(Protocol):
    """A server the test drives by hand: it keeps what it receives and writes what it's told."""

    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True

    def packages(self) -> list[tuple[int, bytes]]:
        return [(int(p.type), p.body) for p in PackageDecoder().feed(self.received)]


class ScriptedServerTests(MemoryHarness):
    """Timeouts and failures, against a server that does exactly what the test says."""

    def start(
        self, answer: Any = None, **kwargs: Any
    ) -> tuple[PomeloClient, MemoryEndpoint, Deferred[Any]]:
        endpoint = MemoryEndpoint(self.clock, Factory.forProtocol(ScriptedServer))
        client = PomeloClient(self.clock, **kwargs)
        self.events = Events(client)
        d = client.connect(endpoint)
        endpoint.flush()
        if answer is not None:
            self.write(endpoint, answer_package(answer))
        return client, endpoint, d

    def write(self, endpoint: MemoryEndpoint, data: bytes) -> None:
        endpoint.servers[-1].transport.write(data)
        endpoint.flush()

    def test_connect_fires_after_ack(self) -> None:
        client, endpoint, d = self.start()
        server = endpoint.servers[0]
        self.assertEqual(server.packages()[0][0], PackageType.HANDSHAKE)
        self.assertNoResult(d)
        self.assertRaises(NotConnected, client.notify, ENTRY)
        self.failureResultOf(client.request(ENTRY), NotConnected)
        self.write(endpoint, answer_package({"code": 200, "sys": {}}))
        self.assertEqual(self.successResultOf(d), {"code": 200, "sys": {}})
        self.assertEqual(server.packages()[1], (PackageType.HANDSHAKE_ACK, b""))
        self.assertEqual(self.events.names(), ["connect"])
        self.assertRaises(RuntimeError, client.connect, endpoint)

    def test_dead_after_silence(self) -> None:
        """Heartbeats every interval; nothing from the server for twice the interval: dead."""
        client, endpoint, d = self.start({"code": 200, "sys": {"heartbeat": 1}})
        self.successResultOf(d)
        pending = client.request(ENTRY, {}, timeout=None)
        endpoint.advance(1.5)
        beats = [p for p in endpoint.servers[0].packages() if p[0] == PackageType.HEARTBEAT]
        self.assertEqual(len(beats), 1)  # at 1 s
        self.assertTrue(client.connected)
        endpoint.advance(0.5)  # 2 s since the answer
        self.assertFalse(client.connected)
        self.assertEqual(
            self.events.log[1:], [("disconnect", HeartbeatTimeout), ("close", HeartbeatTimeout)]
        )
        failure = self.failureResultOf(pending, ConnectionClosed)
        self.assertTrue(failure.value.reason.check(HeartbeatTimeout))
        self.assertTrue(endpoint.servers[0].lost)

    def test_any_package_is_alive(self) -> None:
        """Any package from the server moves the deadline; C{heartbeat_grace} scales it."""
        client, endpoint, d = self.start({"code": 200, "sys": {"heartbeat": 1}}, heartbeat_grace=3)
        self.successResultOf(d)
        endpoint.advance(2.5)
        self.write(endpoint, encode_package(PackageType.DATA, b"\x06\x01x{}"))  # a push
        endpoint.advance(2.75)
        self.assertTrue(client.connected)
        endpoint.advance(0.25)  # 3 s after the push
        self.assertFalse(client.connected)

    def test_no_heartbeat(self) -> None:
        """A server without heartbeats: the client never sends one nor times out."""
        client, endpoint, d = self.start({"code": 200, "sys": {}})
        self.successResultOf(d)
        endpoint.advance(100, step=10)
        self.assertTrue(client.connected)
        self.assertEqual(len(endpoint.servers[0].packages()), 2)  # handshake, ACK

    def test_request_timeout(self) -> None:
        client, endpoint, d = self.start({"code": 200, "sys": {}}, request_timeout=5)
        self.successResultOf(d)
        first = client.request(ENTRY, {})
        second = client.request(ENTRY, {}, timeout=10)
        forever = client.request(ENTRY, {}, timeout=None)
        endpoint.advance(5)
        failure = self.failureResultOf(first, RequestTimeout)
        self.assertEqual(
            (failure.value.id, failure.value.route, failure.value.timeout), (1, ENTRY, 5)
        )
        self.assertNoResult(second)
        endpoint.advance(5)
        self.failureResultOf(second, RequestTimeout)
        # A late response to a timed-out request is dropped; the connection goes on.
        self.write(endpoint, encode_package(PackageType.DATA, b"\x04\x01{}"))
        self.write(endpoint, encode_package(PackageType.DATA, b'\x04\x03{"ok":1}'))
        self.assertEqual(self.successResultOf(forever), {"ok": 1})
        self.assertTrue(client.connected)

    def test_cancel_request(self) -> None:
        client, endpoint, d = self.start({"code": 200, "sys": {}})
        self.successResultOf(d)
        request = client.request(ENTRY, {})
        request.cancel()
        self.failureResultOf(request, CancelledError)
        self.write(endpoint, encode_package(PackageType.DATA, b"\x04\x01{}"))
        self.assertTrue(client.connected)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # its timeout went with it

    def test_errback_on_close(self) -> None:
        """Pending requests fail with L{ConnectionClosed} when the server closes, or when the
        client does."""
        client, endpoint, d = self.start({"code": 200, "sys": {"heartbeat": 3}})
        self.successResultOf(d)
        pending = client.request(ENTRY, {})
        endpoint.servers[0].transport.loseConnection()
        endpoint.flush()
        failure = self.failureResultOf(pending, ConnectionClosed)
        self.assertTrue(failure.value.reason.check(ConnectionDone))
        self.assertEqual(self.events.names(), ["connect", "disconnect", "close"])
        self.assertEqual(self.clock.getDelayedCalls(), [])  # heartbeat timers gone

        client, endpoint, d = self.start({"code": 200, "sys": {"heartbeat": 3}})
        self.successResultOf(d)
        pending = client.request(ENTRY, {})
        closed = client.close()
        self.assertNoResult(closed)
        endpoint.flush()
        self.successResultOf(closed)
        self.failureResultOf(pending, ConnectionClosed)
        self.assertTrue(endpoint.servers[0].lost)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(client.close())  # closing an idle client: at once

    def test_closing_refuses_sends(self) -> None:
        client, endpoint, d = self.start({"code": 200, "sys": {}})
        self.successResultOf(d)
        closed = client.close()
        self.assertFalse(client.connected)
        self.failureResultOf(client.request(ENTRY), NotConnected)
        self.assertRaises(NotConnected, client.notify, ENTRY)
        endpoint.flush()
        self.successResultOf(closed)

    def test_websocket_upgrade_refused(self) -> None:
        """An HTTP error instead of the WebSocket upgrade: a failed attempt (retried with a
        back-off), never a half-open client."""
        endpoint = MemoryEndpoint(self.clock, Factory.forProtocol(ScriptedServer))
        client = PomeloClient(self.clock, reconnect=Backoff(initial=1, jitter=0, max_attempts=1))
        events = Events(client)
        d = client.connect(endpoint, transport="ws", url="ws://game.test/pomelo")
        endpoint.flush()
        server = endpoint.servers[0]
        self.assertTrue(server.received.startswith(b"GET /pomelo HTTP/1.1\r\n"))
        self.assertIn(b"Host: game.test:80\r\n", server.received)
        server.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        server.transport.loseConnection()
        endpoint.flush()
        self.assertEqual(events.log, [("reconnect", 1, 1)])
        self.assertNoResult(d)
        self.clock.advance(1)
        endpoint.flush()
        endpoint.servers[1].transport.loseConnection()
        endpoint.flush()
        self.failureResultOf(d, ConnectError)
        self.assertEqual(events.log[1:], [("close", ConnectError)])
        self.assertFalse(client.connected)

    def test_close_while_connecting(self) -> None:
        endpoint = MemoryEndpoint(self.clock, Factory.forProtocol(ScriptedServer))
        endpoint.hold = True
        client = PomeloClient(self.clock)
        events = Events(client)
        d = client.connect(endpoint)
        first, second = client.close(), client.close()
        self.successResultOf(first)
        self.successResultOf(second)
        self.failureResultOf(d, ConnectionDone)
        self.assertEqual(events.log, [("close", ConnectionDone)])

    def test_broken_listener(self) -> None:
        """A listener that raises is logged; the others still run and the client works."""
        endpoint = MemoryEndpoint(self.clock, Factory.forProtocol(ScriptedServer))
        client = PomeloClient(self.clock)
        seen: list[Any] = []

        def broken(answer: Any) -> None:
            raise RuntimeError("listener bug")

        client.on_connect(broken)
        client.on_connect(seen.append)
        d = client.connect(endpoint)
        endpoint.flush()
        endpoint.servers[0].transport.write(answer_package({"code": 200, "sys": {}}))
        endpoint.flush()
        self.successResultOf(d)
        self.assertEqual(seen, [{"code": 200, "sys": {}}])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(client.connected)

    def test_handshake_timeout(self) -> None:
        _, endpoint, d = self.start(handshake_timeout=10)
        endpoint.advance(10, step=1)
        self.failureResultOf(d, HandshakeTimeout)
        self.assertEqual(self.events.log, [("close", HandshakeTimeout)])
        self.assertTrue(endpoint.servers[0].lost)

    def test_protocol_error(self) -> None:
        """Bad bytes from the server: the connection is aborted, pending requests fail."""
        client, endpoint, d = self.start({"code": 200, "sys": {}})
        self.successResultOf(d)
        pending = client.request(ENTRY, {})
        self.write(endpoint, b"\x09\x00\x00\x00")
        failure = self.failureResultOf(pending, ConnectionClosed)
        self.assertEqual(failure.value.reason.type.__name__, "PackageError")
        self.assertTrue(endpoint.servers[0].lost)

    def test_undecodable_response(self) -> None:
        """A protobuf response that does not decode fails its request only."""
        full, _ = reference_answers()
        client, endpoint, d = self.start(full)
        self.successResultOf(d)
        request = client.request(PROTO, PROTO_VALUE)
        self.write(endpoint, encode_package(PackageType.DATA, b"\x04\x01\xff\xff"))
        self.failureResultOf(request, ProtobufError)
        self.assertTrue(client.connected)
        self.flushLoggedErrors()

    def test_encoding_error(self) -> None:
        full, _ = reference_answers()
        client, _, d = self.start(full)
        self.successResultOf(d)
        self.failureResultOf(client.request(PROTO, {"id": "nope"}), ProtobufError)
        self.failureResultOf(client.request(ECHO, {1j: 1}), TypeError)
        self.assertRaises(ProtobufError, client.notify, PROTO, {"id": "nope"})

    def test_push_callbacks(self) -> None:
        client, endpoint, d = self.start({"code": 200, "sys": {}})
        self.successResultOf(d)
        seen: list[Any] = []
        remove = client.on("onX", lambda body: seen.append(("a", body)))
        client.on("onX", lambda body: seen.append(("b", body)))

        def broken(body: Any) -> None:
            raise ValueError("listener bug")

        client.on("onX", broken)
        push = encode_package(PackageType.DATA, b'\x06\x03onX{"n":1}')
        self.write(endpoint, push)
        self.assertEqual(seen, [("a", {"n": 1}), ("b", {"n": 1})])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        remove()
        client.off("onX", broken)
        self.write(endpoint, push)
        self.assertEqual(seen[2:], [("b", {"n": 1})])
        client.off("onX")
        client.off("never")
        waiting = client.next_push("onX")
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.write(endpoint, push)
        self.assertEqual(len(seen), 3)
        self.assertTrue(client.connected)

    def test_kick_closes(self) -> None:
        """A kick: the event with the reason, then the client closes (even if the server does
        not) and does not reconnect; pending requests fail with the kick as the reason."""
        client, endpoint, d = self.start({"code": 200, "sys": {}}, reconnect=Backoff(jitter=0))
        self.successResultOf(d)
        pending = client.request(ENTRY)
        self.write(endpoint, encode_package(PackageType.KICK, b'{"reason":"go"}'))
        failure = self.failureResultOf(pending, ConnectionClosed)
        self.assertIsInstance(failure.value.reason.value, Kicked)
        self.assertEqual(failure.value.reason.value.reason, "go")
        self.assertEqual(
            self.events.log[1:], [("kick", "go"), ("disconnect", Kicked), ("close", Kicked)]
        )
        self.assertEqual(endpoint.attempts, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_kick_reconnect_option(self) -> None:
        """C{Backoff(after_kick=True)}: a kicked client reconnects (a restarting server kicks
        everyone); the packages after the kick are ignored."""
        client, endpoint, d = self.start(
            {"code": 200, "sys": {}}, reconnect=Backoff(initial=1, jitter=0, after_kick=True)
        )
        self.successResultOf(d)
        seen: list[Any] = []
        client.on("onX", seen.append)
        kick = encode_package(PackageType.KICK, b'{"reason":"server shutting down"}')
        self.write(endpoint, kick + encode_package(PackageType.DATA, b"\x06\x03onX{}"))
        self.assertEqual(seen, [])
        self.assertEqual(
            self.events.log[1:],
            [("kick", "server shutting down"), ("disconnect", Kicked), ("reconnect", 1, 1)],
        )
        self.clock.advance(1)
        self.write(endpoint, answer_package({"code": 200, "sys": {}}))
        self.assertEqual(self.events.names()[-1], "connect")
        self.assertTrue(client.connected)

    def test_listener_removal(self) -> None:
        client = PomeloClient(self.clock)
        seen: list[Any] = []
        remove = client.on_close(seen.append)
        remove()
        remove()  # twice is fine
        endpoint = MemoryEndpoint(self.clock, Factory.forProtocol(ScriptedServer))
        endpoint.refuse = 1
        self.failureResultOf(client.connect(endpoint), ConnectionRefusedError)
        self.assertEqual(seen, [])

    def test_cancel_connect(self) -> None:
        """Cancelling connect()'s Deferred closes the client."""
        _, endpoint, d = self.start()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        endpoint.flush()
        self.assertTrue(endpoint.servers[0].lost)
        self.assertEqual(self.events.names(), ["close"])


class ReconnectTests(MemoryHarness):
    """Back-off on a clock: exact delays, exact attempts."""

    def test_reconnect_after_drop(self) -> None:
        endpoint = MemoryEndpoint(
            self.clock, PomeloConnectorFactory(Connector(make_app(), self.clock, ConnectorConfig()))
        )
        policy = Backoff(initial=1, factor=2, maximum=3, jitter=0, max_attempts=4)
        client = PomeloClient(self.clock, reconnect=policy)
        events = Events(client)
        self.successResultOf_flush(client, endpoint)
        first_answer = client.answer
        assert first_answer is not None

        # The server drops the connection; two attempts are refused, the third works.
        endpoint.refuse = 2
        endpoint.servers[0].transport.loseConnection()
        endpoint.flush()
        self.assertEqual(events.log[1:], [("disconnect", ConnectionDone), ("reconnect", 1, 1)])
        self.failureResultOf(client.request(ENTRY), NotConnected)
        self.clock.advance(1)
        self.assertEqual(events.log[3:], [("reconnect", 2, 2)])
        self.clock.advance(2)
        self.assertEqual(events.log[4:], [("reconnect", 3, 3)])
        self.clock.advance(3)
        endpoint.flush()
        self.assertEqual(events.names()[5:], ["connect"])
        self.assertTrue(client.connected)
        self.assertEqual(endpoint.attempts, 4)
        # The cache made the second handshake small.
        self.assertNotIn("dict", events.log[5][1]["sys"])
        d = client.request(ECHO, {"back": True})
        endpoint.flush()
        self.assertEqual(self.successResultOf(d), {"back": True})

        # Dropped again, and the server is gone for good: the count starts over, and the
        # client gives up after max_attempts.
        endpoint.refuse = 100
        endpoint.servers[-1].transport.loseConnection()
        endpoint.flush()
        for delay in (1, 2, 3, 3):
            self.clock.advance(delay)
        self.assertEqual(
            events.log[6:],
            [
                ("disconnect", ConnectionDone),
                ("reconnect", 1, 1),
                ("reconnect", 2, 2),
                ("reconnect", 3, 3),
                ("reconnect", 4, 3),
                ("close", ConnectionRefusedError),
            ],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def successResultOf_flush(self, client: PomeloClient, endpoint: MemoryEndpoint) -> Any:
        d = client.connect(endpoint)
        endpoint.flush()
        return self.successResultOf(d)

    def test_first_connect_retries(self) -> None:
        """With reconnect, connect() waits through refused attempts."""
        endpoint = MemoryEndpoint(self.clock, Factory.forProtocol(ScriptedServer))
        endpoint.refuse = 2
        client = PomeloClient(self.clock, reconnect=Backoff(initial=5, jitter=0))
        d = client.connect(endpoint)
        self.clock.advance(5)
        self.assertNoResult(d)
        self.clock.advance(10)
        endpoint.flush()
        endpoint.servers[0].transport.write(answer_package({"code": 200, "sys": {}}))
        endpoint.flush()
        self.assertEqual(self.successResultOf(d)["code"], 200)

    def test_close_while_waiting(self) -> None:
        """close() during the back-off cancels the retry."""
        endpoint = MemoryEndpoint(self.clock, Factory.forProtocol(ScriptedServer))
        endpoint.refuse = 1
        client = PomeloClient(self.clock, reconnect=Backoff(jitter=0))
        events = Events(client)
        d = client.connect(endpoint)
        self.assertEqual(events.log, [("reconnect", 1, 2.0)])
        closed = client.close()
        self.successResultOf(closed)
        self.failureResultOf(d, ConnectionDone)
        self.assertEqual(events.log[1:], [("close", ConnectionDone)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(endpoint.attempts, 1)

    def test_heartbeat_timeout_reconnects(self) -> None:
        endpoint = MemoryEndpoint(self.clock, Factory.forProtocol(ScriptedServer))
        client = PomeloClient(self.clock, reconnect=Backoff(initial=1, jitter=0))
        events = Events(client)
        d = client.connect(endpoint)
        endpoint.flush()
        endpoint.servers[0].transport.write(answer_package({"code": 200, "sys": {"heartbeat": 1}}))
        endpoint.flush()
        self.successResultOf(d)
        endpoint.advance(2)
        self.assertEqual(events.log[1:], [("disconnect", HeartbeatTimeout), ("reconnect", 1, 1)])
        endpoint.advance(1)
        self.assertEqual(endpoint.attempts, 2)
        client.close()
        endpoint.flush()
        self.assertEqual(events.names()[-1], "close")


class EndpointTests(SynchronousTestCase):
    def test_ws_url(self) -> None:
        """A ws:// URL: a hostname endpoint to its host and port, and the WebSocket transport."""
        from twisted.internet.endpoints import HostnameEndpoint

        client = PomeloClient(Clock())
        endpoint, kind, url = client._resolve("ws://example.test:3011/path", None, None)
        self.assertIsInstance(endpoint, HostnameEndpoint)
        self.assertEqual((kind, url), ("ws", "ws://example.test:3011/path"))
        self.assertEqual(endpoint._hostText, "example.test")  # type: ignore[attr-defined]
        self.assertEqual(endpoint._port, 3011)  # type: ignore[attr-defined]
        endpoint, kind, url = client._resolve("wss://example.test/", None, None)
        self.assertEqual(kind, "ws")
        self.assertRaises(ValueError, client._resolve, "ws:///", None, None)
        self.assertRaises(ValueError, client._resolve, endpoint, "udp", None)

    def test_endpoint_string(self) -> None:
        client = PomeloClient(Clock())
        endpoint, kind, url = client._resolve("tcp:host=127.0.0.1:port=3010", None, None)
        self.assertIsInstance(endpoint, TCP4ClientEndpoint)
        self.assertEqual((kind, url), ("tcp", "ws://localhost/"))
        _, kind, url = client._resolve("tcp:host=127.0.0.1:port=3010", "ws", "ws://h/x")
        self.assertEqual((kind, url), ("ws", "ws://h/x"))

    def test_websocket_factory(self) -> None:
        clock = Clock()
        client = PomeloClient(clock, handshake_timeout=7)
        from pomelo_twisted.client.websocket import make_client_websocket_factory

        factory = make_client_websocket_factory(client, "ws://h:1/")
        self.assertIsInstance(factory, PomeloClientWebSocketFactory)
        self.assertIs(factory.reactor, clock)
        self.assertIs(factory.client, client)
        self.assertEqual(factory.openHandshakeTimeout, 7)
        self.assertEqual(factory.autoPingInterval, 0)
        self.assertTrue(factory.tcpNoDelay)

    def test_no_global_reactor(self) -> None:
        """With a reactor given, using the client never imports the global reactor."""
        code = (
            "import sys\n"
            "from twisted.internet.task import Clock\n"
            "from pomelo_twisted.client import PomeloClient, PomeloClientConnection\n"
            "c = PomeloClient(Clock())\n"
            "c.request('a.b.c')\n"
            "PomeloClientConnection().initiate()\n"
            "assert 'twisted.internet.reactor' not in sys.modules\n"
        )
        result = run_python(code)
        self.assertEqual(result.returncode, 0, result.stderr.decode())

    def test_default_reactor(self) -> None:
        from twisted.internet import reactor as global_reactor

        self.assertIs(PomeloClient().reactor, global_reactor)
        self.assertIs(client_module.PomeloClient, PomeloClient)


# --- real sockets -----------------------------------------------------------------------------


class EndToEndTCPTests(TestCase):
    """Real loopback: this package's server with the demo app, and PomeloClients over TCP
    (and, in L{EndToEndWebSocketTests}, over WebSocket)."""

    transport = "tcp"
    timeout = 15

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        self.connector = Connector(make_app(), reactor, ConnectorConfig())
        self.port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            PomeloConnectorFactory(self.connector)
        )
        self.listening = True
        self.clients: list[PomeloClient] = []
        self.addCleanup(self.cleanUp)

    @inlineCallbacks
    def cleanUp(self) -> Any:
        yield DeferredList([c.close() for c in self.clients])
        yield self.connector.wait_closed(5)
        if self.listening:
            yield self.port.stopListening()

    def target(self, transport: str | None = None) -> str:
        port = self.port.getHost().port
        if (transport or self.transport) == "ws":
            return f"ws://127.0.0.1:{port}/"
        return f"tcp:host=127.0.0.1:port={port}"

    @inlineCallbacks
    def client(self, transport: str | None = None, **kwargs: Any) -> Any:
        client = PomeloClient(reactor, **kwargs)
        self.clients.append(client)
        answer = yield client.connect(self.target(transport))
        self.assertEqual(answer["code"], 200)
        return client

    @inlineCallbacks
    def test_demo_routes(self) -> Any:
        """Every request and notify route of the demo contract (shared/demo/ROUTES.md)."""
        client = yield self.client()
        self.assertEqual(client.answer["sys"]["heartbeat"], 3)
        self.assertEqual((yield client.request(ENTRY)), {"code": 200, "msg": "game server is ok."})
        self.assertEqual((yield client.request(ECHO, {"a": [1, "é"]})), {"a": [1, "é"]})
        self.assertEqual(
            (yield client.request(BIND, {"uid": "alice"})), {"code": 200, "uid": "alice"}
        )
        pushed = client.next_push("onPush")
        self.assertEqual((yield client.request(PUSH, {"p": 1})), {"code": 200})
        self.assertEqual((yield pushed), {"p": 1})
        notified = client.next_push("onNotify")
        client.notify(NOTIFY, {"n": 2})
        self.assertEqual((yield notified), {"n": 2})
        # protobuf both ways: the server reads the body with its client protos and answers
        # with its server protos; JSON would round-trip through neither.
        self.assertEqual((yield client.request(PROTO, PROTO_VALUE)), PROTO_VALUE)
        protobuf = client._link.core.protobuf
        self.assertTrue(protobuf.has_client(PROTO) and protobuf.has_server(PROTO))
        self.assertEqual((yield client.request("connector.entryHandler.nope", {})), {"code": 500})
        self.assertEqual((yield client.request("nope", {})), {"code": 500})

    @inlineCallbacks
    def test_broadcast_and_kick(self) -> Any:
        """A broadcast reaches a second client, and one of the other transport; a kick by
        uid: the kick event with its reason, then the close."""
        first = yield self.client()
        second = yield self.client()
        other = yield self.client("tcp" if self.transport == "ws" else "ws")
        got = [c.next_push("onBroadcast") for c in (first, second, other)]
        self.assertEqual((yield first.request(BROADCAST, {"text": "hello"})), {"code": 200})
        bodies = yield DeferredList(got, fireOnOneErrback=True)
        self.assertEqual([body for _, body in bodies], [{"text": "hello"}] * 3)

        yield second.request(BIND, {"uid": "bob"})
        kicked: Deferred[Any] = Deferred()
        closed: Deferred[Any] = Deferred()
        order: list[str] = []

        def on_kick(reason: Any) -> None:
            order.append("kick")
            kicked.callback(reason)

        def on_close(reason: Failure) -> None:
            order.append("close")
            closed.callback(reason.value)

        second.on_kick(on_kick)
        second.on_close(on_close)
        reply = yield first.request(KICK, {"uid": "bob", "reason": "bye"})
        self.assertEqual(reply, {"code": 200})
        self.assertEqual((yield kicked), "bye")
        self.assertIsInstance((yield closed), Kicked)
        self.assertEqual(order, ["kick", "close"])
        self.assertFalse(second.connected)
        self.failureResultOf(second.request(ECHO), NotConnected)
        self.assertTrue(first.connected)

    @inlineCallbacks
    def test_cache(self) -> Any:
        """Clients sharing a cache: only the first handshake carries the dict and protos."""
        cache: dict[str, Any] = {}
        first = yield self.client(cache=cache)
        second = yield self.client(cache=cache)
        self.assertIn("protos", first.answer["sys"])
        self.assertEqual(
            second.answer, {"code": 200, "sys": {"heartbeat": 3, "useDict": True, "useProto": True}}
        )
        self.assertEqual((yield second.request(PROTO, PROTO_VALUE)), PROTO_VALUE)

    @inlineCallbacks
    def test_reconnect(self) -> Any:
        """The server drops the connection: the client reconnects after the back-off; then,
        with the server gone, it gives up after max_attempts."""
        policy = Backoff(initial=0.05, factor=2, maximum=0.2, jitter=0, max_attempts=3)
        client = yield self.client(reconnect=policy)
        log: list[tuple[Any, ...]] = []
        connected: Deferred[Any] = Deferred()
        closed: Deferred[Any] = Deferred()

        def on_connect(answer: dict[str, Any]) -> None:
            log.append(("connect",))
            connected.callback(answer)

        def on_close(reason: Failure) -> None:
            log.append(("close", reason.type))
            closed.callback(None)

        client.on_disconnect(lambda f: log.append(("disconnect",)))
        client.on_reconnect(lambda n, delay: log.append(("reconnect", n, delay)))
        client.on_connect(on_connect)
        client.on_close(on_close)

        [socket] = self.connector.sockets
        socket.disconnect("test drop")
        answer = yield connected
        self.assertEqual(answer["sys"], {"heartbeat": 3, "useDict": True, "useProto": True})
        self.assertEqual(log, [("disconnect",), ("reconnect", 1, 0.05), ("connect",)])
        self.assertEqual((yield client.request(ECHO, {"again": 1})), {"again": 1})

        self.listening = False
        yield self.port.stopListening()
        [socket] = self.connector.sockets
        socket.disconnect("test drop")
        yield closed
        self.assertEqual(
            log[3:],
            [
                ("disconnect",),
                ("reconnect", 1, 0.05),
                ("reconnect", 2, 0.1),
                ("reconnect", 3, 0.2),
                ("close", ConnectionRefusedError),
            ],
        )


class EndToEndWebSocketTests(EndToEndTCPTests):
    transport = "ws"
