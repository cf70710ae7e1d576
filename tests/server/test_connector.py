"""In-memory tests of the connector: L{HybridSocket}, the commands, the application and the
L{Connector} together (protocol.md §4-§7, §10-§12, §15.2, §19.1; §20 items 11-43 except the
transport ones).

Everything runs on a C{task.Clock} and a fake transport: a test feeds bytes to a socket as a
TCP stream (C{dataReceived}) or as whole WebSocket messages (C{messageReceived}), advances the
clock by 0 to end the reactor turn (the connector writes each connection's output once per
turn), and compares what the transport was given with protocol.md's bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pomelo_twisted.demo import make_app
from pomelo_twisted.protocol.connection import ConnectionState
from pomelo_twisted.protocol.message import MessageType, decode_message
from pomelo_twisted.protocol.package import PackageType, encode_package
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.interfaces import IPomeloTransport
from pomelo_twisted.services.application import Application, HandlerError
from pomelo_twisted.services.interfaces import ISessionConnection
from tests.support.connector import (
    ACK,
    ERROR_500,
    ERROR_501,
    HANDSHAKE_1,
    HEARTBEAT,
    Client,
    ConnectorTestCase,
    FakeTransport,
    data,
    kick_package,
    make_connector,
    make_test_app,
    notify,
    packages,
    push,
    request,
    response,
)
from tests.support.vectors import SPEC_CLIENT_PROTOS, SPEC_SERVER_PROTOS, h, load_vectors

# --- the seams ------------------------------------------------------------------------------


class SeamTests(ConnectorTestCase):
    def test_fakeTransportProvidesInterface(self) -> None:
        """The fake transport of these tests is a genuine L{IPomeloTransport}."""
        self.assertTrue(verifyObject(IPomeloTransport, FakeTransport()))

    def test_socketProvidesSessionConnection(self) -> None:
        self.connector()
        self.assertTrue(verifyObject(ISessionConnection, self.client().sock))

    def test_buildSocketRegisters(self) -> None:
        self.connector()
        client = self.client()
        self.assertIn(client.sock, self.conn.sockets)
        self.assertIs(client.state, ConnectionState.INITED)


# --- handshake (§5, §20 items 11-18) ----------------------------------------------------------


class HandshakeVectorTests(ConnectorTestCase):
    """The real Pomelo server's answers for the demo app (tests/vectors/handshake.json)."""

    def test_vectorsByteIdentical(self) -> None:
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

    def test_heartbeatOnly(self) -> None:
        """§5.3: heartbeat 3, no dict or protos: the 34-byte example."""
        self.connector(heartbeat=3, use_dict=False, use_protobuf=False)
        self.assertEqual(
            self.client().handshake(),
            h(
                "01 00 00 22 7b 22 63 6f 64 65 22 3a 32 30 30 2c 22 73 79 73 22 3a 7b 22 68 65 61"
                " 72 74 62 65 61 74 22 3a 33 7d 7d"
            ),
        )

    def test_nothingConfigured(self) -> None:
        """§5.3: the 21-byte example."""
        self.connector(heartbeat=0, use_dict=False, use_protobuf=False)
        self.assertEqual(
            self.client().handshake(),
            h("01 00 00 15 7b 22 63 6f 64 65 22 3a 32 30 30 2c 22 73 79 73 22 3a 7b 7d 7d"),
        )

    def test_heartbeatIsInteger(self) -> None:
        """§20 item 16: C{heartbeat} is an integer number of seconds on the wire, even when
        configured as a float."""
        for hb in (3, 3.0, 1, 60):
            self.connector(heartbeat=hb, use_dict=False, use_protobuf=False)
            written = self.client().handshake()
            answer = json.loads(written[4:])
            self.assertEqual(answer["sys"]["heartbeat"], int(hb))
            self.assertIs(type(answer["sys"]["heartbeat"]), int)
            self.assertIn(b'"heartbeat":%d}' % int(hb), written)

    def test_fractionalHeartbeatRefused(self) -> None:
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

    def test_emptyObject(self) -> None:
        self.assertClosedAndClean(self.assertRejected(b"{}"))

    def test_null(self) -> None:
        self.assertClosedAndClean(self.assertRejected(b"null"))

    def test_emptyBody(self) -> None:
        """C{01 00 00 00}."""
        self.assertClosedAndClean(self.assertRejected(b""))

    def test_notJSON(self) -> None:
        for body in (b"{not json", b"\xff\xfe", b'{"sys":1', b"sys"):
            self.assertClosedAndClean(self.assertRejected(body))

    def test_notAnObject(self) -> None:
        for body in (b"[1]", b"1", b'"sys"', b"true"):
            self.assertClosedAndClean(self.assertRejected(body))

    def test_falsySys(self) -> None:
        for body in (
            b'{"sys":0}',
            b'{"sys":false}',
            b'{"sys":""}',
            b'{"sys":null}',
            b'{"user":{}}',
        ):
            self.assertClosedAndClean(self.assertRejected(body))

    def test_truthySysForms(self) -> None:
        """JavaScript truthiness: C{{}}, C{[]} and C{"0"} are truthy."""
        for body in (b'{"sys":{}}', b'{"sys":[]}', b'{"sys":"0"}', b'{"sys":true}'):
            self.connector()
            self.assertIn(b'"code":200', self.client().handshake(body))

    def test_abortAfterKickCloseTimeout(self) -> None:
        """If the peer never goes, the graceful close turns into an abort."""
        client = self.assertRejected(b"{}")
        self.clock.advance(self.conn.config.kick_close_timeout - 0.1)
        self.assertEqual(client.transport.aborted, 0)
        self.clock.advance(0.1)
        self.assertEqual(client.transport.aborted, 1)
        client.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.conn.sockets, set())

    def test_connectionLostCancelsAbort(self) -> None:
        client = self.assertRejected(b"{}")
        client.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(client.transport.aborted, 0)

    def test_checkClientFalse(self) -> None:
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

    def test_checkClientTrue(self) -> None:
        app = make_app()
        app.check_client = lambda ctype, version: version == "0.3.0"
        self.connector(app)
        client = self.client()
        self.assertIn(b'"code":200', client.handshake(b'{"sys":{"type":"u","version":"0.3.0"}}'))

    def test_checkClientRaises(self) -> None:
        app = make_app()

        def check(ctype: Any, version: Any) -> bool:
            raise RuntimeError("bad hook")

        app.check_client = check
        self.connector(app)
        client = self.client()
        self.assertEqual(client.handshake(b'{"sys":1}'), ERROR_500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertClosedAndClean(client)

    def test_oversizedHandshake(self) -> None:
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

    def test_plainValue(self) -> None:
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

    def test_deferredFiredLater(self) -> None:
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

    def test_hookRaises(self) -> None:
        def hook(msg: Any, session: Any) -> Any:
            raise KeyError("nope")

        client = self.hooked(hook)
        self.assertEqual(client.handshake(), ERROR_500)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertClosedAndClean(client)

    def test_hookFailsLater(self) -> None:
        d: Deferred[Any] = Deferred()
        client = self.hooked(lambda msg, session: d)
        self.assertEqual(client.handshake(), b"")
        d.errback(KeyError("later"))
        self.assertEqual(b"".join(client.transport.writes), ERROR_500)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertClosedAndClean(client)

    def test_hookHandlerErrorFails(self) -> None:
        async def hook(msg: Any, session: Any) -> Any:
            raise HandlerError({"code": 401})

        client = self.hooked(hook)
        self.assertEqual(client.handshake(), ERROR_500)
        self.flushLoggedErrors(HandlerError)
        self.assertClosedAndClean(client)

    def test_falsyValuesGiveNoUser(self) -> None:
        for value in (None, 0, "", False):
            client = self.hooked(lambda msg, session, value=value: value)
            self.assertEqual(
                client.handshake(),
                encode_package(PackageType.HANDSHAKE, b'{"code":200,"sys":{"heartbeat":3}}'),
                value,
            )

    def test_truthyValuesGiveUser(self) -> None:
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

    def test_hookValueNotSerialisable(self) -> None:
        client = self.hooked(lambda msg, session: {"x": object()})
        self.assertEqual(client.handshake(), ERROR_500)
        self.flushLoggedErrors(TypeError)
        self.assertClosedAndClean(client)

    def test_hookNotCalledForBadHandshake(self) -> None:
        calls: list[Any] = []
        client = self.hooked(lambda msg, session: calls.append(msg))
        self.assertEqual(client.handshake(b'{"sys":0}'), ERROR_500)
        self.assertEqual(calls, [])

    def test_secondHandshakeWhileHookPending(self) -> None:
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

    def test_connectionLostWhileHookPending(self) -> None:
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
    def test_secondHandshakeIgnored(self) -> None:
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

    def test_twoHandshakesInOneChunk(self) -> None:
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

    def test_noVersionsSent(self) -> None:
        """JS and C# clients send no C{dictVersion}: everything is sent."""
        sys = self.answer({"type": "unity-socket", "version": "0.3.0"})
        self.assertEqual(list(sys), ["heartbeat", *self.DICT_KEYS, "useDict", "protos", "useProto"])
        self.assertDictGroup(sys, True)
        self.assertProtosGroup(sys, True)
        self.assertIs(sys["useDict"], True)
        self.assertIs(sys["useProto"], True)

    def test_matchingVersions(self) -> None:
        dict_version, proto_version = self.versions()
        sys = self.answer({"dictVersion": dict_version, "protoVersion": proto_version})
        self.assertEqual(sys, {"heartbeat": 3, "useDict": True, "useProto": True})

    def test_matchingVersionsExampleBytes(self) -> None:
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

    def test_differentVersions(self) -> None:
        sys = self.answer({"dictVersion": "old", "protoVersion": "old"})
        self.assertDictGroup(sys, True)
        self.assertProtosGroup(sys, True)

    def test_dictMatchesProtosDiffer(self) -> None:
        dict_version, _ = self.versions()
        sys = self.answer({"dictVersion": dict_version, "protoVersion": 0})
        self.assertDictGroup(sys, False)
        self.assertProtosGroup(sys, True)
        self.assertIs(sys["useDict"], True)

    def test_protosMatchDictDiffers(self) -> None:
        _, proto_version = self.versions()
        sys = self.answer({"protoVersion": proto_version, "dictVersion": ""})
        self.assertDictGroup(sys, True)
        self.assertProtosGroup(sys, False)
        self.assertIs(sys["useProto"], True)

    def test_falsyProtoVersions(self) -> None:
        """The JS client sends C{protoVersion: 0} when it has none; also absent and C{""}."""
        for version in (0, "", None, False):
            sys = self.answer({"protoVersion": version})
            self.assertProtosGroup(sys, True)

    def test_versionTypeMustMatch(self) -> None:
        """Pomelo compares with C{!==}: a version of the wrong type differs."""
        dict_version, _ = self.versions()
        sys = self.answer({"dictVersion": [dict_version]})
        self.assertDictGroup(sys, True)

    def test_noDict(self) -> None:
        sys = self.answer({}, use_dict=False)
        self.assertNotIn("useDict", sys)
        self.assertDictGroup(sys, False)
        self.assertProtosGroup(sys, True)

    def test_noProtobuf(self) -> None:
        sys = self.answer({}, use_protobuf=False)
        self.assertNotIn("useProto", sys)
        self.assertProtosGroup(sys, False)
        self.assertDictGroup(sys, True)

    def test_noHeartbeat(self) -> None:
        sys = self.answer({}, heartbeat=0, use_dict=False, use_protobuf=False)
        self.assertEqual(sys, {})

    def test_sysNotAnObject(self) -> None:
        """C{{"sys":1}} counts as a client with no cached versions."""
        sys = self.answer(1)
        self.assertDictGroup(sys, True)
        self.assertProtosGroup(sys, True)

    def test_noProtoFilesGivesEmptyProtos(self) -> None:
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


# --- the state machine (§4, §20 items 19-22) ---------------------------------------------------


class StateTests(ConnectorTestCase):
    def setUp(self) -> None:
        self.app = make_test_app()
        self.connector(self.app)

    def test_dataBeforeHandshake(self) -> None:
        """§20 item 19: DATA in C{INITED} is dropped: no answer, no handler call."""
        client = self.client()
        self.assertEqual(client.exchange(request(1, "connector.testHandler.echo")), b"")
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]
        self.assertFalse(client.transport.closed)

    def test_dataBeforeAck(self) -> None:
        client = self.client()
        client.handshake()
        self.assertEqual(client.exchange(request(1, "connector.testHandler.echo")), b"")
        self.assertEqual(client.exchange(notify("connector.testHandler.echo")), b"")
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]
        self.assertIs(client.state, ConnectionState.WAIT_ACK)

    def test_heartbeatBeforeHandshake(self) -> None:
        """§20 item 20."""
        client = self.client()
        self.assertEqual(client.exchange(HEARTBEAT), b"")
        self.assertIs(client.state, ConnectionState.INITED)

    def test_heartbeatBeforeAck(self) -> None:
        client = self.client()
        client.handshake()
        self.assertEqual(client.exchange(HEARTBEAT), b"")
        self.assertIs(client.state, ConnectionState.WAIT_ACK)

    def test_ackInInitedIgnored(self) -> None:
        """§20 item 21: the early ACK does not count; the real one still works."""
        client = self.client()
        self.assertEqual(client.exchange(ACK), b"")
        self.assertIs(client.state, ConnectionState.INITED)
        self.assertIn(b'"code":200', client.handshake())
        self.assertIs(client.state, ConnectionState.WAIT_ACK)
        self.assertEqual(client.exchange(ACK), HEARTBEAT)
        self.assertIs(client.state, ConnectionState.WORKING)

    def test_ackInWorkingIgnored(self) -> None:
        client = self.client().connect()
        self.assertEqual(client.exchange(ACK), b"")
        self.assertIs(client.state, ConnectionState.WORKING)

    def test_ackWithBodyAccepted(self) -> None:
        """§3.2: upstream ignores a body on types 2 and 3."""
        client = self.client()
        client.handshake()
        self.assertEqual(
            client.exchange(encode_package(PackageType.HANDSHAKE_ACK, b"xx")), HEARTBEAT
        )
        self.assertEqual(client.exchange(encode_package(PackageType.HEARTBEAT, b"yy")), HEARTBEAT)

    def test_kickFromClientAborts(self) -> None:
        """§20 item 22, in every state."""
        for stage in ("inited", "wait_ack", "working"):
            self.connector(self.app)
            client = self.client()
            if stage != "inited":
                client.handshake()
            if stage == "working":
                client.exchange(ACK)
            self.assertEqual(client.exchange(kick_package("x")), b"", stage)
            self.assertClosedAndClean(client, aborted=True)

    def test_packagesBeforeKickInChunkHandled(self) -> None:
        """Packages are handled in order; the KICK after a request aborts only when reached."""
        client = self.client().connect()
        client.feed(request(1, "connector.testHandler.echo") + kick_package("x"))
        self.assertEqual(self.app.calls, [("echo", {})])  # type: ignore[attr-defined]
        self.assertEqual(client.transport.aborted, 1)
        # The abort drops what the turn had queued: nothing is written to an aborted transport.
        self.assertEqual(client.turn(), [])
        self.assertEqual(client.transport.late_writes, [])

    def test_handshakeAndAckInOneChunk(self) -> None:
        """§3.4: packages reach the state machine one at a time, in arrival order."""
        client = self.client()
        written = client.exchange(HANDSHAKE_1 + ACK)
        self.assertEqual(
            [p.type for p in packages(written)], [PackageType.HANDSHAKE, PackageType.HEARTBEAT]
        )
        self.assertIs(client.state, ConnectionState.WORKING)

    def test_ackAndRequestInOneChunk(self) -> None:
        """A client that sends its first request right behind the ACK gets it answered."""
        client = self.client()
        client.handshake()
        written = client.exchange(
            ACK + request(1, "connector.testHandler.echo", b'{"a":1}') + HEARTBEAT
        )
        self.assertEqual(written, HEARTBEAT + response(1, b'{"a":1}') + HEARTBEAT)


