"""Tests for the sans-IO core of a connection: L{pomelo_twisted.protocol.connection} (the state
machine of protocol.md §4) and L{pomelo_twisted.protocol.handshake} (the handshake's content, §5).

No reactor, no transport: bytes in, packages and bytes out.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.protocol import json_codec
from pomelo_twisted.protocol.connection import HEARTBEAT_PACKAGE, ConnectionState, PomeloConnection
from pomelo_twisted.protocol.dictionary import RouteDictionary
from pomelo_twisted.protocol.errors import PackageError, PackageTooLarge, ProtocolError
from pomelo_twisted.protocol.handshake import (
    CODE_BAD_HANDSHAKE,
    CODE_OK,
    CODE_OLD_CLIENT,
    build_sys,
    js_truthy,
    parse_request,
)
from pomelo_twisted.protocol.package import Package, PackageType, encode_package
from pomelo_twisted.protocol.protobuf import Protobuf
from tests.support.vectors import h

S = ConnectionState
P = PackageType


def package(ptype: PackageType, body: bytes = b"") -> Package:
    return Package(ptype, body)


def connection_in(state: ConnectionState) -> PomeloConnection:
    """A connection brought to C{state} through its own transitions."""
    conn = PomeloConnection(1024, 256)
    if state is S.INITED:
        return conn
    if state is S.CLOSED:
        conn.close()
        return conn
    assert conn.accept(package(P.HANDSHAKE, b"{}"))
    assert conn.handshake_response({"code": 200, "sys": {}}) is not None
    if state is S.WORKING:
        conn.ack()
    assert conn.state is state
    return conn


# §4's inbound table: which package types each state takes.
ACCEPTED = {
    S.INITED: {P.HANDSHAKE},
    S.WAIT_ACK: {P.HANDSHAKE_ACK},
    S.WORKING: {P.HEARTBEAT, P.DATA},
    S.CLOSED: set(),
}


class StateTableTests(SynchronousTestCase):
    """protocol.md §4: the inbound table, state by state."""

    def test_initial_state(self) -> None:
        conn = PomeloConnection(1024)
        self.assertIs(conn.state, S.INITED)
        self.assertFalse(conn.handshaking)
        self.assertFalse(conn.working)

    def test_state_values(self) -> None:
        """Upstream's numbering."""
        self.assertEqual(
            [s.value for s in (S.INITED, S.WAIT_ACK, S.WORKING, S.CLOSED)], [0, 1, 2, 3]
        )

    def test_inbound_table(self) -> None:
        for state, accepted in ACCEPTED.items():
            for ptype in (P.HANDSHAKE, P.HANDSHAKE_ACK, P.HEARTBEAT, P.DATA):
                conn = connection_in(state)
                self.assertEqual(conn.accept(package(ptype)), ptype in accepted, (state, ptype))
                self.assertIs(conn.state, state)  # accepting never changes the state

    def test_kick_from_client_is_protocol_error(self) -> None:
        """§3.2, §4: a KICK from the client disconnects, in every state."""
        for state in (S.INITED, S.WAIT_ACK, S.WORKING):
            conn = connection_in(state)
            self.assertRaises(ProtocolError, conn.accept, package(P.KICK, b'{"reason":"x"}'))

    def test_second_handshake_while_handshaking(self) -> None:
        """§4 note (REC): while a handshake is being answered, another one is ignored."""
        conn = PomeloConnection(1024)
        self.assertTrue(conn.accept(package(P.HANDSHAKE, b"{}")))
        self.assertTrue(conn.handshaking)
        self.assertIs(conn.state, S.INITED)
        self.assertFalse(conn.accept(package(P.HANDSHAKE, b"{}")))
        conn.handshake_response({"code": 200})
        self.assertFalse(conn.handshaking)
        self.assertFalse(conn.accept(package(P.HANDSHAKE, b"{}")))

    def test_handshake_size_limit(self) -> None:
        conn = PomeloConnection(1024, 16)
        self.assertEqual(conn.max_handshake_size, 16)
        self.assertTrue(conn.accept(package(P.HANDSHAKE, b"x" * 16)))
        conn = PomeloConnection(1024, 16)
        e = self.assertRaises(PackageTooLarge, conn.accept, package(P.HANDSHAKE, b"x" * 17))
        self.assertEqual((e.length, e.maximum), (17, 16))
        self.assertIsInstance(e, ProtocolError)

    def test_handshake_limit_capped_by_package_limit(self) -> None:
        self.assertEqual(PomeloConnection(100, 1000).max_handshake_size, 100)
        self.assertEqual(PomeloConnection(100).max_handshake_size, 100)

    def test_data_size_not_limited_by_handshake_limit(self) -> None:
        conn = connection_in(S.WORKING)
        self.assertTrue(conn.accept(package(P.DATA, b"x" * 1000)))


