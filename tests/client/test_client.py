"""Tests for L{pomelo_twisted.client}: the sans-IO core, the Twisted client, and end to end.

Three layers, as in the rest of the suite:

  - L{CoreTests}: the sans-IO L{PomeloClientConnection} against the byte vectors of
    protocol.md and the reference Pomelo server's own handshake answers;
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
from pomelo_twisted._version import __version__
from pomelo_twisted.client import (
    CLIENT_TYPE,
    Backoff,
    ClientState,
    ConnectionClosed,
    HandshakeCompleted,
    HandshakeFailed,
    HandshakeRefused,
    HandshakeTimeout,
    HeartbeatReceived,
    HeartbeatTimeout,
    Kicked,
    KickReceived,
    MessageUndecodable,
    NotConnected,
    PomeloClient,
    PomeloClientConnection,
    ProtocolViolated,
    PushReceived,
    RequestTimeout,
    ResponseReceived,
)
from pomelo_twisted.client.websocket import PomeloClientWebSocketFactory
from pomelo_twisted.demo import make_app
from pomelo_twisted.protocol.errors import EncodeError, ProtobufError, ProtocolError
from pomelo_twisted.protocol.message import MessageType, decode_message
from pomelo_twisted.protocol.package import (
    PackageDecoder,
    PackageType,
    decode_packages,
    encode_package,
)
from pomelo_twisted.protocol.protobuf import Protobuf
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import PomeloConnectorFactory
from tests.support.servers import run_python
from tests.support.vectors import load_vectors

PEER = IPv4Address("TCP", "127.0.0.1", 40000)

ENTRY = "connector.entryHandler.entry"
ECHO = "connector.entryHandler.echo"
BIND = "connector.entryHandler.bind"
PUSH = "connector.entryHandler.push"
NOTIFY = "connector.entryHandler.notify"
BROADCAST = "connector.entryHandler.broadcast"
KICK = "connector.entryHandler.kick"
PROTO = "connector.entryHandler.proto"

#: A value of the demo's proto route, using every field kind it declares.
PROTO_VALUE = {
    "id": 7,
    "name": "héllo",
    "values": [-3, 0, 300],
    "score": 2.5,
    "items": [{"kind": 1, "label": "a"}, {"kind": 2}],
}

ACK = bytes.fromhex("02 00 00 00")
HEARTBEAT = bytes.fromhex("03 00 00 00")

#: The dictionary of protocol.md §8.3, as a Pomelo server sends it (§5.3).
SPEC_DICT = {
    "connector.entryHandler.entry": 1,
    "connector.entryHandler.publish": 2,
    "connector.entryHandler.subscribe": 3,
    "onChat": 4,
}
SPEC_ANSWER = {
    "code": 200,
    "sys": {
        "heartbeat": 3,
        "dict": SPEC_DICT,
        "routeToCode": SPEC_DICT,
        "codeToRoute": {str(c): r for r, c in SPEC_DICT.items()},
        "dictVersion": "DhrOF72b3vNmhiDzNTXBTw==",
        "useDict": True,
    },
}


def reference_answers() -> tuple[dict[str, Any], dict[str, Any]]:
    """The reference Pomelo server's answers for the demo app: a client with nothing cached,
    and one that sent both cached versions."""
    cases = load_vectors("handshake.json")["cases"]
    full = cases[0]["response_json"]
    cached = next(c for c in cases if "dictVersion" in c["request_body"])["response_json"]
    return full, cached


def answer_package(answer: Any) -> bytes:
    return encode_package(PackageType.HANDSHAKE, json.dumps(answer).encode())


def working(answer: Any = SPEC_ANSWER, **kwargs: Any) -> PomeloClientConnection:
    """A core that has taken C{answer} and sent its ACK."""
    conn = PomeloClientConnection(**kwargs)
    conn.initiate()
    conn.data_to_send()
    [event] = conn.receive_data(answer_package(answer))
    assert isinstance(event, HandshakeCompleted), event
    assert conn.data_to_send() == [ACK]
    return conn


class CoreTests(SynchronousTestCase):
    """The sans-IO client state machine."""

    def test_handshake_bytes(self) -> None:
        """libpomelo2's handshake of protocol.md §19.1, byte for byte, given its type/version."""
        conn = PomeloClientConnection(client_type="desktop", version="0.3.5-release", user={})
        self.assertIs(conn.state, ClientState.INITED)
        conn.initiate()
        self.assertIs(conn.state, ClientState.HANDSHAKING)
        expected = bytes.fromhex(
            "01 00 00 3e 7b 22 73 79 73 22 3a 7b 22 74 79 70 65 22 3a 22 64 65 73 6b 74 6f 70 22"
            "2c 22 76 65 72 73 69 6f 6e 22 3a 22 30 2e 33 2e 35 2d 72 65 6c 65 61 73 65 22 7d 2c"
            "22 75 73 65 72 22 3a 7b 7d 7d"
        )
        self.assertEqual(conn.data_to_send(), [expected])
        self.assertEqual(conn.data_to_send(), [])

    def test_handshake_defaults(self) -> None:
        """No user: no C{user} key; nothing cached: no versions."""
        conn = PomeloClientConnection()
        self.assertEqual(
            conn.handshake_body(), {"sys": {"type": CLIENT_TYPE, "version": __version__}}
        )
        self.assertEqual(CLIENT_TYPE, "pomelo-twisted-client")

    def test_initiate_twice(self) -> None:
        conn = PomeloClientConnection()
        conn.initiate()
        self.assertRaises(ProtocolError, conn.initiate)

    def test_answer_split_anywhere(self) -> None:
        """The answer and the heartbeat after it, split at every byte: the same events."""
        stream = answer_package(SPEC_ANSWER) + HEARTBEAT
        for cut in range(len(stream) + 1):
            conn = PomeloClientConnection()
            conn.initiate()
            events = conn.receive_data(stream[:cut]) + conn.receive_data(stream[cut:])
            self.assertEqual(events, [HandshakeCompleted(SPEC_ANSWER, 3), HeartbeatReceived()], cut)
            self.assertEqual(conn.data_to_send()[-1], ACK)
            self.assertIs(conn.state, ClientState.WORKING)
            self.assertEqual(conn.heartbeat, 3)

    def test_answer_refused(self) -> None:
        answers: list[dict[str, Any]] = [{"code": 500}, {"code": 501}, {"sys": {}}]
        for answer in answers:
            conn = PomeloClientConnection()
            conn.initiate()
            conn.data_to_send()
            events = conn.receive_data(answer_package(answer) + HEARTBEAT)
            self.assertEqual(events, [HandshakeRefused(answer.get("code"), answer)])
            self.assertEqual(conn.data_to_send(), [])  # no ACK
            self.assertIs(conn.state, ClientState.CLOSED)

    def test_answer_malformed(self) -> None:
        """Not JSON, not an object, a bad dictionary, bad protos: a protocol violation."""
        for body in (
            b"{not json",
            b"[1]",
            b'{"code":200,"sys":{"dict":[1]}}',
            b'{"code":200,"sys":{"dict":{"a":"x"}}}',
            b'{"code":200,"sys":{"protos":{"client":{"r":{"f":1}},"server":{},"version":"v"}}}',
        ):
            conn = PomeloClientConnection()
            conn.initiate()
            [event] = conn.receive_data(encode_package(PackageType.HANDSHAKE, body))
            self.assertIsInstance(event, ProtocolViolated, body)
            self.assertIs(conn.state, ClientState.CLOSED)

    def test_heartbeat_off_and_odd(self) -> None:
        """No heartbeat, or a nonsense one: 0 (heartbeats off)."""
        for sys_ in ({}, {"heartbeat": True}, {"heartbeat": "3"}, {"heartbeat": -1}):
            conn = working({"code": 200, "sys": sys_})
            self.assertEqual(conn.heartbeat, 0, sys_)
        self.assertEqual(working({"code": 200}).heartbeat, 0)

    def test_nothing_before_answer(self) -> None:
        """DATA and heartbeats before the answer are ignored, as the server's state table
        does; so is any package before the handshake is sent."""
        conn = PomeloClientConnection()
        self.assertEqual(conn.receive_data(HEARTBEAT), [])
        conn.initiate()
        conn.data_to_send()
        response = encode_package(PackageType.DATA, bytes.fromhex("04 01 7b 7d"))
        self.assertEqual(conn.receive_data(HEARTBEAT + response + ACK), [])
        self.assertIs(conn.state, ClientState.HANDSHAKING)
        self.assertRaises(NotConnected, conn.request, ENTRY, {})
        self.assertRaises(NotConnected, conn.notify, ENTRY, {})
        conn.send_heartbeat()
        self.assertEqual(conn.data_to_send(), [])

    def test_request_compressed(self) -> None:
        """Routes in the dictionary go as codes (protocol.md §7.5), ids count from 1."""
        conn = working()
        self.assertEqual(conn.request(ENTRY, {}), 1)
        self.assertEqual(conn.data_to_send(), [bytes.fromhex("04 00 00 06 01 01 00 01 7b 7d")])
        conn._last_id = 299
        self.assertEqual(conn.request(ENTRY, {}), 300)
        self.assertEqual(conn.data_to_send(), [bytes.fromhex("04 00 00 07 01 ac 02 00 01 7b 7d")])
        self.assertEqual(conn.pending, 2)

    def test_request_uncompressed(self) -> None:
        """No dictionary: the route string (protocol.md §7.5)."""
        conn = working({"code": 200, "sys": {"heartbeat": 3}})
        self.assertEqual(conn.request(ENTRY, {}), 1)
        expected = bytes.fromhex("04 00 00 21 00 01 1c") + ENTRY.encode() + b"{}"
        self.assertEqual(conn.data_to_send(), [expected])

    def test_notify(self) -> None:
        """A route outside the dictionary stays a string (protocol.md §7.5)."""
        conn = working()
        conn.notify("chat.chatHandler.send", {"content": "hi"})
        expected = (
            bytes.fromhex("04 00 00 27 02 15") + b"chat.chatHandler.send" + b'{"content":"hi"}'
        )
        self.assertEqual(conn.data_to_send(), [expected])
        self.assertEqual(conn.pending, 0)

    def test_ids_wrap(self) -> None:
        """After 2**31-1 (the largest id upstream round-trips) ids wrap to 1, skipping ids
        still waiting for a response."""
        conn = working()
        self.assertEqual(conn.request(ENTRY, {}), 1)
        conn._last_id = 2**31 - 2
        self.assertEqual(conn.request(ENTRY, {}), 2**31 - 1)
        self.assertEqual(conn.request(ENTRY, {}), 2)  # 1 is pending
        conn.forget(1)
        conn._last_id = 2**31 - 1
        self.assertEqual(conn.request(ENTRY, {}), 1)

    def test_response(self) -> None:
        """protocol.md §7.5's response, by the id of the request."""
        conn = working()
        conn.request(ENTRY, {})
        data = bytes.fromhex("04 00 00 29 04 01") + b'{"code":200,"msg":"game server is ok."}'
        events = conn.receive_data(data)
        self.assertEqual(
            events, [ResponseReceived(1, ENTRY, {"code": 200, "msg": "game server is ok."})]
        )
        self.assertEqual(conn.pending, 0)
        # An id this side never sent (or forgot): route None, JSON.
        self.assertEqual(
            conn.receive_data(bytes.fromhex("04 00 00 04 04 09 7b 7d")),
            [ResponseReceived(9, None, {})],
        )

    def test_pushes(self) -> None:
        """Pushes by string and by code, batched in one WebSocket message (protocol.md §7.5)."""
        conn = working()
        batch = bytes.fromhex(
            "04 00 00 14 06 06 6f 6e 43 68 61 74 7b 22 6d 73 67 22 3a 22 68 69 22 7d"
            "04 00 00 0f 07 00 04 7b 22 6d 73 67 22 3a 22 79 6f 22 7d"
        )
        self.assertEqual(
            conn.receive_message(batch),
            [PushReceived("onChat", {"msg": "hi"}), PushReceived("onChat", {"msg": "yo"})],
        )

    def test_push_unknown_code(self) -> None:
        """A code the server never gave: a protocol violation (libpomelo2 reconnects)."""
        conn = working()
        push = encode_package(PackageType.DATA, bytes.fromhex("07 00 63") + b"{}")
        events = conn.receive_data(HEARTBEAT + push + HEARTBEAT)
        self.assertEqual(events[0], HeartbeatReceived())
        self.assertIsInstance(events[1], ProtocolViolated)
        self.assertEqual(len(events), 2)
        self.assertIs(conn.state, ClientState.CLOSED)
        self.assertEqual(conn.receive_data(HEARTBEAT), [])

    def test_server_request_refused(self) -> None:
        """A REQUEST or NOTIFY from the server breaks the protocol."""
        for flag in (0x00, 0x02):
            conn = working()
            data = encode_package(PackageType.DATA, bytes((flag, 1, 1)) + b"r{}")
            [event] = conn.receive_data(data)
            self.assertIsInstance(event, ProtocolViolated)

    def test_bad_framing(self) -> None:
        """Packages before a bad header are still reported, then the violation."""
        conn = working()
        [beat, violation] = conn.receive_data(HEARTBEAT + b"\x09\x00\x00\x00")
        self.assertEqual(beat, HeartbeatReceived())
        self.assertIsInstance(violation, ProtocolViolated)
        conn = working()
        [violation] = conn.receive_message(HEARTBEAT[:3])
        self.assertIsInstance(violation, ProtocolViolated)

    def test_max_package_size(self) -> None:
        conn = working({"code": 200, "sys": {}}, max_package_size=100)
        [event] = conn.receive_data(bytes.fromhex("04 00 00 65"))
        self.assertIsInstance(event, ProtocolViolated)

    def test_kick(self) -> None:
        """protocol.md §3.7's kick; a kick body that is not an object is the reason itself."""
        conn = working()
        kick = bytes.fromhex("05 00 00 11 7b 22 72 65 61 73 6f 6e 22 3a 22 6b 69 63 6b 22 7d")
        self.assertEqual(conn.receive_data(kick), [KickReceived("kick")])
        conn = working()
        self.assertEqual(
            conn.receive_data(encode_package(PackageType.KICK, b'"bye"')), [KickReceived("bye")]
        )

    def test_heartbeats(self) -> None:
        conn = working()
        conn.send_heartbeat()
        self.assertEqual(conn.data_to_send(), [HEARTBEAT])
        self.assertEqual(conn.receive_data(HEARTBEAT * 2), [HeartbeatReceived()] * 2)
        # A second answer, or an echoed ACK, is ignored.
        self.assertEqual(conn.receive_data(answer_package(SPEC_ANSWER) + ACK), [])
        conn.close()
        conn.send_heartbeat()
        self.assertEqual(conn.data_to_send(), [])

    def test_reference_answer_and_cache(self) -> None:
        """The reference server's full answer fills the cache; the next handshake sends both
        versions, and the reference answer to that (no dict, no protos) uses the cache."""
        full, cached = reference_answers()
        cache: dict[str, Any] = {}
        conn = working(full, cache=cache)
        self.assertEqual(conn.route_to_code[ENTRY], 4)
        self.assertEqual(conn.code_to_route[11], "onBroadcast")
        assert conn.protobuf is not None
        self.assertTrue(conn.protobuf.has_client(PROTO))
        self.assertEqual(cache["dict"]["version"], full["sys"]["dictVersion"])
        self.assertEqual(cache["protos"]["version"], full["sys"]["protos"]["version"])
        self.assertEqual(json.loads(json.dumps(cache)), cache)  # persistable as is

        again = PomeloClientConnection(cache=cache, client_type="js-websocket", version="0.0.1")
        body = again.handshake_body()
        self.assertEqual(
            body,
            {
                "sys": {
                    "type": "js-websocket",
                    "version": "0.0.1",
                    "dictVersion": full["sys"]["dictVersion"],
                    "protoVersion": full["sys"]["protos"]["version"],
                }
            },
        )
        # The exact request the reference server answered without dict and protos.
        cases = load_vectors("handshake.json")["cases"]
        sent = next(c for c in cases if "dictVersion" in c["request_body"])["request_body"]
        self.assertEqual(json.loads(sent), body)
        again.initiate()
        [event] = again.receive_data(answer_package(cached))
        self.assertEqual(event, HandshakeCompleted(cached, 3))
        self.assertEqual(again.route_to_code, conn.route_to_code)
        self.assertIsNotNone(again.protobuf)
        again.request(ENTRY, {})
        package = again.data_to_send()[-1]
        self.assertEqual(package, bytes.fromhex("04 00 00 06 01 01 00 04 7b 7d"))

    def test_omitted_without_cache(self) -> None:
        """The server leaves dict or protos out though this side has none cached."""
        for sys_ in ({"useDict": True}, {"useProto": True}):
            conn = PomeloClientConnection()
            conn.initiate()
            [event] = conn.receive_data(answer_package({"code": 200, "sys": sys_}))
            self.assertIsInstance(event, ProtocolViolated)

    def test_pinus_dict_only(self) -> None:
        """Pinus sends C{dict} without C{routeToCode}/C{codeToRoute}: it is enough."""
        conn = working({"code": 200, "sys": {"dict": {"a.b.c": 5, "onX": 6}, "useDict": True}})
        self.assertEqual(conn.code_to_route, {5: "a.b.c", 6: "onX"})
        self.assertEqual(
            conn.receive_data(encode_package(PackageType.DATA, bytes.fromhex("07 00 06 7b 7d"))),
            [PushReceived("onX", {})],
        )
        self.assertNotIn("dict", conn.cache)  # no version: nothing to cache by

    def test_protobuf_both_ways(self) -> None:
        """Requests with C{protos.client}, responses with C{protos.server} of the request's
        route, pushes with that of their own route; what the server's codec reads and
        writes."""
        full, _ = reference_answers()
        conn = working(full)
        server = Protobuf.from_parsed(
            full["sys"]["protos"]["client"], full["sys"]["protos"]["server"]
        )
        mid = conn.request(PROTO, PROTO_VALUE)
        [package] = conn.data_to_send()
        [decoded] = decode_packages(package)
        message = decode_message(decoded.body)
        self.assertEqual((message.type, message.id, message.route), (MessageType.REQUEST, mid, 7))
        self.assertEqual(server.decode_client(PROTO, message.body), PROTO_VALUE)

        body = server.encode_server(PROTO, PROTO_VALUE)
        response = encode_package(PackageType.DATA, bytes((0x04, mid)) + body)
        self.assertEqual(conn.receive_data(response), [ResponseReceived(mid, PROTO, PROTO_VALUE)])
        push = encode_package(PackageType.DATA, bytes.fromhex("07 00 07") + body)
        self.assertEqual(conn.receive_data(push), [PushReceived(PROTO, PROTO_VALUE)])

    def test_protobuf_errors(self) -> None:
        """A body that does not fit raises on send; one that does not decode is reported and
        the connection goes on."""
        full, _ = reference_answers()
        conn = working(full)
        self.assertRaises(ProtobufError, conn.request, PROTO, {"id": "x"})
        self.assertRaises(ProtobufError, conn.notify, PROTO, [1])
        self.assertEqual(conn.data_to_send(), [])
        mid = conn.request(PROTO, PROTO_VALUE)
        conn.data_to_send()
        bad = encode_package(PackageType.DATA, bytes((0x04, mid)) + b"\xff\xff")
        [event] = conn.receive_data(bad + HEARTBEAT)[:1]
        assert isinstance(event, MessageUndecodable)
        self.assertEqual((event.type, event.id, event.route), (MessageType.RESPONSE, mid, PROTO))
        self.assertIs(conn.state, ClientState.WORKING)

    def test_json_errors(self) -> None:
        conn = working()
        self.assertRaises(TypeError, conn.request, ENTRY, {"x": object()})
        self.assertEqual(conn.pending, 0)
        self.assertRaises(EncodeError, conn.request, "r" * 256, {})


class BackoffTests(SynchronousTestCase):
    def test_delays(self) -> None:
        policy = Backoff(initial=2, factor=2, maximum=30, jitter=0)
        self.assertEqual([policy.delay(n) for n in range(1, 7)], [2, 4, 8, 16, 30, 30])

    def test_long_outage(self) -> None:
        """Attempt 5000 of a client retrying forever: the maximum, not an OverflowError."""
        self.assertEqual(Backoff(jitter=0).delay(5000), 30.0)

    def test_jitter(self) -> None:
        policy = Backoff(initial=1, factor=3, maximum=5, jitter=0.5, random=lambda: 0.5)
        self.assertEqual([policy.delay(n) for n in (1, 2, 3)], [1.25, 3.75, 6.25])

    def test_defaults(self) -> None:
        """libpomelo2's: 2 s, doubling, at most 30 s, forever."""
        policy = Backoff()
        self.assertEqual((policy.initial, policy.factor, policy.maximum), (2.0, 2.0, 30.0))
        self.assertIsNone(policy.max_attempts)
        for n in range(1, 10):
            self.assertLessEqual(policy.delay(n), 33.0)


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