class StateWebSocketTests(StateTests):
    """The same over WebSocket; several packages in one message are handled in order."""

    ws = True

    def test_truncatedMessageAborts(self) -> None:
        client = self.client()
        client.feed(HANDSHAKE_1[:-1])
        self.assertEqual(client.turn(), [])
        self.assertClosedAndClean(client, aborted=True)

    def test_trailingBytesAbort(self) -> None:
        client = self.client()
        client.feed(HANDSHAKE_1 + b"\x02\x00")
        self.assertEqual(client.turn(), [])
        self.assertClosedAndClean(client, aborted=True)


class FramingTests(ConnectorTestCase):
    """The transport-independent framing checks that end in the socket (§3, §15.2)."""

    def test_unknownPackageTypeAborts(self) -> None:
        for header in (b"\x00\x00\x00\x00", b"\x06\x00\x00\x00", b"\xff\x00\x00\x01"):
            for ws in (False, True):
                self.connector()
                client = Client(self.conn, self.clock, ws=ws)
                client.feed(header)
                self.assertEqual(client.turn(), [])
                self.assertClosedAndClean(client, aborted=True)

    def test_oversizedPackageAbortsAtHeader(self) -> None:
        self.connector(max_package_size=100)
        client = self.client().connect()
        client.feed(b"\x04\x00\x00\x65")
        self.assertClosedAndClean(client, aborted=True)

    def test_handshakeSplitEverywhere(self) -> None:
        self.connector()
        expected = bytes.fromhex(load_vectors("handshake.json")["cases"][0]["response_hex"])
        for cut in range(1, len(HANDSHAKE_1)):
            self.connector()
            client = self.client()
            client.feed(HANDSHAKE_1[:cut])
            client.feed(HANDSHAKE_1[cut:])
            self.assertEqual(b"".join(client.turn()), expected, cut)

    def test_ackAndRequestByteByByte(self) -> None:
        self.connector(make_test_app())
        client = self.client()
        client.handshake()
        for byte in ACK + request(7, "connector.testHandler.echo", b"[7]"):
            client.feed(bytes((byte,)))
        self.assertEqual(b"".join(client.turn()), HEARTBEAT + response(7, b"[7]"))

    def test_packagesBeforeBadHeaderHandled(self) -> None:
        """§3.4: packages are handled as they complete, so the packages in front of a bad
        header in the same chunk are handled before the abort, as with any other split."""
        app = make_test_app()
        self.connector(app)
        client = self.client().connect()
        client.feed(request(1, "connector.testHandler.echo") + h("00 00 00 00"))
        self.assertEqual(client.transport.aborted, 1)
        self.assertEqual(app.calls, [("echo", {})])  # type: ignore[attr-defined]

    def test_inputAfterCloseIgnored(self) -> None:
        self.connector()
        client = self.client().connect()
        client.sock.kick("bye")
        client.take()
        client.feed(HEARTBEAT)
        client.sock.messageReceived(HEARTBEAT)
        self.assertEqual(client.turn(), [])