class InboundTests(SynchronousTestCase):
    """Bytes in: the packages, in order, judged one at a time."""

    def test_receive_data(self) -> None:
        conn = PomeloConnection(1024)
        stream = encode_package(P.HANDSHAKE, b'{"sys":1}') + h("02 00 00 00")
        self.assertEqual(
            conn.receive_data(stream),
            [package(P.HANDSHAKE, b'{"sys":1}'), package(P.HANDSHAKE_ACK)],
        )

    def test_receive_data_split(self) -> None:
        """§3.7: the header split example gives one HANDSHAKE."""
        conn = PomeloConnection(1024)
        self.assertEqual(conn.receive_data(h("01 00")), [])
        self.assertEqual(
            conn.receive_data(h("00 09 7b 22 73 79 73 22 3a 31 7d")),
            [package(P.HANDSHAKE, b'{"sys":1}')],
        )

    def test_zero_length_at_once(self) -> None:
        """§20 item 3."""
        self.assertEqual(
            PomeloConnection(1024).receive_data(h("02 00 00 00")), [package(P.HANDSHAKE_ACK)]
        )

    def test_bad_type_raises(self) -> None:
        for header in ("00 00 00 00", "06 00 00 00", "ff 00 00 00"):
            self.assertRaises(PackageError, PomeloConnection(1024).receive_data, h(header))

    def test_too_large_raises_at_header(self) -> None:
        conn = PomeloConnection(100)
        self.assertRaises(PackageTooLarge, conn.receive_data, h("04 00 00 65"))

    def test_receive_message(self) -> None:
        conn = PomeloConnection(1024)
        self.assertEqual(
            conn.receive_message(h("02 00 00 00 03 00 00 00")),
            [package(P.HANDSHAKE_ACK), package(P.HEARTBEAT)],
        )
        self.assertRaises(PackageError, conn.receive_message, h("01 00 00 09 7b"))
        self.assertRaises(PackageError, conn.receive_message, h("02 00 00 00 02"))
        self.assertRaises(
            PackageTooLarge, PomeloConnection(4).receive_message, h("04 00 00 05 00 00 00 00 00")
        )

    def test_ack_then_data_judged_in_order(self) -> None:
        """§3.4: packages reach the state machine one at a time, so DATA right behind the ACK
        (in one chunk) is judged in C{WORKING}."""
        conn = connection_in(S.WAIT_ACK)
        ack, data = conn.receive_data(h("02 00 00 00 04 00 00 02 02 00"))
        self.assertTrue(conn.accept(ack))
        conn.ack()
        self.assertTrue(conn.accept(data))

    @given(st.binary(max_size=64), st.booleans())
    def test_any_bytes_only_protocol_errors(self, data: bytes, ws: bool) -> None:
        """Whatever arrives, the connection raises L{ProtocolError} or returns packages."""
        conn = PomeloConnection(64, 32)
        try:
            packages = conn.receive_message(data) if ws else conn.receive_data(data)
            for p in packages:
                conn.accept(p)
        except ProtocolError:
            pass


