"""End to end over real loopback sockets: a raw TCP and a WebSocket client on ONE port.

The demo app with the default configuration (dictionary and protobuf on, heartbeat 3 s). Every
wait is on a Deferred, and every test is bounded by trial's C{timeout}.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from pomelo_twisted.demo import make_app
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from tests.support.loopback import (
    KICK,
    PUSH,
    PomeloClientMixin,
    RawClient,
    Recorder,
    TrackingFactory,
    WSClient,
    close_everything,
    request,
)


class EndToEndTests(TestCase):
    timeout = 10

    @inlineCallbacks
    def setUp(self) -> Any:
        self.connector = Connector(make_app(), reactor, ConnectorConfig())
        self.factory = TrackingFactory(self.connector)
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(self.factory)
        self.addCleanup(lambda: close_everything(self.clients, self.factory))
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.clients: list[PomeloClientMixin] = []

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