# --- heartbeats and deadlines (§6, §20 items 23-26) --------------------------------------------


class HeartbeatTests(ConnectorTestCase):
    def setUp(self) -> None:
        self.connector(make_test_app())

    def test_heartbeatAfterAck(self) -> None:
        """§20 item 23: C{03 00 00 00} in the same turn as the ACK."""
        client = self.client()
        client.handshake()
        self.assertEqual(client.exchange(ACK), HEARTBEAT)

    def test_eachHeartbeatAnswered(self) -> None:
        """§20 item 24, §6.4: every client heartbeat is answered at once, never paced."""
        client = self.client().connect()
        for _ in range(5):
            self.clock.advance(3)
            self.assertEqual(client.exchange(HEARTBEAT), HEARTBEAT)
        self.assertFalse(client.transport.closed)
        # Two in one turn: two answers, one write.
        client.feed(HEARTBEAT)
        client.feed(HEARTBEAT)
        self.assertEqual(client.turn(), [HEARTBEAT + HEARTBEAT])

    def test_silenceCloses(self) -> None:
        """§20 item 25: 2 x interval without a heartbeat: closed, no KICK."""
        client = self.client().connect()
        self.clock.advance(5.999)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.001)
        self.assertEqual(client.transport.lost, 1)
        self.assertEqual(client.take(), [])
        self.assertClosedAndClean(client)

    def test_silenceAfterHeartbeat(self) -> None:
        """The timer restarts at each heartbeat (§6.4)."""
        client = self.client().connect()
        self.clock.advance(3)
        client.exchange(HEARTBEAT)
        self.clock.advance(5.5)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.5)
        self.assertTrue(client.transport.closed)
        self.assertNotIn(b"\x05", b"".join(w[:1] for w in client.take()))

    def test_configuredTimeout(self) -> None:
        self.connector(make_test_app(), heartbeat=3, heartbeat_timeout=10)
        client = self.client().connect()
        self.clock.advance(9.9)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.1)
        self.assertTrue(client.transport.closed)
        self.assertEqual(client.take(), [])

    def test_timeoutScalesWithInterval(self) -> None:
        self.connector(make_test_app(), heartbeat=10)
        client = self.client().connect()
        self.clock.advance(19.9)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.1)
        self.assertTrue(client.transport.closed)

    def test_dataDoesNotResetTimer(self) -> None:
        """§6.2: only inbound heartbeats reset the timer; DATA does not."""
        client = self.client().connect()
        for i in range(1, 6):
            self.clock.advance(1)
            self.assertEqual(
                client.exchange(request(i, "connector.testHandler.echo")), response(i, b"{}")
            )
        self.clock.advance(0.999)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.001)
        self.assertTrue(client.transport.closed)

    def test_noHeartbeat(self) -> None:
        """§20 item 26: heartbeat 0: none after the ACK, none answered, no timeout ever."""
        self.connector(make_test_app(), heartbeat=0)
        client = self.client()
        self.assertNotIn(b"heartbeat", client.handshake())
        self.assertEqual(client.exchange(ACK), b"")
        self.assertIs(client.state, ConnectionState.WORKING)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(client.exchange(HEARTBEAT), b"")
        self.clock.advance(10**6)
        self.assertFalse(client.transport.closed)
        self.assertEqual(
            client.exchange(request(1, "connector.testHandler.echo")), response(1, b"{}")
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_oneTimerPerConnection(self) -> None:
        """The handshake, ACK and heartbeat deadlines share one re-armed timer."""
        client = self.client()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        client.handshake()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        client.exchange(ACK)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        for _ in range(3):
            client.exchange(HEARTBEAT)
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_handshakeTimeout(self) -> None:
        client = self.client()
        self.clock.advance(14.9)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.1)
        self.assertEqual(client.transport.writes, [])
        self.assertClosedAndClean(client)

    def test_handshakeTimeoutConfigured(self) -> None:
        self.connector(make_test_app(), handshake_timeout=2)
        client = self.client()
        self.clock.advance(2)
        self.assertTrue(client.transport.closed)

    def test_handshakeTimeoutOff(self) -> None:
        self.connector(make_test_app(), handshake_timeout=None, heartbeat=0)
        client = self.client()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10**6)
        self.assertFalse(client.transport.closed)

    def test_ackTimeout(self) -> None:
        client = self.client()
        self.clock.advance(10)
        client.handshake()
        self.clock.advance(14.9)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.1)
        self.assertEqual(client.take(), [])
        self.assertClosedAndClean(client)

    def test_heartbeatsDoNotDelayAckTimeout(self) -> None:
        client = self.client()
        client.handshake()
        for _ in range(4):
            self.clock.advance(3.75)
            client.exchange(HEARTBEAT)
        self.assertTrue(client.transport.closed)

    def test_remoteCloseCleansUp(self) -> None:
        client = self.client().connect()
        sid = client.session.id
        client.lose()
        self.clock.advance(0)
        self.assertIs(client.state, ConnectionState.CLOSED)
        self.assertIsNone(self.conn.session_service.get(sid))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.conn.sockets, set())
        self.assertEqual(client.transport.lost + client.transport.aborted, 0)


# --- messages (§7, §8, §20 items 27-32) -------------------------------------------------------


class TemplateApp:
    """Pomelo's template as used by protocol.md's examples: handlers
    C{connector.entryHandler.{entry,publish,subscribe}}, user dictionary C{["onChat"]}, the
    protos of §9.3.1 (when C{protos}), so that every example of §7.5, §9.3.6 and §19.1 can be
    compared byte for byte."""

    SERVER_PROTOS = SPEC_SERVER_PROTOS
    CLIENT_PROTOS = SPEC_CLIENT_PROTOS

    @classmethod
    def make(cls, testcase: SynchronousTestCase, entry_answer: Any = None) -> Application:
        path = tempfile.mkdtemp()
        testcase.addCleanup(shutil.rmtree, path)
        with open(os.path.join(path, "dictionary.json"), "w") as f:
            json.dump(["onChat"], f)
        with open(os.path.join(path, "serverProtos.json"), "w") as f:
            json.dump(cls.SERVER_PROTOS, f)
        with open(os.path.join(path, "clientProtos.json"), "w") as f:
            json.dump(cls.CLIENT_PROTOS, f)
        app = Application("connector", config_dir=path)
        received: list[Any] = []
        app.received = received  # type: ignore[attr-defined]

        @app.route("connector.entryHandler.entry")
        def entry(msg: Any, session: Any) -> Any:
            received.append(msg)
            return (
                entry_answer
                if entry_answer is not None
                else {"code": 200, "msg": "game server is ok."}
            )

        @app.route("connector.entryHandler.publish")
        def publish(msg: Any, session: Any) -> Any:
            return {"code": 200}

        @app.route("connector.entryHandler.subscribe")
        def subscribe(msg: Any, session: Any) -> Any:
            return {"code": 200}

        return app


