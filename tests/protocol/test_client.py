"""Tests for L{pomelo_twisted.protocol.client}: the sans-IO client core L{PomeloClientConnection}
against the byte vectors of protocol.md and the reference Pomelo server's own handshake answers."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted._version import __version__
from pomelo_twisted.client import (
    CLIENT_TYPE,
    ClientState,
    HandshakeCompleted,
    HandshakeRefused,
    HeartbeatReceived,
    KickReceived,
    MessageUndecodable,
    NotConnected,
    PomeloClientConnection,
    ProtocolViolated,
    PushReceived,
    ResponseReceived,
)
from pomelo_twisted.protocol.errors import EncodeError, ProtobufError, ProtocolError
from pomelo_twisted.protocol.message import MessageType, decode_message
from pomelo_twisted.protocol.package import (
    PackageType,
    decode_packages,
    encode_package,
)
from pomelo_twisted.protocol.protobuf import Protobuf
from tests.support.client import (
    ACK,
    ENTRY,
    HEARTBEAT,
    PROTO,
    PROTO_VALUE,
    answer_package,
    reference_answers,
)
from tests.support.vectors import load_vectors

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