class OutboundTests(SynchronousTestCase):
    """Transitions and outbound packages, by state (§4's outbound table)."""

    def test_handshake_response(self) -> None:
        conn = connection_in(S.INITED)
        conn.accept(package(P.HANDSHAKE, b"{}"))
        data = conn.handshake_response({"code": 200, "sys": {"heartbeat": 3}})
        self.assertEqual(
            data,
            h(
                "01 00 00 22 7b 22 63 6f 64 65 22 3a 32 30"
                " 30 2c 22 73 79 73 22 3a 7b 22 68 65 61 72"
                " 74 62 65 61 74 22 3a 33 7d 7d"
            ),
        )
        self.assertIs(conn.state, S.WAIT_ACK)

    def test_handshake_response_only_in_inited(self) -> None:
        """A success answer is never sent twice, nor after the close (§20 item 18)."""
        for state in (S.WAIT_ACK, S.WORKING, S.CLOSED):
            conn = connection_in(state)
            self.assertIsNone(conn.handshake_response({"code": 200}))
            self.assertIs(conn.state, state)

    def test_handshake_response_not_encodable(self) -> None:
        """An answer that cannot be encoded raises and leaves the state alone, so that the
        caller can still send the 500 answer from C{INITED}."""
        conn = connection_in(S.INITED)
        conn.accept(package(P.HANDSHAKE, b"{}"))
        self.assertRaises(TypeError, conn.handshake_response, {"user": object()})
        self.assertIs(conn.state, S.INITED)
        self.assertEqual(
            conn.handshake_error(500), h("01 00 00 0c 7b 22 63 6f 64 65 22 3a 35 30 30 7d")
        )

    def test_handshake_errors(self) -> None:
        """§5.5: sent in any state but C{CLOSED}; the state does not change."""
        for state in (S.INITED, S.WAIT_ACK, S.WORKING):
            conn = connection_in(state)
            self.assertEqual(
                conn.handshake_error(500), h("01 00 00 0c 7b 22 63 6f 64 65 22 3a 35 30 30 7d")
            )
            self.assertEqual(
                conn.handshake_error(501), h("01 00 00 0c 7b 22 63 6f 64 65 22 3a 35 30 31 7d")
            )
            self.assertIs(conn.state, state)
        self.assertIsNone(connection_in(S.CLOSED).handshake_error(500))

    def test_ack(self) -> None:
        conn = connection_in(S.WAIT_ACK)
        conn.ack()
        self.assertIs(conn.state, S.WORKING)
        self.assertTrue(conn.working)

    def test_ack_outside_wait_ack(self) -> None:
        for state in (S.INITED, S.WORKING, S.CLOSED):
            self.assertRaises(PackageError, connection_in(state).ack)

    def test_heartbeat(self) -> None:
        self.assertEqual(HEARTBEAT_PACKAGE, h("03 00 00 00"))
        self.assertEqual(connection_in(S.WORKING).heartbeat(), h("03 00 00 00"))
        for state in (S.INITED, S.WAIT_ACK, S.CLOSED):
            self.assertIsNone(connection_in(state).heartbeat())

    def test_kick(self) -> None:
        """§11: the KICK package, only in C{WORKING} (§20 item 37)."""
        conn = connection_in(S.WORKING)
        self.assertEqual(
            conn.kick("kick"), h("05 00 00 11 7b 22 72 65 61 73 6f 6e 22 3a 22 6b 69 63 6b 22 7d")
        )
        self.assertEqual(
            conn.kick("attack"),
            h("05 00 00 13 7b 22 72 65 61 73 6f 6e 22 3a 22 61 74 74 61 63 6b 22 7d"),
        )
        self.assertEqual(conn.kick(""), encode_package(P.KICK, b'{"reason":""}'))
        self.assertEqual(conn.kick("é"), encode_package(P.KICK, '{"reason":"é"}'.encode()))
        for state in (S.INITED, S.WAIT_ACK, S.CLOSED):
            self.assertIsNone(connection_in(state).kick("kick"))

    def test_close_once(self) -> None:
        """The disconnect happens exactly once per connection."""
        for state in (S.INITED, S.WAIT_ACK, S.WORKING):
            conn = connection_in(state)
            self.assertTrue(conn.close())
            self.assertIs(conn.state, S.CLOSED)
            self.assertFalse(conn.close())
            self.assertIs(conn.state, S.CLOSED)

    def test_nothing_accepted_after_close(self) -> None:
        conn = connection_in(S.WORKING)
        conn.close()
        for ptype in (P.HANDSHAKE, P.HANDSHAKE_ACK, P.HEARTBEAT, P.DATA):
            self.assertFalse(conn.accept(package(ptype)))


# --- handshake.py -----------------------------------------------------------------------------


class JSTruthyTests(SynchronousTestCase):
    def test_falsy(self) -> None:
        for value in (None, False, 0, 0.0, -0.0, float("nan"), ""):
            self.assertFalse(js_truthy(value), value)

    def test_truthy(self) -> None:
        for value in (True, 1, -1, 0.5, "0", " ", "false", {}, [], {"a": 1}, [0], float("inf")):
            self.assertTrue(js_truthy(value), value)