# §7.5's response to id 1 of the template's entry handler.
ENTRY_RESPONSE_1 = h(
    "04 00 00 29 04 01 7b 22 63 6f 64 65 22 3a 32 30 30 2c 22 6d 73 67 22 3a 22 67 61 6d 65 20 73"
    " 65 72 76 65 72 20 69 73 20 6f 6b 2e 22 7d"
)


class MessageTests(ConnectorTestCase):
    def setUp(self) -> None:
        self.app = make_test_app()
        self.connector(self.app)

    def test_transcript19_1(self) -> None:
        """§19.1 byte for byte: raw TCP, heartbeat 3, no dict, no protobuf."""
        app = TemplateApp.make(self)
        self.connector(app, heartbeat=3, use_dict=False, use_protobuf=False)
        client = self.client()
        self.assertEqual(
            client.exchange(
                h(
                    "01 00 00 3e 7b 22 73 79 73 22 3a 7b 22"
                    " 74 79 70 65 22 3a 22 64 65 73 6b 74 6f 70"
                    " 22 2c 22 76 65 72 73 69 6f 6e 22 3a 22"
                    " 30 2e 33 2e 35 2d 72 65 6c 65 61 73 65 22"
                    " 7d 2c 22 75 73 65 72 22 3a 7b 7d 7d"
                )
            ),
            h(
                "01 00 00 22 7b 22 63 6f 64 65 22 3a 32 30"
                " 30 2c 22 73 79 73 22 3a 7b 22 68 65 61 72"
                " 74 62 65 61 74 22 3a 33 7d 7d"
            ),
        )
        self.assertEqual(client.exchange(h("02 00 00 00")), h("03 00 00 00"))
        self.assertEqual(
            client.exchange(
                h(
                    "04 00 00 21 00 01 1c 63 6f 6e 6e 65 63"
                    " 74 6f 72 2e 65 6e 74 72 79 48 61 6e 64 6c"
                    " 65 72 2e 65 6e 74 72 79 7b 7d"
                )
            ),
            ENTRY_RESPONSE_1,
        )
        self.clock.advance(3)
        self.assertEqual(client.exchange(h("03 00 00 00")), h("03 00 00 00"))
        client.session.push("onChat", {"msg": "hi"})
        self.assertEqual(
            b"".join(client.turn()),
            h("04 00 00 14 06 06 6f 6e 43 68 61 74 7b 22 6d 73 67 22 3a 22 68 69 22 7d"),
        )
        self.conn.session_service.kick_by_session_id(client.session.id, "kick")
        self.assertEqual(
            b"".join(client.take()),
            h("05 00 00 11 7b 22 72 65 61 73 6f 6e 22 3a 22 6b 69 63 6b 22 7d"),
        )
        self.assertClosedAndClean(client)

    def test_spec75Examples(self) -> None:
        """§7.5: the request compressed to code 1 (ids 1 and 300), and the pushes of onChat."""
        app = TemplateApp.make(self)
        self.connector(app, use_protobuf=False)
        client = self.client().connect()
        self.assertEqual(client.exchange(h("04 00 00 06 01 01 00 01 7b 7d")), ENTRY_RESPONSE_1)
        self.assertEqual(
            client.exchange(h("04 00 00 07 01 ac 02 00 01 7b 7d")),
            encode_package(
                PackageType.DATA, h("04 ac 02") + b'{"code":200,"msg":"game server is ok."}'
            ),
        )
        client.session.push("onChat", {"msg": "hi"})
        client.session.push("onMove", {"msg": "yo"})
        self.assertEqual(
            client.turn(),
            [
                h("04 00 00 0f 07 00 04 7b 22 6d 73 67 22 3a 22 68 69 22 7d")
                + h("04 00 00 14 06 06 6f 6e 4d 6f 76 65 7b 22 6d 73 67 22 3a 22 79 6f 22 7d")
            ],
        )

    def test_spec936CompletePackages(self) -> None:
        """§9.3.6: a protobuf request by code, its protobuf response, and a protobuf push."""
        app = TemplateApp.make(self, entry_answer={"code": 200, "msg": "ok"})
        self.connector(app)
        client = self.client().connect()
        self.assertEqual(
            client.exchange(h("04 00 00 0b 01 05 00 01 0a 03 62 6f 62 10 01")),
            h("04 00 00 09 04 05 08 c8 01 12 02 6f 6b"),
        )
        self.assertEqual(app.received, [{"username": "bob", "rid": 1}])  # type: ignore[attr-defined]
        client.session.push(
            "onMove",
            {
                "entityId": 7,
                "path": [{"x": 1, "y": -1}, {"x": -64, "y": 64}],
                "ids": [1, 2, 300],
                "t": 1.5,
            },
        )
        self.assertEqual(
            b"".join(client.turn()),
            h(
                "04 00 00 26 06 06 6f 6e 4d 6f 76 65 08 07"
                " 12 04 08 02 10 01 12 05 08 7f 10 80 01 18"
                " 03 01 02 ac 02 21 00 00 00 00 00 00 f8 3f"
            ),
        )

    def test_browserWireTypeQuirk(self) -> None:
        """§9.3.3: the browser client's wrong wire types decode to the same object."""
        app = TemplateApp.make(self, entry_answer={"code": 200, "msg": "ok"})
        self.connector(app)
        client = self.client().connect()
        body = h("0a 03 62 6f 62 12 01")
        self.assertEqual(
            client.exchange(request(5, 1, body)),
            h("04 00 00 09 04 05 08 c8 01 12 02 6f 6b"),
        )
        self.assertEqual(app.received, [{"username": "bob", "rid": 1}])  # type: ignore[attr-defined]

    def test_idsEchoed(self) -> None:
        """§20 item 28, §7.2: the same numeric id comes back, varint-encoded the same way."""
        client = self.client().connect()
        for mid, varint in (
            (1, "01"),
            (127, "7f"),
            (128, "80 01"),
            (300, "ac 02"),
            (16383, "ff 7f"),
            (16384, "80 80 01"),
            (2**31 - 1, "ff ff ff ff 07"),
            (2**32 - 1, "ff ff ff ff 0f"),
        ):
            written = client.exchange(
                request(mid, "connector.testHandler.echo", b'{"id":%d}' % mid)
            )
            body = h("04 " + varint) + b'{"id":%d}' % mid
            self.assertEqual(written, encode_package(PackageType.DATA, body), mid)

    def test_idZeroIsNotify(self) -> None:
        """§7.2: a REQUEST with id 0 never gets a response."""
        client = self.client().connect()
        self.assertEqual(client.exchange(request(0, "connector.testHandler.echo")), b"")
        self.assertEqual(self.app.calls, [("echo", {})])  # type: ignore[attr-defined]

    def test_compressedRequest(self) -> None:
        """§20 item 29: the route code is expanded through the dictionary."""
        client = self.client().connect()
        assert self.conn.dictionary is not None
        code = self.conn.dictionary.route_to_code("connector.testHandler.echo")
        assert code is not None
        written = client.exchange(request(9, code, b'{"c":1}'))
        self.assertEqual(written, response(9, b'{"c":1}'))
        self.assertEqual(self.app.calls, [("echo", {"c": 1})])  # type: ignore[attr-defined]

    def test_unknownCode(self) -> None:
        """§20 item 30 (REC): 500 for a request, nothing for a notify; the connection stays."""
        client = self.client().connect()
        self.assertEqual(client.exchange(request(3, 999)), response(3, b'{"code":500}'))
        self.assertEqual(
            client.exchange(h("04 00 00 06 01 04 ff ff 7b 7d")), response(4, b'{"code":500}')
        )
        self.assertEqual(client.exchange(notify(999)), b"")
        self.assertIs(client.state, ConnectionState.WORKING)

    def test_compressedRouteWithoutDict(self) -> None:
        self.connector(self.app, use_dict=False)
        client = self.client().connect()
        self.assertEqual(client.exchange(request(3, 1)), response(3, b'{"code":500}'))
        self.assertEqual(client.exchange(notify(1)), b"")
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]

    def test_responsesNeverCompressed(self) -> None:
        """§20 item 32: flag 04 on every response: no route, no gzip bit, compressed request
        or not, gzip bit in the request or not."""
        client = self.client().connect()
        assert self.conn.dictionary is not None
        code = self.conn.dictionary.route_to_code("connector.testHandler.echo")
        route = b"connector.testHandler.echo"
        inputs = [
            request(1, "connector.testHandler.echo"),
            request(2, code),  # type: ignore[arg-type]
            encode_package(PackageType.DATA, b"\x10\x03" + bytes((len(route),)) + route + b"{}"),
            encode_package(PackageType.DATA, b"\x11\x04" + code.to_bytes(2, "big") + b"{}"),  # type: ignore[union-attr]
            request(5, "connector.testHandler.nope"),
            request(6, "connector.testHandler.code3"),
        ]
        for i, data_ in enumerate(inputs, 1):
            [msg_package] = packages(client.exchange(data_))
            self.assertEqual(msg_package.body[0], 0x04, i)
            msg = decode_message(msg_package.body)
            self.assertEqual((msg.type, msg.id, msg.route), (MessageType.RESPONSE, i, None))
            self.assertFalse(msg.compress_gzip)

    def test_pushCompression(self) -> None:
        """§20 item 31: compressed only when use_dict is on and the route is in the dict."""
        self.connector(self.app)  # make_test_app has no dictionary.json: onChat is not in the dict
        client = self.client().connect()
        client.session.push("connector.testHandler.echo", {"a": 1})
        client.session.push("onChat", {"a": 2})
        assert self.conn.dictionary is not None
        code = self.conn.dictionary.route_to_code("connector.testHandler.echo")
        self.assertEqual(
            client.turn(),
            [push(code, b'{"a":1}') + push("onChat", b'{"a":2}')],  # type: ignore[arg-type]
        )
        # With the dictionary off, nothing is compressed.
        self.connector(self.app, use_dict=False)
        client = self.client().connect()
        client.session.push("connector.testHandler.echo", {"a": 1})
        self.assertEqual(client.turn(), [push("connector.testHandler.echo", b'{"a":1}')])

    def test_pushFlags(self) -> None:
        """Pushes carry flag 06 or 07 only: bits 4-7 are never set (§7.1)."""
        demo = make_app()
        self.connector(demo)
        client = self.client().connect()
        client.session.push("onPush", {"x": 1})
        client.session.push("elsewhere", {"x": 1})
        flags = [p.body[0] for p in packages(b"".join(client.turn()))]
        self.assertEqual(flags, [0x07, 0x06])

    def test_invalidJSONBodyIsEmptyObject(self) -> None:
        """§9.2: an empty or unparsable body becomes C{{}} and the handler still runs."""
        client = self.client().connect()
        for i, body in enumerate((b"", b"{oops", b"\xff"), 1):
            self.assertEqual(
                client.exchange(request(i, "connector.testHandler.echo", body)), response(i, b"{}")
            )
        self.assertEqual(self.app.calls, [("echo", {})] * 3)  # type: ignore[attr-defined]

    def test_jsonBodies(self) -> None:
        client = self.client().connect()
        body = '{"s":"héllo 世界","n":[1,2.5,null,true],"o":{}}'.encode()
        self.assertEqual(
            client.exchange(request(1, "connector.testHandler.echo", body)), response(1, body)
        )

    def test_cesu8Body(self) -> None:
        """§9.2: the browser client's CESU-8 surrogate pairs decode to the real character."""
        client = self.client().connect()
        cesu = b'{"e":"' + "\ud83d\ude00".encode("utf-8", "surrogatepass") + b'"}'
        written = client.exchange(request(1, "connector.testHandler.echo", cesu))
        self.assertEqual(written, response(1, '{"e":"😀"}'.encode()))

    def test_severalSendsOneWrite(self) -> None:
        """Several packages produced in one reactor turn leave as one write (§3.6, §20 item 42)."""
        client = self.client().connect()
        client.feed(
            request(1, "connector.testHandler.echo", b"[1]")
            + request(2, "connector.testHandler.push")
            + HEARTBEAT
        )
        self.assertEqual(client.transport.writes[-1:], [HEARTBEAT])  # nothing written yet
        written = client.turn()
        self.assertEqual(len(written), 1)
        self.assertEqual(
            written[0],
            response(1, b"[1]")
            + push("onChat", b'{"msg":"hi"}')
            + push("onOther", b'{"msg":"yo"}')
            + response(2, b'{"code":200}')
            + HEARTBEAT,
        )

    def test_severalConnectionsOneWriteEach(self) -> None:
        clients = [self.client().connect() for _ in range(3)]
        for c in clients:
            c.take()
        self.conn.session_service.broadcast("onChat", {"n": 1})
        self.conn.session_service.broadcast("onChat", {"n": 2})
        self.clock.advance(0)
        for c in clients:
            self.assertEqual(c.take(), [push("onChat", b'{"n":1}') + push("onChat", b'{"n":2}')])


