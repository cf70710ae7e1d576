"""The handshake through the connector (protocol.md §5, §20 items 11-18): the real Pomelo
server's answers byte for byte, bad handshakes, the user hook, a second handshake, and which of
dict and protos go into the answer.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred

from pomelo_twisted.demo import make_app
from pomelo_twisted.protocol.connection import ConnectionState
from pomelo_twisted.protocol.package import PackageType, encode_package
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.services.application import HandlerError
from tests.support.connector import (
    ACK,
    ERROR_500,
    ERROR_501,
    HANDSHAKE_1,
    Client,
    ConnectorTestCase,
    make_test_app,
    packages,
)
from tests.support.vectors import h, load_vectors


class HandshakeVectorTests(ConnectorTestCase):
    """The real Pomelo server's answers for the demo app (tests/vectors/handshake.json)."""

    def test_vectors_byte_identical(self) -> None:
        cases = load_vectors("handshake.json")["cases"]
        self.assertTrue(cases)
        for case in cases:
            for ws in (False, True):
                self.connector()
                client = Client(self.conn, self.clock, ws=ws)
                written = client.handshake(case["request_body"].encode("utf-8"))
                self.assertEqual(written.hex(), case["response_hex"], case["request_body"])

    def test_sys1(self) -> None:
        """§20 item 11: C{{"sys":1}} is accepted with code 200 (§22 item 6)."""
        self.connector()
        written = self.client().handshake(b'{"sys":1}')
        expected = load_vectors("handshake.json")["cases"][0]
        self.assertEqual(expected["request_body"], '{"sys":1}')
        self.assertEqual(written, bytes.fromhex(expected["response_hex"]))

    def test_heartbeat_only(self) -> None:
        """§5.3: heartbeat 3, no dict or protos: the 34-byte example."""
        self.connector(heartbeat=3, use_dict=False, use_protobuf=False)
        self.assertEqual(
            self.client().handshake(),
            h(
                "01 00 00 22 7b 22 63 6f 64 65 22 3a 32 30 30 2c 22 73 79 73 22 3a 7b 22 68 65 61"
                " 72 74 62 65 61 74 22 3a 33 7d 7d"
            ),
        )

    def test_nothing_configured(self) -> None:
        """§5.3: the 21-byte example."""
        self.connector(heartbeat=0, use_dict=False, use_protobuf=False)
        self.assertEqual(
            self.client().handshake(),
            h("01 00 00 15 7b 22 63 6f 64 65 22 3a 32 30 30 2c 22 73 79 73 22 3a 7b 7d 7d"),
        )

    def test_heartbeat_is_integer(self) -> None:
        """§20 item 16: C{heartbeat} is an integer number of seconds on the wire, even when
        configured as a float."""
        for hb in (3, 3.0, 1, 60):
            self.connector(heartbeat=hb, use_dict=False, use_protobuf=False)
            written = self.client().handshake()
            answer = json.loads(written[4:])
            self.assertEqual(answer["sys"]["heartbeat"], int(hb))
            self.assertIs(type(answer["sys"]["heartbeat"]), int)
            self.assertIn(b'"heartbeat":%d}' % int(hb), written)

    def test_fractional_heartbeat_refused(self) -> None:
        self.assertRaises(ValueError, ConnectorConfig, heartbeat=0.5)
        self.assertRaises(ValueError, ConnectorConfig, heartbeat=-1)