class ParseRequestTests(SynchronousTestCase):
    """§5.2 step 1: anything that is not a JSON object counts as C{{}}."""

    def test_object(self) -> None:
        self.assertEqual(parse_request(b'{"sys":1}'), {"sys": 1})
        self.assertEqual(
            parse_request(
                b'{"sys":{"type":"js-websocket","version":"0.0.1","rsa":{},"protoVersion":0},"user":{}}'
            ),
            {
                "sys": {"type": "js-websocket", "version": "0.0.1", "rsa": {}, "protoVersion": 0},
                "user": {},
            },
        )

    def test_not_an_object(self) -> None:
        for body in (
            b"",
            b"null",
            b"1",
            b"[]",
            b'"x"',
            b"true",
            b"{not json",
            b"\xff\xfe",
            b"{}}",
            b" ",
        ):
            self.assertEqual(parse_request(body), {}, body)

    def test_non_ascii(self) -> None:
        self.assertEqual(parse_request('{"user":"世界"}'.encode()), {"user": "世界"})


class BuildSysTests(SynchronousTestCase):
    """§5.2 step 4, §5.3, §5.4: the C{sys} object."""

    def setUp(self) -> None:
        self.dictionary = RouteDictionary(
            [
                "connector.entryHandler.entry",
                "connector.entryHandler.publish",
                "connector.entryHandler.subscribe",
            ],
            ["onChat"],
        )
        # The protos of §9.3.1, restricted to connector.entryHandler.entry.
        self.protobuf = Protobuf(
            {
                "connector.entryHandler.entry": {
                    "required string username": 1,
                    "optional uInt32 rid": 2,
                }
            },
            {"connector.entryHandler.entry": {"required uInt32 code": 1, "optional string msg": 2}},
        )

    def test_full_example(self) -> None:
        """§5.3's full example, byte for byte (953-byte body, header C{01 00 03 b9})."""
        self.assertEqual(self.dictionary.version, "DhrOF72b3vNmhiDzNTXBTw==")
        self.assertEqual(self.protobuf.version, "ITvcUExPBWuzYlklNpWXrw==")
        sys = build_sys(1, 3, self.dictionary, self.protobuf)
        body = json_codec.dumps({"code": CODE_OK, "sys": sys})
        expected = (
            b'{"code":200,"sys":{"heartbeat":3,"dict":{"connector.entryHandler.entry":1,'
            b'"connector.entryHandler.publish":2,"connector.entryHandler.subscribe":3,"onChat":4},'
            b'"routeToCode":{"connector.entryHandler.entry":1,"connector.entryHandler.publish":2,'
            b'"connector.entryHandler.subscribe":3,"onChat":4},"codeToRoute":{"1":'
            b'"connector.entryHandler.entry","2":"connector.entryHandler.publish","3":'
            b'"connector.entryHandler.subscribe","4":"onChat"},"dictVersion":"DhrOF72b3vNmhiDzNTXBTw==",'
            b'"useDict":true,"protos":{"server":{"connector.entryHandler.entry":{"code":{"option":'
            b'"required","type":"uInt32","tag":1},"msg":{"option":"optional","type":"string","tag":2},'
            b'"__messages":{},"__tags":{"1":"code","2":"msg"}}},"client":{"connector.entryHandler.entry":'
            b'{"username":{"option":"required","type":"string","tag":1},"rid":{"option":"optional",'
            b'"type":"uInt32","tag":2},"__messages":{},"__tags":{"1":"username","2":"rid"}}},'
            b'"version":"ITvcUExPBWuzYlklNpWXrw=="},"useProto":true}}'
        )
        self.assertEqual(len(expected), 953)
        self.assertEqual(body, expected)
        self.assertEqual(encode_package(P.HANDSHAKE, body)[:4], h("01 00 03 b9"))

    def test_key_order(self) -> None:
        sys = build_sys({}, 3, self.dictionary, self.protobuf)
        self.assertEqual(
            list(sys),
            [
                "heartbeat",
                "dict",
                "routeToCode",
                "codeToRoute",
                "dictVersion",
                "useDict",
                "protos",
                "useProto",
            ],
        )
        self.assertEqual(list(sys["protos"]), ["server", "client", "version"])

    def test_heartbeat(self) -> None:
        self.assertEqual(build_sys({}, 3, None, None), {"heartbeat": 3})
        self.assertEqual(build_sys({}, 0, None, None), {})

    def test_heartbeat_always_integer(self) -> None:
        """§5.3: a positive integer; C{3.0} must not go out as C{3.0}."""
        sys = build_sys({}, 3.0, None, None)  # type: ignore[arg-type]
        self.assertEqual(json_codec.dumps(sys), b'{"heartbeat":3}')

    def test_dict_group_whole(self) -> None:
        """§5.4: the four dict keys come together or not at all."""
        version = self.dictionary.version
        keys = ("dict", "routeToCode", "codeToRoute", "dictVersion")
        for client_sys, present in (
            ({}, True),
            ({"dictVersion": None}, True),
            ({"dictVersion": ""}, True),
            ({"dictVersion": 0}, True),
            ({"dictVersion": "other"}, True),
            ({"dictVersion": version}, False),
            ({"dictVersion": [version]}, True),
            (1, True),
            ("x", True),
        ):
            sys = build_sys(client_sys, 3, self.dictionary, None)
            self.assertEqual([k in sys for k in keys], [present] * 4, client_sys)
            self.assertIs(sys["useDict"], True)
            self.assertNotIn("useProto", sys)

    def test_dict_content(self) -> None:
        sys = build_sys({}, 0, self.dictionary, None)
        self.assertEqual(sys["dict"], sys["routeToCode"])
        self.assertEqual(sys["dictVersion"], self.dictionary.version)
        body = json.loads(json_codec.dumps(sys))
        self.assertEqual(
            body["codeToRoute"],
            {
                "1": "connector.entryHandler.entry",
                "2": "connector.entryHandler.publish",
                "3": "connector.entryHandler.subscribe",
                "4": "onChat",
            },
        )

    def test_protos_group_whole(self) -> None:
        version = self.protobuf.version
        for client_sys, present in (
            ({}, True),
            ({"protoVersion": 0}, True),
            ({"protoVersion": ""}, True),
            ({"protoVersion": None}, True),
            ({"protoVersion": "old"}, True),
            ({"protoVersion": version}, False),
        ):
            sys = build_sys(client_sys, 3, None, self.protobuf)
            self.assertEqual("protos" in sys, present, client_sys)
            if present:
                self.assertEqual(
                    sys["protos"],
                    {
                        "server": self.protobuf.server,
                        "client": self.protobuf.client,
                        "version": version,
                    },
                )
            self.assertIs(sys["useProto"], True)
            self.assertNotIn("useDict", sys)

    def test_versions_independent(self) -> None:
        sys = build_sys({"dictVersion": self.dictionary.version}, 3, self.dictionary, self.protobuf)
        self.assertEqual(list(sys), ["heartbeat", "useDict", "protos", "useProto"])
        sys = build_sys({"protoVersion": self.protobuf.version}, 3, self.dictionary, self.protobuf)
        self.assertEqual(
            list(sys),
            [
                "heartbeat",
                "dict",
                "routeToCode",
                "codeToRoute",
                "dictVersion",
                "useDict",
                "useProto",
            ],
        )

    def test_matching_versions_example(self) -> None:
        """§5.3: the 65-byte example."""
        sys = build_sys(
            {"dictVersion": self.dictionary.version, "protoVersion": self.protobuf.version},
            3,
            self.dictionary,
            self.protobuf,
        )
        self.assertEqual(
            encode_package(P.HANDSHAKE, json_codec.dumps({"code": 200, "sys": sys})),
            h(
                "01 00 00 41 7b 22 63 6f 64 65 22 3a 32 30"
                " 30 2c 22 73 79 73 22 3a 7b 22 68 65 61 72"
                " 74 62 65 61 74 22 3a 33 2c 22 75 73 65 44"
                " 69 63 74 22 3a 74 72 75 65 2c 22 75 73 65"
                " 50 72 6f 74 6f 22 3a 74 72 75 65 7d 7d"
            ),
        )

    def test_no_proto_files(self) -> None:
        """§5.4 note: no proto files: version C{""}, and every client gets the empty protos."""
        empty = Protobuf()
        self.assertEqual(empty.version, "")
        for client_sys in ({}, {"protoVersion": ""}, {"protoVersion": 0}):
            sys = build_sys(client_sys, 0, None, empty)
            self.assertEqual(
                sys, {"protos": {"server": {}, "client": {}, "version": ""}, "useProto": True}
            )

    def test_codes(self) -> None:
        self.assertEqual((CODE_OK, CODE_BAD_HANDSHAKE, CODE_OLD_CLIENT), (200, 500, 501))

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
            max_leaves=8,
        )
    )
    def test_any_client_sys(self, client_sys: Any) -> None:
        """Whatever the client put in C{sys}, the answer is built and encodes."""
        sys = build_sys(client_sys, 3, self.dictionary, self.protobuf)
        json_codec.dumps(sys)
        self.assertIs(sys["useDict"], True)
        self.assertIs(sys["useProto"], True)