class MessageWebSocketTests(MessageTests):
    ws = True


# --- dispatch (§10, §20 items 33-34) -----------------------------------------------------------


class DispatchTests(ConnectorTestCase):
    def setUp(self) -> None:
        self.app = make_test_app()
        self.connector(self.app)
        self.client_ = self.client().connect()

    def ask(self, mid: int, route: str | int, body: bytes = b"{}") -> bytes:
        return self.client_.exchange(request(mid, route, body))

    def test_badRoutes(self) -> None:
        """§10.1 and REC: every route that reaches no handler is answered C{{"code":500}}."""
        routes = [
            "connector.testHandler.nope",
            "connector.nopeHandler.echo",
            "",
            "nodots",
            "connector.testHandler",
            "connector.testHandler.echo.extra",
            "connector..echo",
            ".testHandler.echo",
            "connector.testHandler.constructor",
            "connector.testHandler.__init__",
            "connector.testHandler.__class__",
            "connector.testHandler.__proto__",
            "connector.__class__.__init__",
            "chat.chatHandler.send",
            "area.testHandler.echo",
            "connector.testHandler.ECHO",
        ]
        for i, route in enumerate(routes, 1):
            self.assertEqual(self.ask(i, route), response(i, b'{"code":500}'), route)
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]
        self.assertIs(self.client_.state, ConnectionState.WORKING)

    def test_badRoutesNotify(self) -> None:
        for route in (
            "connector.testHandler.nope",
            "nodots",
            "a.b",
            "connector.testHandler.constructor",
        ):
            self.assertEqual(self.client_.exchange(notify(route)), b"")
        self.assertIs(self.client_.state, ConnectionState.WORKING)

    def test_constructorIsNotAKick(self) -> None:
        """Upstream kicks with "attack"; the whitelist just answers 500 (REC)."""
        self.assertEqual(
            self.ask(1, "connector.entryHandler.constructor"), response(1, b'{"code":500}')
        )
        self.assertFalse(self.client_.transport.closed)

    def test_handlerErrorKeepsCode(self) -> None:
        """§20 item 34: C{next(err, {code: 3})} keeps 3."""
        self.assertEqual(
            self.ask(1, "connector.testHandler.code3"), response(1, b'{"code":3,"msg":"three"}')
        )

    def test_bareHandlerError(self) -> None:
        """C{next(err)} gives C{{"code":500}}."""
        self.assertEqual(self.ask(1, "connector.testHandler.bare"), response(1, b'{"code":500}'))

    def test_handlerErrorWithoutCode(self) -> None:
        self.assertEqual(
            self.ask(1, "connector.testHandler.nocode"), response(1, b'{"msg":"x","code":500}')
        )

    def test_exception(self) -> None:
        self.assertEqual(self.ask(1, "connector.testHandler.boom"), response(1, b'{"code":500}'))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertIs(self.client_.state, ConnectionState.WORKING)

    def test_exceptionInNotify(self) -> None:
        self.assertEqual(self.client_.exchange(notify("connector.testHandler.boom")), b"")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_noneIsEmptyObject(self) -> None:
        self.assertEqual(self.ask(1, "connector.testHandler.none"), h("04 00 00 04 04 01 7b 7d"))

    def test_falsyResultsAreEmptyObject(self) -> None:
        """C{next(null, resp)}: C{resp}, or C{{}} if resp is falsy (JavaScript truthiness)."""
        for i, (body, answer) in enumerate(
            (
                (b"0", b"{}"),
                (b"false", b"{}"),
                (b'""', b"{}"),
                (b"null", b"{}"),
                (b"[]", b"[]"),
                (b"1", b"1"),
            ),
            1,
        ):
            self.assertEqual(
                self.ask(i, "connector.testHandler.echo", body), response(i, answer), body
            )

    def test_notifyNeverAnswered(self) -> None:
        for route in (
            "connector.testHandler.echo",
            "connector.testHandler.none",
            "connector.testHandler.code3",
        ):
            self.assertEqual(self.client_.exchange(notify(route, b'{"n":1}')), b"")
        self.assertEqual(
            self.app.calls,
            [("echo", {"n": 1}), ("none", {"n": 1})],  # type: ignore[attr-defined]
        )

    def test_handlerGetsSession(self) -> None:
        seen: list[Any] = []
        self.app.add_handler(
            "connector.testHandler.who",
            lambda msg, session: seen.append(session) or {"id": session.id},
        )
        written = self.ask(1, "connector.testHandler.who")
        self.assertEqual(seen, [self.client_.session])
        self.assertEqual(written, response(1, b'{"id":%d}' % self.client_.session.id))

    def test_deferredHandler(self) -> None:
        pending: list[Deferred[Any]] = []

        def later(msg: Any, session: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            return d

        self.app.add_handler("connector.testHandler.later", later)
        self.assertEqual(self.ask(1, "connector.testHandler.later"), b"")
        self.assertEqual(self.ask(2, "connector.testHandler.later"), b"")
        # Answers may come in any order; each carries its own id (§10.3).
        pending[1].callback({"n": 2})
        self.assertEqual(b"".join(self.client_.turn()), response(2, b'{"n":2}'))
        pending[0].callback(None)
        self.assertEqual(b"".join(self.client_.turn()), response(1, b"{}"))

    def test_deferredHandlerFails(self) -> None:
        pending: list[Deferred[Any]] = []
        self.app.add_handler(
            "connector.testHandler.later",
            lambda msg, session: pending.append(Deferred()) or pending[-1],
        )
        self.ask(1, "connector.testHandler.later")
        self.ask(2, "connector.testHandler.later")
        pending[0].errback(HandlerError({"code": 3}))
        pending[1].errback(ZeroDivisionError())
        self.assertEqual(
            b"".join(self.client_.turn()), response(1, b'{"code":3}') + response(2, b'{"code":500}')
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_coroutineHandler(self) -> None:
        pending: list[Deferred[Any]] = []

        async def later(msg: Any, session: Any) -> Any:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            value = await d
            if value == "fail":
                raise HandlerError({"code": 7})
            return {"v": value}

        self.app.add_handler("connector.testHandler.later", later)
        self.assertEqual(self.ask(1, "connector.testHandler.later"), b"")
        self.assertEqual(self.ask(2, "connector.testHandler.later"), b"")
        pending[0].callback(5)
        pending[1].callback("fail")
        self.assertEqual(
            b"".join(self.client_.turn()), response(1, b'{"v":5}') + response(2, b'{"code":7}')
        )

    def test_coroutineHandlerRaises(self) -> None:
        async def bad(msg: Any, session: Any) -> Any:
            raise HandlerError({"code": 7})

        async def worse(msg: Any, session: Any) -> Any:
            raise LookupError()

        self.app.add_handler("connector.testHandler.bad", bad)
        self.app.add_handler("connector.testHandler.worse", worse)
        self.assertEqual(self.ask(1, "connector.testHandler.bad"), response(1, b'{"code":7}'))
        self.assertEqual(self.ask(2, "connector.testHandler.worse"), response(2, b'{"code":500}'))
        self.assertEqual(len(self.flushLoggedErrors(LookupError)), 1)

    def test_asyncNotifyNeverAnswered(self) -> None:
        d: Deferred[Any] = Deferred()
        self.app.add_handler("connector.testHandler.later", lambda msg, session: d)
        self.assertEqual(self.client_.exchange(notify("connector.testHandler.later")), b"")
        d.callback({"x": 1})
        self.assertEqual(self.client_.turn(), [])

    def test_asyncAnswerAfterClose(self) -> None:
        d: Deferred[Any] = Deferred()
        self.app.add_handler("connector.testHandler.later", lambda msg, session: d)
        self.ask(1, "connector.testHandler.later")
        self.client_.lose()
        d.callback({"x": 1})
        self.assertEqual(self.client_.turn(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unserialisableResponse(self) -> None:
        self.app.add_handler("connector.testHandler.odd", lambda msg, session: {"x": object()})
        self.assertEqual(self.ask(1, "connector.testHandler.odd"), response(1, b'{"code":500}'))
        self.flushLoggedErrors(TypeError)

    def test_protobufResponseDoesNotFit(self) -> None:
        """§9.3.4 REC: a response that does not fit its proto goes out with an empty body."""
        app = TemplateApp.make(self, entry_answer={"msg": "required code missing"})
        self.connector(app)
        client = self.client().connect()
        self.assertEqual(
            client.exchange(request(5, 1, h("0a 03 62 6f 62"))), h("04 00 00 02 04 05")
        )
        app2 = TemplateApp.make(self, entry_answer={"code": -1})
        self.connector(app2)
        client = self.client().connect()
        self.assertEqual(
            client.exchange(request(6, 1, h("0a 03 62 6f 62"))), h("04 00 00 02 04 06")
        )

    def test_badProtobufRequest(self) -> None:
        """§15.2: an undecodable protobuf body: the request is refused, nothing crashes."""
        app = TemplateApp.make(self)
        self.connector(app, use_protobuf=True)
        client = self.client().connect()
        # Unknown tag 7; the response for this route is protobuf, and {"code":500} lacks
        # nothing the entry proto requires, so it encodes as code=500.
        written = client.exchange(request(5, 1, h("38 01")))
        self.assertEqual(written, h("04 00 00 05 04 05 08 f4 03"))
        self.assertEqual(app.received, [])  # type: ignore[attr-defined]
        self.assertEqual(client.exchange(notify(1, h("38 01"))), b"")
        self.assertIs(client.state, ConnectionState.WORKING)

    def test_responseTooLarge(self) -> None:
        """A response body over 16 MiB cannot be framed: the client gets 500, nothing raises."""
        self.app.add_handler(
            "connector.testHandler.huge", lambda msg, session: {"x": "a" * 0xFFFFFF}
        )
        self.assertEqual(self.ask(1, "connector.testHandler.huge"), response(1, b'{"code":500}'))
        self.assertIs(self.client_.state, ConnectionState.WORKING)


# --- filters ------------------------------------------------------------------------------------


class FilterTests(ConnectorTestCase):
    def setUp(self) -> None:
        self.app = make_test_app()
        self.log: list[Any] = []
        self.connector(self.app)
        self.client_ = self.client().connect()

    def ask(self, mid: int, route: str, body: bytes = b"{}") -> bytes:
        return self.client_.exchange(request(mid, route, body))

    def test_syncBefore(self) -> None:
        @self.app.before
        def before(route: str, msg: Any, session: Any) -> None:
            self.log.append((route, msg, session))

        self.assertEqual(
            self.ask(1, "connector.testHandler.echo", b'{"a":1}'), response(1, b'{"a":1}')
        )
        self.assertEqual(self.log, [("connector.testHandler.echo", {"a": 1}, self.client_.session)])

    def test_beforeRejects(self) -> None:
        @self.app.before
        def before(route: str, msg: Any, session: Any) -> None:
            if msg.get("deny"):
                raise HandlerError({"code": 401})

        self.assertEqual(
            self.ask(1, "connector.testHandler.echo", b'{"deny":1}'), response(1, b'{"code":401}')
        )
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]
        self.assertEqual(
            self.ask(2, "connector.testHandler.echo", b'{"ok":1}'), response(2, b'{"ok":1}')
        )
        self.assertEqual(
            self.client_.exchange(notify("connector.testHandler.echo", b'{"deny":1}')), b""
        )
        self.assertEqual(self.app.calls, [("echo", {"ok": 1})])  # type: ignore[attr-defined]

    def test_beforeRaises(self) -> None:
        @self.app.before
        def before(route: str, msg: Any, session: Any) -> None:
            raise OSError("filter bug")

        self.assertEqual(self.ask(1, "connector.testHandler.echo"), response(1, b'{"code":500}'))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_asyncBefore(self) -> None:
        d: Deferred[None] = Deferred()

        @self.app.before
        def before(route: str, msg: Any, session: Any) -> Deferred[None]:
            return d

        self.assertEqual(self.ask(1, "connector.testHandler.echo"), b"")
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]
        d.callback(None)
        self.assertEqual(b"".join(self.client_.turn()), response(1, b"{}"))

    def test_asyncBeforeRejects(self) -> None:
        @self.app.before
        async def before(route: str, msg: Any, session: Any) -> None:
            raise HandlerError({"code": 403, "why": "no"})

        self.assertEqual(
            self.ask(1, "connector.testHandler.echo"), response(1, b'{"code":403,"why":"no"}')
        )
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]

    def test_afterChangesResponse(self) -> None:
        @self.app.after
        def after(route: str, msg: Any, session: Any, resp: Any) -> Any:
            self.log.append((route, msg, resp))
            return {"wrapped": resp}

        self.assertEqual(
            self.ask(1, "connector.testHandler.echo", b"[1]"), response(1, b'{"wrapped":[1]}')
        )
        self.assertEqual(self.log, [("connector.testHandler.echo", [1], [1])])

    def test_asyncAfter(self) -> None:
        @self.app.after
        async def after(route: str, msg: Any, session: Any, resp: Any) -> Any:
            return {"n": 1}

        @self.app.after
        def after2(route: str, msg: Any, session: Any, resp: Any) -> Any:
            return succeed({"n": resp["n"] + 1})

        self.assertEqual(self.ask(1, "connector.testHandler.echo"), response(1, b'{"n":2}'))

    def test_filtersOrder(self) -> None:
        for name in ("b1", "b2"):
            self.app.before(lambda route, msg, session, name=name: self.log.append(name))
        for name in ("a1", "a2"):
            self.app.after(
                lambda route, msg, session, resp, name=name: self.log.append(name) or resp
            )
        self.assertEqual(self.ask(1, "connector.testHandler.echo"), response(1, b"{}"))
        self.assertEqual(self.log, ["b1", "b2", "a1", "a2"])

    def test_filtersSkippedForUnknownRoute(self) -> None:
        self.app.before(lambda route, msg, session: self.log.append(route))
        self.assertEqual(self.ask(1, "connector.testHandler.nope"), response(1, b'{"code":500}'))
        self.assertEqual(self.log, [])

    def test_handlerErrorWithFilters(self) -> None:
        self.app.before(lambda route, msg, session: None)
        self.assertEqual(
            self.ask(1, "connector.testHandler.code3"), response(1, b'{"code":3,"msg":"three"}')
        )
        self.assertEqual(self.ask(2, "connector.testHandler.boom"), response(2, b'{"code":500}'))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


# --- malformed input (§7.6, §15.2, §20 item 43) -------------------------------------------------


class MalformedTests(ConnectorTestCase):
    def setUp(self) -> None:
        self.app = make_test_app()
        self.connector(self.app)

    def assertAborts(self, raw: bytes) -> None:
        self.connector(self.app)
        bystander = self.client().connect()
        client = self.client().connect()
        client.take()
        client.feed(raw)
        self.assertEqual(client.turn(), [], raw.hex())
        self.assertIs(client.state, ConnectionState.CLOSED)
        self.assertEqual(client.transport.aborted, 1, raw.hex())
        # Other connections are unaffected.
        self.assertEqual(
            bystander.exchange(request(1, "connector.testHandler.echo")), response(1, b"{}")
        )
        bystander.lose()
        self.assertClosedAndClean(client, aborted=True)

    def test_emptyDataBody(self) -> None:
        self.assertAborts(h("04 00 00 00"))

    def test_truncatedId(self) -> None:
        self.assertAborts(encode_package(PackageType.DATA, h("00 80")))
        self.assertAborts(encode_package(PackageType.DATA, h("00")))

    def test_overlongId(self) -> None:
        self.assertAborts(encode_package(PackageType.DATA, h("00 80 80 80 80 80 01 00")))
        self.assertAborts(encode_package(PackageType.DATA, h("00 ff ff ff ff 1f 00")))

    def test_routePastEnd(self) -> None:
        self.assertAborts(encode_package(PackageType.DATA, h("00 01 05 61 62")))
        self.assertAborts(encode_package(PackageType.DATA, h("02 05 61")))

    def test_missingRoute(self) -> None:
        self.assertAborts(encode_package(PackageType.DATA, h("00 01")))
        self.assertAborts(encode_package(PackageType.DATA, h("02")))

    def test_truncatedRouteCode(self) -> None:
        self.assertAborts(encode_package(PackageType.DATA, h("01 01 00")))
        self.assertAborts(encode_package(PackageType.DATA, h("03 00")))

    def test_routeNotUTF8(self) -> None:
        self.assertAborts(encode_package(PackageType.DATA, h("00 01 02 ff fe")))

    def test_messageTypes4to7(self) -> None:
        for flag in (0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F):
            self.assertAborts(encode_package(PackageType.DATA, bytes((flag, 1, 1, 0x61))))

    def test_clientResponseAndPushDropped(self) -> None:
        """§7.6, B20: type 2 and 3 from a client: dropped, no answer, connection kept."""
        client = self.client().connect()
        for raw in (
            data(MessageType.RESPONSE, 1, None, b"{}"),
            data(MessageType.PUSH, 0, "connector.testHandler.echo", b"{}"),
            data(MessageType.PUSH, 0, 1, b"{}"),
        ):
            self.assertEqual(client.exchange(raw), b"")
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]
        self.assertIs(client.state, ConnectionState.WORKING)
        self.assertEqual(
            client.exchange(request(1, "connector.testHandler.echo")), response(1, b"{}")
        )

    def test_malformedBeforeWorkingIgnored(self) -> None:
        """DATA before C{WORKING} is dropped unread, even when malformed."""
        client = self.client()
        client.handshake()
        self.assertEqual(client.exchange(h("04 00 00 00")), b"")
        self.assertIs(client.state, ConnectionState.WAIT_ACK)


