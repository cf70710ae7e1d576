"""Minimal Pomelo clients over real loopback sockets (raw TCP and Autobahn WebSocket), a
recorder of raw bytes, and a connector factory that knows when each server-side connection is gone.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet.defer import Deferred, DeferredList, DeferredQueue, inlineCallbacks
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

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


def close_everything(clients: list[Any], factory: TrackingFactory) -> Deferred[Any]:
    """Abort the C{clients} still open; fire when both ends of every connection are gone."""
    for client in clients:
        if not client.closed.called:
            client.transport.abortConnection()
    waits = [c.closed for c in clients] + factory.lost
    return DeferredList(waits, fireOnOneErrback=True)


class Recorder(Protocol):
    """Keeps what the server sends; C{closed} fires when the server closes."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)
