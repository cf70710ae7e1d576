"""End to end over real loopback sockets: a raw TCP and a WebSocket client on ONE port.

The demo app with the default configuration (dictionary and protobuf on, heartbeat 3 s). Every
wait is on a Deferred, and every test is bounded by trial's C{timeout}.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, DeferredQueue, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from pomelo_twisted.demo import make_app
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import HybridProtocol, PomeloConnectorFactory

HANDSHAKE, HANDSHAKE_ACK, HEARTBEAT, DATA, KICK = 1, 2, 3, 4, 5
REQUEST, RESPONSE, PUSH = 0, 2, 3


def package(type_: int, body: bytes = b"") -> bytes:
    return bytes([type_]) + len(body).to_bytes(3, "big") + body


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def request(mid: int, route: str, msg: Any) -> bytes:
    """A DATA package holding a JSON request with an uncompressed route."""
    name = route.encode()
    body = bytes([REQUEST << 1]) + varint(mid) + bytes([len(name)]) + name
    return package(DATA, body + json.dumps(msg, separators=(",", ":")).encode())


def handshake() -> bytes:
    body = {"sys": {"type": "twisted-test", "version": "0.1.0"}, "user": {}}
    return package(HANDSHAKE, json.dumps(body).encode())


def split_packages(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole packages at the start of C{data}, and the rest."""
    packages = []
    while len(data) >= 4:
        length = int.from_bytes(data[1:4], "big")
        if len(data) < 4 + length:
            break
        packages.append((data[0], data[4 : 4 + length]))
        data = data[4 + length :]
    return packages, data


def decode_message(body: bytes) -> dict[str, Any]:
    """Decode a server message (response or push) whose body is JSON."""
    flag = body[0]
    mtype = (flag >> 1) & 7
    out: dict[str, Any] = {"type": mtype}
    i = 1
    if mtype == RESPONSE:
        mid, shift = 0, 0
        while True:
            byte = body[i]
            i += 1
            mid |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        out["id"] = mid
    elif flag & 1:
        out["route"] = int.from_bytes(body[i : i + 2], "big")
        i += 2
    else:
        n = body[i]
        out["route"] = body[i + 1 : i + 1 + n].decode()
        i += 1 + n
    out["body"] = json.loads(body[i:])
    return out


class PomeloClientMixin:
    """What both test clients share: a queue of received packages and a closed Deferred."""

    def setUpClient(self) -> None:
        self.packages: DeferredQueue[tuple[int, bytes]] = DeferredQueue()
        self.closed: Deferred[Any] = Deferred()

    def sendPackages(self, data: bytes) -> None:
        raise NotImplementedError

    @inlineCallbacks
    def next_of(self, type_: int) -> Any:
        """The next package of C{type_}, skipping heartbeats when looking for something else."""
        while True:
            got_type, body = yield self.packages.get()
            if got_type == type_:
                return body
            if got_type != HEARTBEAT:
                raise AssertionError(f"expected type {type_}, got {got_type}: {body!r}")

    @inlineCallbacks
    def message(self) -> Any:
        body = yield self.next_of(DATA)
        return decode_message(body)

    @inlineCallbacks
    def call(self, mid: int, route: str, msg: Any) -> Any:
        """Send a request and return the body of its response (pushes before it are kept)."""
        self.sendPackages(request(mid, route, msg))
        while True:
            message = yield self.message()
            if message["type"] == RESPONSE and message["id"] == mid:
                return message["body"]
            self.pushes.append(message)

    @inlineCallbacks
    def shake_hands(self) -> Any:
        """Handshake, ACK, and the first heartbeat; return the handshake answer."""
        self.pushes: list[dict[str, Any]] = []
        self.sendPackages(handshake())
        answer = json.loads((yield self.next_of(HANDSHAKE)))
        self.sendPackages(package(HANDSHAKE_ACK))
        got_type, body = yield self.packages.get()
        assert (got_type, body) == (HEARTBEAT, b""), (got_type, body)
        return answer


class RawClient(PomeloClientMixin, Protocol):
    """A raw TCP Pomelo client: the package stream straight on the socket."""

    def __init__(self) -> None:
        self.setUpClient()
        self._buffer = b""

    def sendPackages(self, data: bytes) -> None:
        self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        packages, self._buffer = split_packages(self._buffer + data)
        for p in packages:
            self.packages.put(p)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)


class WSClient(PomeloClientMixin, WebSocketClientProtocol):
    """A WebSocket Pomelo client (Autobahn): every binary message holds whole packages."""

    def __init__(self) -> None:
        super().__init__()
        self.setUpClient()
        self.opened: Deferred[None] = Deferred()
        self.close_status: tuple[bool, int | None] | None = None

    def sendPackages(self, data: bytes) -> None:
        self.sendMessage(data, isBinary=True)

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        assert isBinary
        packages, rest = split_packages(payload)
        assert rest == b"", payload
        for p in packages:
            self.packages.put(p)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_status = (wasClean, code)
        if not self.opened.called:
            self.opened.errback(Exception(f"WebSocket not opened: {reason}"))
        self.closed.callback(None)