class MalformedWebSocketTests(MalformedTests):
    ws = True


# --- kick (§11, §12.4, §20 items 35-37) ---------------------------------------------------------


class KickTests(ConnectorTestCase):
    def setUp(self) -> None:
        self.connector(make_test_app())

    def test_stringReason(self) -> None:
        """§20 item 35: KICK, then a graceful close (not an abort)."""
        client = self.client().connect()
        client.take()
        self.assertTrue(self.conn.session_service.kick_by_session_id(client.session.id, "attack"))
        self.assertEqual(
            client.transport.writes[-1:],
            [h("05 00 00 13 7b 22 72 65 61 73 6f 6e 22 3a 22 61 74 74 61 63 6b 22 7d")],
        )
        self.assertEqual(client.transport.lost, 1)
        self.assertEqual(client.transport.aborted, 0)
        self.assertEqual(
            client.turn(),
            [h("05 00 00 13 7b 22 72 65 61 73 6f 6e 22 3a 22 61 74 74 61 63 6b 22 7d")],
        )
        self.clock.advance(5)
        self.assertEqual(client.transport.aborted, 1)
        self.assertClosedAndClean(client, aborted=False)

    def test_defaultReason(self) -> None:
        client = self.client().connect()
        client.take()
        client.sock.kick()
        self.assertEqual(
            b"".join(client.take()),
            h("05 00 00 11 7b 22 72 65 61 73 6f 6e 22 3a 22 6b 69 63 6b 22 7d"),
        )

    def test_unicodeReason(self) -> None:
        client = self.client().connect()
        client.take()
        client.session.kick("拜拜")
        self.assertEqual(
            b"".join(client.take()), encode_package(PackageType.KICK, '{"reason":"拜拜"}'.encode())
        )

    def test_noneReason(self) -> None:
        """§20 item 36: no KICK package, just the close."""
        client = self.client().connect()
        client.take()
        client.session.kick(None)
        self.assertEqual(client.take(), [])
        self.assertEqual(client.transport.lost, 1)
        self.assertClosedAndClean(client)

    def test_kickBeforeWorking(self) -> None:
        """§20 item 37: no KICK in C{INITED} or C{WAIT_ACK}, only the close."""
        client = self.client()
        client.sock.kick("early")
        self.assertEqual(client.turn(), [])
        self.assertClosedAndClean(client)
        client = self.client()
        client.handshake()
        self.conn.session_service.kick_by_session_id(client.session.id, "early")
        self.assertEqual(client.turn(), [])
        self.assertClosedAndClean(client)

    def test_transportClosingSynchronously(self) -> None:
        """A transport that reports connectionLost from inside loseConnection: the abort
        timer is still cancelled, nothing is left behind."""
        client = self.client().connect()
        lose = client.transport.loseConnection

        def loseConnection() -> None:
            lose()
            client.sock.connectionLost(None)

        client.transport.loseConnection = loseConnection  # type: ignore[method-assign]
        client.sock.kick("bye")
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.conn.sockets, set())
        self.clock.advance(100)
        self.assertEqual(client.transport.aborted, 0)

    def test_noAbortTimer(self) -> None:
        """C{kick_close_timeout} 0: a graceful close with no abort deadline."""
        self.connector(make_test_app(), kick_close_timeout=0)
        client = self.client().connect()
        client.sock.kick("bye")
        self.clock.advance(0)
        self.assertEqual(client.transport.lost, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_kickFlushesQueuedOutput(self) -> None:
        """Output queued earlier in the turn leaves before the KICK, in one write."""
        client = self.client().connect()
        client.take()
        client.session.push("onChat", {"a": 1})
        client.session.kick("bye")
        self.assertEqual(client.take(), [push("onChat", b'{"a":1}') + kick_package("bye")])
        self.assertEqual(client.turn(), [])

    def test_kickByUid(self) -> None:
        """§20 item 40: every session of the uid is kicked; others stay."""
        a, b, c = (self.client().connect() for _ in range(3))
        a.session.bind("bob")
        b.session.bind("bob")
        c.session.bind("alice")
        self.assertEqual(self.conn.session_service.kick("bob", "bye"), 2)
        for x in (a, b):
            self.assertEqual(x.take()[-1], kick_package("bye"))
            self.assertEqual(x.transport.lost, 1)
        self.assertFalse(c.transport.closed)
        self.assertEqual(self.conn.session_service.get_by_uid("bob"), [])
        self.assertEqual(self.conn.session_service.kick("nobody", "bye"), 0)

    def test_nothingSentAfterKick(self) -> None:
        client = self.client().connect()
        session = client.session
        client.take()
        session.kick("bye")
        client.take()
        self.assertFalse(session.push("onChat", {}))
        self.assertEqual(client.turn(), [])

    def test_kickTwice(self) -> None:
        client = self.client().connect()
        client.take()
        client.sock.kick("one")
        client.sock.kick("two")
        self.assertEqual(client.take(), [kick_package("one")])
        self.assertEqual(client.transport.lost, 1)
        self.clock.advance(0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_kickAll(self) -> None:
        clients = [self.client().connect() for _ in range(2)]
        unhandshaken = self.client()
        self.assertEqual(self.conn.kick_all("shutdown"), 3)
        for c in clients:
            self.assertEqual(c.take()[-1], kick_package("shutdown"))
        self.assertEqual(unhandshaken.take(), [])
        for c in [*clients, unhandshaken]:
            self.assertEqual(c.transport.lost, 1)
            c.lose()
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.conn.sockets, set())
        self.assertEqual(self.conn.session_service.sessions_count, 0)

    def test_waitClosed(self) -> None:
        clients = [self.client().connect() for _ in range(2)]
        d = self.conn.wait_closed(10)
        self.assertNoResult(d)
        for c in clients:
            c.lose()
        self.successResultOf(d)
        d = self.conn.wait_closed(10)
        self.successResultOf(d)
        self.client()
        d = self.conn.wait_closed(10)
        self.clock.advance(10)
        self.successResultOf(d)

    def test_closedListener(self) -> None:
        client = self.client().connect()
        seen: list[Any] = []
        client.session.on("closed", lambda session, reason: seen.append((session.id, reason)))
        self.conn.session_service.on(
            "close_session", lambda session, reason: seen.append(("svc", reason))
        )
        sid = client.session.id
        client.sock.kick("bye")
        client.lose()
        self.assertEqual(len(seen), 2)
        self.assertEqual(seen[1][0], sid)
        self.assertIn("bye", seen[1][1])


# --- robustness: any input (§20 item 43) --------------------------------------------------------

_HANDSHAKE_ACK = HANDSHAKE_1 + ACK

_package = st.builds(
    lambda t, body: encode_package(t, body),
    st.sampled_from([1, 2, 3, 4, 4, 4, 5]),
    st.one_of(
        st.binary(max_size=40),
        st.builds(
            lambda flag, mid, route, body: bytes((flag,)) + mid + route + body,
            st.integers(0, 255),
            st.binary(max_size=3),
            st.one_of(
                st.sampled_from(
                    [
                        b"\x00\x01",
                        b"\x00\x07",
                        b"\x1bconnector.entryHandler.echo",
                        b"\x1cconnector.entryHandler.proto",
                        b"\x1bconnector.entryHandler.kick",
                        b"\x1bconnector.entryHandler.bind",
                        b"\x1bconnector.entryHandler.push",
                        b"\x20connector.entryHandler.broadcast",
                    ]
                ),
                st.binary(max_size=4),
            ),
            st.one_of(
                st.binary(max_size=20),
                st.sampled_from([b"{}", b'{"uid":"u"}', b"[1]", b"\x08\x01\x12\x01a"]),
            ),
        ),
    ),
)

_streams = st.one_of(
    st.binary(max_size=200),
    st.lists(_package, max_size=8).map(b"".join),
    st.lists(_package, max_size=8).map(lambda ps: _HANDSHAKE_ACK + b"".join(ps)),
    st.tuples(st.binary(max_size=20), st.lists(_package, max_size=4)).map(
        lambda t: _HANDSHAKE_ACK + b"".join(t[1]) + t[0]
    ),
)


class RobustnessTests(SynchronousTestCase):
    """Hypothesis: whatever bytes arrive, nothing raises out of the socket, and the connection
    is either still open or was closed through its transport."""

    def check(self, client: Client, clock: task.Clock, connector: Connector) -> None:
        clock.advance(0)
        self.assertEqual(client.transport.late_writes, [])
        if client.state is ConnectionState.CLOSED:
            self.assertTrue(client.transport.closed)
        else:
            self.assertFalse(client.transport.closed)
        client.lose()
        clock.advance(0)
        clock.advance(100)  # timers of kicked connections, if any
        self.assertEqual(connector.session_service.sessions_count, 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(connector.sockets, set())
        self.flushLoggedErrors()

    @given(_streams, st.lists(st.integers(0, 300), max_size=6))
    def test_tcpStream(self, stream: bytes, cuts: list[int]) -> None:
        connector, clock = make_connector()
        client = Client(connector, clock, ws=False)
        points = sorted({min(c, len(stream)) for c in cuts})
        start = 0
        for point in [*points, len(stream)]:
            client.feed(stream[start:point])
            start = point
        self.check(client, clock, connector)

    @given(st.lists(st.one_of(_package, st.binary(max_size=30)), max_size=6), st.booleans())
    def test_webSocketMessages(self, messages_: list[bytes], handshaken: bool) -> None:
        connector, clock = make_connector()
        client = Client(connector, clock, ws=True)
        if handshaken:
            client.feed(HANDSHAKE_1)
            client.feed(ACK)
        for message in messages_:
            client.feed(message)
        self.check(client, clock, connector)

    @given(
        st.lists(_package, max_size=8).map(lambda ps: _HANDSHAKE_ACK + b"".join(ps)),
        st.integers(1, 3),
    )
    def test_splitIsIrrelevant(self, stream: bytes, size: int) -> None:
        """The same stream of well-framed packages in one chunk or in tiny chunks gives the
        same output (§3.4). (An abort drops what the turn had not yet written, so when the
        stream ends in an abort only the abort itself is compared.)"""
        outputs = []
        for chunk in (len(stream) or 1, size):
            connector, clock = make_connector()
            client = Client(connector, clock, ws=False)
            for i in range(0, len(stream), chunk):
                client.feed(stream[i : i + chunk])
                clock.advance(0)
            aborted = client.transport.aborted
            written = b"" if aborted else b"".join(client.transport.writes)
            outputs.append((written, client.state, aborted, client.transport.lost))
            self.check(client, clock, connector)
        self.assertEqual(outputs[0], outputs[1])