class HandshakeErrorTests(ConnectorTestCase):
    """§5.2 steps 1-3, §5.5: bad handshakes get C{{"code":500}} then a graceful close."""

    def assertRejected(self, body: bytes, answer: bytes = ERROR_500) -> Client:
        self.connector()
        client = self.client()
        client.feed(encode_package(PackageType.HANDSHAKE, body))
        # The answer is flushed before the close, then the close is graceful.
        self.assertEqual(client.take(), [answer], body)
        self.assertEqual(client.transport.lost, 1)
        self.assertEqual(client.transport.aborted, 0)
        self.assertEqual(client.turn(), [])
        return client

    def test_empty_object(self) -> None:
        self.assertClosedAndClean(self.assertRejected(b"{}"))

    def test_null(self) -> None:
        self.assertClosedAndClean(self.assertRejected(b"null"))

    def test_empty_body(self) -> None:
        """C{01 00 00 00}."""
        self.assertClosedAndClean(self.assertRejected(b""))

    def test_not_json(self) -> None:
        for body in (b"{not json", b"\xff\xfe", b'{"sys":1', b"sys"):
            self.assertClosedAndClean(self.assertRejected(body))

    def test_not_an_object(self) -> None:
        for body in (b"[1]", b"1", b'"sys"', b"true"):
            self.assertClosedAndClean(self.assertRejected(body))

    def test_falsy_sys(self) -> None:
        for body in (
            b'{"sys":0}',
            b'{"sys":false}',
            b'{"sys":""}',
            b'{"sys":null}',
            b'{"user":{}}',
        ):
            self.assertClosedAndClean(self.assertRejected(body))

    def test_truthy_sys_forms(self) -> None:
        """JavaScript truthiness: C{{}}, C{[]} and C{"0"} are truthy."""
        for body in (b'{"sys":{}}', b'{"sys":[]}', b'{"sys":"0"}', b'{"sys":true}'):
            self.connector()
            self.assertIn(b'"code":200', self.client().handshake(body))

    def test_abort_after_kick_close_timeout(self) -> None:
        """If the peer never goes, the graceful close turns into an abort."""
        client = self.assertRejected(b"{}")
        self.clock.advance(self.conn.config.kick_close_timeout - 0.1)
        self.assertEqual(client.transport.aborted, 0)
        self.clock.advance(0.1)
        self.assertEqual(client.transport.aborted, 1)
        client.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.conn.sockets, set())

    def test_connection_lost_cancels_abort(self) -> None:
        client = self.assertRejected(b"{}")
        client.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(client.transport.aborted, 0)

    def test_check_client_false(self) -> None:
        """§20 item 13: C{checkClient} false gives C{{"code":501}}, then a close."""
        app = make_app()
        seen: list[Any] = []

        def check(ctype: Any, version: Any) -> bool:
            seen.append((ctype, version))
            return False

        app.check_client = check
        self.connector(app)
        client = self.client()
        written = client.handshake(b'{"sys":{"type":"js-websocket","version":"0.0.1"}}')
        self.assertEqual(written, ERROR_501)
        self.assertEqual(seen, [("js-websocket", "0.0.1")])
        self.assertClosedAndClean(client)

    def test_check_client_true(self) -> None:
        app = make_app()
        app.check_client = lambda ctype, version: version == "0.3.0"
        self.connector(app)
        client = self.client()
        self.assertIn(b'"code":200', client.handshake(b'{"sys":{"type":"u","version":"0.3.0"}}'))

    def test_check_client_raises(self) -> None:
        app = make_app()

        def check(ctype: Any, version: Any) -> bool:
            raise RuntimeError("bad hook")

        app.check_client = check
        self.connector(app)
        client = self.client()
        self.assertEqual(client.handshake(b'{"sys":1}'), ERROR_500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertClosedAndClean(client)

    def test_oversized_handshake(self) -> None:
        """A handshake over C{max_handshake_size} is a protocol error: abort, no answer."""
        self.connector(max_handshake_size=32)
        client = self.client()
        client.feed(encode_package(PackageType.HANDSHAKE, b'{"sys":1,"user":"' + b"x" * 32 + b'"}'))
        self.assertEqual(client.turn(), [])
        self.assertClosedAndClean(client, aborted=True)


class HandshakeHookTests(ConnectorTestCase):
    """§5.6, §20 item 14: the user hook's result is the C{user} field; its failure is 500."""

    def hooked(self, hook: Any) -> Client:
        app = make_app()
        app.handshake_hook = hook
        self.connector(app, heartbeat=3, use_dict=False, use_protobuf=False)
        return self.client()

    def test_plain_value(self) -> None:
        """§5.3: the 55-byte example."""
        seen: list[Any] = []

        def hook(msg: Any, session: Any) -> Any:
            seen.append((msg, session))
            return {"token": "x"}

        client = self.hooked(hook)
        written = client.handshake(b'{"sys":{"type":"t"},"user":{"name":"n"}}')
        self.assertEqual(
            written,
            encode_package(
                PackageType.HANDSHAKE, b'{"code":200,"sys":{"heartbeat":3},"user":{"token":"x"}}'
            ),
        )
        self.assertEqual(len(written), 4 + 55)
        [(msg, session)] = seen
        self.assertEqual(msg, {"sys": {"type": "t"}, "user": {"name": "n"}})
        self.assertIs(session, client.session)

    def test_deferred_fired_later(self) -> None:
        d: Deferred[Any] = Deferred()
        client = self.hooked(lambda msg, session: d)
        self.assertEqual(client.handshake(), b"")
        self.assertIs(client.state, ConnectionState.INITED)
        d.callback({"token": "later"})
        self.assertEqual(
            b"".join(client.turn()),
            encode_package(
                PackageType.HANDSHAKE,
                b'{"code":200,"sys":{"heartbeat":3},"user":{"token":"later"}}',
            ),
        )
        self.assertIs(client.state, ConnectionState.WAIT_ACK)

    def test_coroutine(self) -> None:
        d: Deferred[Any] = Deferred()

        async def hook(msg: Any, session: Any) -> Any:
            value = await d
            return {"n": value}

        client = self.hooked(hook)
        self.assertEqual(client.handshake(), b"")
        d.callback(7)
        self.assertEqual(
            b"".join(client.turn()),
            encode_package(
                PackageType.HANDSHAKE, b'{"code":200,"sys":{"heartbeat":3},"user":{"n":7}}'
            ),
        )

    def test_hook_raises(self) -> None:
        def hook(msg: Any, session: Any) -> Any:
            raise KeyError("nope")

        client = self.hooked(hook)
        self.assertEqual(client.handshake(), ERROR_500)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertClosedAndClean(client)

    def test_hook_fails_later(self) -> None:
        d: Deferred[Any] = Deferred()
        client = self.hooked(lambda msg, session: d)
        self.assertEqual(client.handshake(), b"")
        d.errback(KeyError("later"))
        self.assertEqual(b"".join(client.transport.writes), ERROR_500)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertClosedAndClean(client)

    def test_hook_handler_error_fails(self) -> None:
        async def hook(msg: Any, session: Any) -> Any:
            raise HandlerError({"code": 401})

        client = self.hooked(hook)
        self.assertEqual(client.handshake(), ERROR_500)
        self.flushLoggedErrors(HandlerError)
        self.assertClosedAndClean(client)

    def test_falsy_values_give_no_user(self) -> None:
        for value in (None, 0, "", False):
            client = self.hooked(lambda msg, session, value=value: value)
            self.assertEqual(
                client.handshake(),
                encode_package(PackageType.HANDSHAKE, b'{"code":200,"sys":{"heartbeat":3}}'),
                value,
            )

    def test_truthy_values_give_user(self) -> None:
        """JavaScript truthiness again: C{{}} and C{[]} are truthy, so they are sent."""
        for value, text in (({}, b"{}"), ([], b"[]"), (1, b"1"), ("s", b'"s"')):
            client = self.hooked(lambda msg, session, value=value: value)
            self.assertEqual(
                client.handshake(),
                encode_package(
                    PackageType.HANDSHAKE,
                    b'{"code":200,"sys":{"heartbeat":3},"user":' + text + b"}",
                ),
            )

    def test_hook_value_not_serialisable(self) -> None:
        client = self.hooked(lambda msg, session: {"x": object()})
        self.assertEqual(client.handshake(), ERROR_500)
        self.flushLoggedErrors(TypeError)
        self.assertClosedAndClean(client)

    def test_hook_not_called_for_bad_handshake(self) -> None:
        calls: list[Any] = []
        client = self.hooked(lambda msg, session: calls.append(msg))
        self.assertEqual(client.handshake(b'{"sys":0}'), ERROR_500)
        self.assertEqual(calls, [])

    def test_second_handshake_while_hook_pending(self) -> None:
        """§4 note, §20 items 17-18: one hook call, one answer."""
        pending: list[Deferred[Any]] = []

        def hook(msg: Any, session: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            return d

        client = self.hooked(hook)
        self.assertEqual(client.handshake(), b"")
        self.assertEqual(client.handshake(), b"")
        self.assertEqual(len(pending), 1)
        self.assertEqual(self.conn.session_service.sessions_count, 1)
        pending[0].callback({"a": 1})
        written = client.turn()
        self.assertEqual(len(written), 1)
        self.assertEqual(len(packages(written[0])), 1)
        self.assertEqual(client.handshake(), b"")

    def test_connection_lost_while_hook_pending(self) -> None:
        d: Deferred[Any] = Deferred()
        client = self.hooked(lambda msg, session: d)
        client.handshake()
        client.lose()
        self.assertEqual(self.conn.session_service.sessions_count, 0)
        d.callback({"late": True})
        self.assertEqual(client.turn(), [])
        self.assertEqual(client.transport.writes, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SecondHandshakeTests(ConnectorTestCase):
    def test_second_handshake_ignored(self) -> None:
        """§20 item 17: in C{WAIT_ACK} and C{WORKING}, a handshake gets no answer."""
        self.connector()
        client = self.client()
        self.assertIn(b'"code":200', client.handshake())
        self.assertEqual(client.handshake(), b"")
        self.assertEqual(client.handshake(b"{}"), b"")  # not even an error answer
        self.assertIs(client.state, ConnectionState.WAIT_ACK)
        client.exchange(ACK)
        self.assertEqual(client.handshake(), b"")
        self.assertIs(client.state, ConnectionState.WORKING)
        self.assertEqual(self.conn.session_service.sessions_count, 1)

    def test_two_handshakes_in_one_chunk(self) -> None:
        self.connector()
        client = self.client()
        written = client.exchange(HANDSHAKE_1 + HANDSHAKE_1)
        self.assertEqual([p.type for p in packages(written)], [PackageType.HANDSHAKE])


class InclusionRuleTests(ConnectorTestCase):
    """§5.4, §20 item 15: dict and protos, each group whole or not at all."""

    DICT_KEYS = ("dict", "routeToCode", "codeToRoute", "dictVersion")

    def answer(self, sys: Any, **config: Any) -> dict[str, Any]:
        self.connector(**config)
        written = self.client().handshake(json.dumps({"sys": sys}).encode())
        self.assertEqual(written[0], 1)
        return json.loads(written[4:])["sys"]

    def assertDictGroup(self, sys: dict[str, Any], present: bool) -> None:
        for key in self.DICT_KEYS:
            self.assertEqual(key in sys, present, key)
        if present:
            d = self.conn.dictionary
            assert d is not None
            self.assertEqual(sys["dict"], d.routeToCode)
            self.assertEqual(sys["routeToCode"], d.routeToCode)
            self.assertEqual(sys["codeToRoute"], {str(k): v for k, v in d.codeToRoute.items()})
            self.assertEqual(sys["dictVersion"], d.version)

    def assertProtosGroup(self, sys: dict[str, Any], present: bool) -> None:
        self.assertEqual("protos" in sys, present)
        if present:
            p = self.conn.protobuf
            assert p is not None
            self.assertEqual(list(sys["protos"]), ["server", "client", "version"])
            self.assertEqual(sys["protos"]["version"], p.version)

    def versions(self) -> tuple[str, str]:
        self.connector()
        assert self.conn.dictionary is not None and self.conn.protobuf is not None
        return self.conn.dictionary.version, self.conn.protobuf.version

    def test_no_versions_sent(self) -> None:
        """JS and C# clients send no C{dictVersion}: everything is sent."""
        sys = self.answer({"type": "unity-socket", "version": "0.3.0"})
        self.assertEqual(list(sys), ["heartbeat", *self.DICT_KEYS, "useDict", "protos", "useProto"])
        self.assertDictGroup(sys, True)
        self.assertProtosGroup(sys, True)
        self.assertIs(sys["useDict"], True)
        self.assertIs(sys["useProto"], True)

    def test_matching_versions(self) -> None:
        dict_version, proto_version = self.versions()
        sys = self.answer({"dictVersion": dict_version, "protoVersion": proto_version})
        self.assertEqual(sys, {"heartbeat": 3, "useDict": True, "useProto": True})

    def test_matching_versions_example_bytes(self) -> None:
        """§5.3: the 65-byte example."""
        dict_version, proto_version = self.versions()
        self.connector()
        body = json.dumps({"sys": {"dictVersion": dict_version, "protoVersion": proto_version}})
        self.assertEqual(
            self.client().handshake(body.encode()),
            h(
                "01 00 00 41 7b 22 63 6f 64 65 22 3a 32 30 30 2c 22 73 79 73 22 3a 7b 22 68 65 61"
                " 72 74 62 65 61 74 22 3a 33 2c 22 75 73 65 44 69 63 74 22 3a 74 72 75 65 2c 22 75"
                " 73 65 50 72 6f 74 6f 22 3a 74 72 75 65 7d 7d"
            ),
        )

    def test_different_versions(self) -> None:
        sys = self.answer({"dictVersion": "old", "protoVersion": "old"})
        self.assertDictGroup(sys, True)
        self.assertProtosGroup(sys, True)

    def test_dict_matches_protos_differ(self) -> None:
        dict_version, _ = self.versions()
        sys = self.answer({"dictVersion": dict_version, "protoVersion": 0})
        self.assertDictGroup(sys, False)
        self.assertProtosGroup(sys, True)
        self.assertIs(sys["useDict"], True)

    def test_protos_match_dict_differs(self) -> None:
        _, proto_version = self.versions()
        sys = self.answer({"protoVersion": proto_version, "dictVersion": ""})
        self.assertDictGroup(sys, True)
        self.assertProtosGroup(sys, False)
        self.assertIs(sys["useProto"], True)

    def test_falsy_proto_versions(self) -> None:
        """The JS client sends C{protoVersion: 0} when it has none; also absent and C{""}."""
        for version in (0, "", None, False):
            sys = self.answer({"protoVersion": version})
            self.assertProtosGroup(sys, True)

    def test_version_type_must_match(self) -> None:
        """Pomelo compares with C{!==}: a version of the wrong type differs."""
        dict_version, _ = self.versions()
        sys = self.answer({"dictVersion": [dict_version]})
        self.assertDictGroup(sys, True)

    def test_no_dict(self) -> None:
        sys = self.answer({}, use_dict=False)
        self.assertNotIn("useDict", sys)
        self.assertDictGroup(sys, False)
        self.assertProtosGroup(sys, True)

    def test_no_protobuf(self) -> None:
        sys = self.answer({}, use_protobuf=False)
        self.assertNotIn("useProto", sys)
        self.assertProtosGroup(sys, False)
        self.assertDictGroup(sys, True)

    def test_no_heartbeat(self) -> None:
        sys = self.answer({}, heartbeat=0, use_dict=False, use_protobuf=False)
        self.assertEqual(sys, {})

    def test_sys_not_an_object(self) -> None:
        """C{{"sys":1}} counts as a client with no cached versions."""
        sys = self.answer(1)
        self.assertDictGroup(sys, True)
        self.assertProtosGroup(sys, True)

    def test_no_proto_files_gives_empty_protos(self) -> None:
        """§5.4 note: without proto files the version is C{""} and the empty protos always go."""
        sys = self.answer({"protoVersion": ""}, heartbeat=3)
        self.assertTrue(sys["protos"]["server"])  # the demo has protos
        self.connector(make_test_app(), use_dict=False)
        written = self.client().handshake(b'{"sys":{"protoVersion":""}}')
        self.assertEqual(
            json.loads(written[4:])["sys"],
            {
                "heartbeat": 3,
                "protos": {"server": {}, "client": {}, "version": ""},
                "useProto": True,
            },
        )