class TrackingFactory(PomeloConnectorFactory):
    """Knows when each server-side connection is gone, so a test can end with none open."""

    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        self.lost: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> HybridProtocol:
        protocol = super().buildProtocol(addr)
        lost: Deferred[None] = Deferred()
        self.lost.append(lost)
        connectionLost = protocol.connectionLost

        def tracked(reason: Failure = connectionDone) -> None:
            connectionLost(reason)
            lost.callback(None)

        protocol.connectionLost = tracked  # type: ignore[method-assign]
        return protocol


class EndToEndTests(TestCase):
    timeout = 10

    @inlineCallbacks
    def setUp(self) -> Any:
        self.connector = Connector(make_app(), reactor, ConnectorConfig())
        self.factory = TrackingFactory(self.connector)
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(self.factory)
        self.addCleanup(self.close_everything)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.clients: list[PomeloClientMixin] = []

    def close_everything(self) -> Deferred[Any]:
        """Close what is left; wait until both ends of every connection are gone."""
        for client in self.clients:
            if not client.closed.called:
                client.transport.abortConnection()
        waits = [c.closed for c in self.clients] + self.factory.lost
        return DeferredList(waits, fireOnOneErrback=True)

    def endpoint(self) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5)

    @inlineCallbacks
    def tcp_client(self) -> Any:
        client = yield self.endpoint().connect(Factory.forProtocol(RawClient))
        self.clients.append(client)
        return client

    @inlineCallbacks
    def ws_client(self) -> Any:
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{self.port}", reactor=reactor)
        factory.protocol = WSClient
        client = yield self.endpoint().connect(factory)
        self.clients.append(client)
        yield client.opened
        return client

    @inlineCallbacks
    def test_both_transports_on_one_port(self) -> Any:
        """TCP and WebSocket clients: handshake, ACK, heartbeat, request; broadcast; kicks."""
        tcp = yield self.tcp_client()
        ws = yield self.ws_client()
        for client in (tcp, ws):
            answer = yield client.shake_hands()
            self.assertEqual(answer["code"], 200)
            self.assertEqual(answer["sys"]["heartbeat"], 3)
            self.assertEqual(answer["sys"]["dict"]["onBroadcast"], 11)  # dictionary on
            body = yield client.call(1, "connector.entryHandler.entry", {})
            self.assertEqual(body, {"code": 200, "msg": "game server is ok."})
        self.assertEqual(sorted(s.transport.name for s in self.connector.sockets), ["tcp", "ws"])
        body = yield tcp.call(2, "connector.entryHandler.bind", {"uid": "tcp-user"})
        self.assertEqual(body, {"code": 200, "uid": "tcp-user"})
        body = yield ws.call(2, "connector.entryHandler.bind", {"uid": "ws-user"})
        self.assertEqual(body, {"code": 200, "uid": "ws-user"})

        # A broadcast from the TCP client reaches the WebSocket client, route compressed.
        body = yield tcp.call(3, "connector.entryHandler.broadcast", {"text": "hello"})
        self.assertEqual(body, {"code": 200})
        push = yield ws.message()
        self.assertEqual(push, {"type": PUSH, "route": 11, "body": {"text": "hello"}})

        # A kick by uid: a KICK package, then a graceful close (a WebSocket close handshake).
        body = yield tcp.call(4, "connector.entryHandler.kick", {"uid": "ws-user", "reason": "bye"})
        self.assertEqual(body, {"code": 200})
        kick = yield ws.next_of(KICK)
        self.assertEqual(json.loads(kick), {"reason": "bye"})
        yield ws.closed
        self.assertEqual(ws.close_status, (True, 1000))

        tcp.sendPackages(request(5, "connector.entryHandler.kick", {"uid": "tcp-user"}))
        kick = yield tcp.next_of(KICK)
        self.assertEqual(json.loads(kick), {"reason": "kick"})
        yield tcp.closed
        yield DeferredList(self.factory.lost)
        self.assertEqual(self.connector.sockets, set())
        self.assertEqual(self.connector.session_service.sessions_count, 0)

    @inlineCallbacks
    def test_http_request_refused(self) -> Any:
        """A plain HTTP request on the Pomelo port: a short 4xx answer, then the close."""
        for request_bytes, status in (
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 400 "),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 426 "),
        ):
            client = yield self.endpoint().connect(Factory.forProtocol(Recorder))
            self.clients.append(client)
            client.transport.write(request_bytes)
            yield client.closed
            self.assertTrue(client.received.startswith(status), client.received)
            self.assertIn(b"\r\nConnection: close\r\n", client.received)

    @inlineCallbacks
    def test_garbage_aborted(self) -> Any:
        client = yield self.endpoint().connect(Factory.forProtocol(Recorder))
        self.clients.append(client)
        client.transport.write(b"\x16\x03\x01\x02\x00")  # a TLS ClientHello on a plain port
        yield client.closed
        self.assertEqual(client.received, b"")


class Recorder(Protocol):
    """Keeps what the server sends; C{closed} fires when the server closes."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)
