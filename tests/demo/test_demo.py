"""Tests for the demo app (L{pomelo_twisted.demo}): every route of the shared ROUTES.md, in
memory, over the raw TCP path and the WebSocket path, with the demo's own configuration
(heartbeat 3, dictionary and pomelo-protobuf on).
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.demo import CONFIG_DIR, EntryHandler, make_app
from pomelo_twisted.protocol.connection import ConnectionState
from pomelo_twisted.protocol.message import MessageType
from pomelo_twisted.protocol.package import PackageType, encode_package
from pomelo_twisted.protocol.protobuf import Protobuf
from pomelo_twisted.server.config import ConnectorConfig
from tests.support.connector import (
    ACK,
    Client,
    kick_package,
    make_connector,
    notify,
    packages,
    push,
    request,
    response,
)
from tests.support.vectors import h, load_vectors

R = "connector.entryHandler."

# ROUTES.md: "bind 1, broadcast 2, echo 3, entry 4, kick 5, notify 6, proto 7, push 8, onPush 9,
# onNotify 10, onBroadcast 11".
CODES = {
    R + "bind": 1,
    R + "broadcast": 2,
    R + "echo": 3,
    R + "entry": 4,
    R + "kick": 5,
    R + "notify": 6,
    R + "proto": 7,
    R + "push": 8,
    "onPush": 9,
    "onNotify": 10,
    "onBroadcast": 11,
}

ENTRY_BODY = b'{"code":200,"msg":"game server is ok."}'

# tests/vectors/protobuf.json's case for the proto route, encoded as the Node/C#/libpomelo2
# encoders write it...
PROTO_MESSAGE = {
    "id": 300,
    "name": "knight",
    "values": [-1, 0, 70000, -70000],
    "score": 1.5,
    "items": [{"kind": 1, "label": "sword"}, {"kind": 2}],
}
PROTO_BODY = h(
    "08 ac 02 12 06 6b 6e 69 67 68 74 18 04 01 00 e0 c5 08 df c5 08 21 00 00 00 00 00 00 f8 3f"
    " 2a 09 08 01 12 05 73 77 6f 72 64 2a 02 08 02"
)
# ...and as the browser JS client writes it (§9.3.3): every uInt32/sInt32 key, and the key of
# the repeated sInt32 field, with wire type 2 (0a, 1a, and 0a inside each Item).
PROTO_BODY_BROWSER = h(
    "0a ac 02 12 06 6b 6e 69 67 68 74 1a 04 01 00 e0 c5 08 df c5 08 21 00 00 00 00 00 00 f8 3f"
    " 2a 09 0a 01 12 05 73 77 6f 72 64 2a 02 0a 02"
)


class DemoConfigTests(SynchronousTestCase):
    def test_routes(self) -> None:
        """ROUTES.md: eight routes, all C{connector.entryHandler.*}."""
        self.assertEqual(
            sorted(make_app().routes),
            sorted(
                R + m
                for m in ("entry", "echo", "bind", "push", "notify", "broadcast", "kick", "proto")
            ),
        )

    def test_dictionary_codes(self) -> None:
        connector, _ = make_connector()
        assert connector.dictionary is not None
        self.assertEqual(connector.dictionary.routeToCode, CODES)
        self.assertEqual(list(connector.dictionary.routeToCode), list(CODES))

    def test_versions_match_reference(self) -> None:
        """The dictionary and protos versions are the reference server's."""
        cases = load_vectors("handshake.json")["cases"]
        sys = cases[0]["response_json"]["sys"]
        connector, _ = make_connector()
        assert connector.dictionary is not None and connector.protobuf is not None
        self.assertEqual(connector.dictionary.version, sys["dictVersion"])
        self.assertEqual(connector.protobuf.version, sys["protos"]["version"])
        self.assertEqual(connector.protobuf.server, sys["protos"]["server"])
        self.assertEqual(connector.protobuf.client, sys["protos"]["client"])

    def test_config_dir_shipped(self) -> None:
        for name in ("dictionary.json", "clientProtos.json", "serverProtos.json"):
            self.assertTrue(os.path.isfile(os.path.join(CONFIG_DIR, name)), name)

    def test_defaults_are_the_demo_config(self) -> None:
        config = ConnectorConfig()
        self.assertEqual((config.heartbeat, config.use_dict, config.use_protobuf), (3, True, True))

    def test_proto_vectors(self) -> None:
        protobuf = Protobuf.from_config_dir(CONFIG_DIR)
        [case] = [c for c in load_vectors("protobuf.json")["cases"] if c["route"] == R + "proto"]
        self.assertEqual(case["message"], PROTO_MESSAGE)
        self.assertEqual(case["encoded_hex"], PROTO_BODY.hex())
        self.assertEqual(protobuf.decode_client(R + "proto", PROTO_BODY), PROTO_MESSAGE)
        self.assertEqual(protobuf.decode_client(R + "proto", PROTO_BODY_BROWSER), PROTO_MESSAGE)

    def test_handler_object(self) -> None:
        """Only the eight route methods are public on the handler."""
        public = sorted(
            k for k, v in vars(EntryHandler).items() if callable(v) and not k.startswith("_")
        )
        self.assertEqual(
            public, ["bind", "broadcast", "echo", "entry", "kick", "notify", "proto", "push"]
        )


class DemoTests(SynchronousTestCase):
    """Every route, over raw TCP; L{DemoWebSocketTests} runs the same over WebSocket."""

    ws = False

    def setUp(self) -> None:
        self.conn, self.clock = make_connector(make_app())

    def client(self, connect: bool = True) -> Client:
        client = Client(self.conn, self.clock, ws=self.ws)
        return client.connect() if connect else client

    def ask(self, client: Client, mid: int, route: str | int, body: bytes = b"{}") -> bytes:
        return client.exchange(request(mid, route, body))

    # Handshake

    def test_handshake_vectors(self) -> None:
        for case in load_vectors("handshake.json")["cases"]:
            client = self.client(connect=False)
            self.assertEqual(
                client.handshake(case["request_body"].encode()).hex(), case["response_hex"]
            )

    # entry

    def test_entry(self) -> None:
        """The template's answer, §7.5 and §19.1 byte for byte."""
        client = self.client()
        self.assertEqual(
            self.ask(client, 1, R + "entry"),
            h(
                "04 00 00 29 04 01 7b 22 63 6f 64 65 22 3a"
                " 32 30 30 2c 22 6d 73 67 22 3a 22 67 61 6d"
                " 65 20 73 65 72 76 65 72 20 69 73 20 6f 6b 2e 22 7d"
            ),
        )
        self.assertEqual(self.ask(client, 2, CODES[R + "entry"]), response(2, ENTRY_BODY))
        self.assertEqual(self.ask(client, 300, R + "entry", b"garbage"), response(300, ENTRY_BODY))

    # echo

    def test_echo(self) -> None:
        client = self.client()
        for i, body in enumerate(
            (
                b"{}",
                b'{"a":1,"b":[1,2,{"c":null}],"d":"x"}',
                '{"s":"héllo 世界"}'.encode(),
                b"[1,2,3]",
                b'"text"',
                b"42",
                b'{"z":1,"a":2}',  # key order kept
            ),
            1,
        ):
            self.assertEqual(self.ask(client, i, R + "echo", body), response(i, body))
            self.assertEqual(
                self.ask(client, 100 + i, CODES[R + "echo"], body), response(100 + i, body)
            )

    def test_echo_empty_body(self) -> None:
        client = self.client()
        self.assertEqual(self.ask(client, 1, R + "echo", b""), response(1, b"{}"))

    # bind

    def test_bind(self) -> None:
        client = self.client()
        self.assertEqual(
            self.ask(client, 1, R + "bind", b'{"uid":"u1"}'),
            response(1, b'{"code":200,"uid":"u1"}'),
        )
        self.assertEqual(client.session.uid, "u1")
        self.assertEqual(self.conn.session_service.get_by_uid("u1"), [client.session])
        # Binding again to the same uid succeeds; to another uid fails.
        self.assertEqual(
            self.ask(client, 2, CODES[R + "bind"], b'{"uid":"u1"}'),
            response(2, b'{"code":200,"uid":"u1"}'),
        )
        self.assertEqual(
            self.ask(client, 3, R + "bind", b'{"uid":"u2"}'), response(3, b'{"code":500}')
        )
        self.assertEqual(client.session.uid, "u1")

    def test_bind_numeric_uid(self) -> None:
        """The answer carries the uid as the client sent it."""
        client = self.client()
        self.assertEqual(
            self.ask(client, 1, R + "bind", b'{"uid":42}'), response(1, b'{"code":200,"uid":42}')
        )
        self.assertEqual(client.session.uid, "42")

    def test_bind_without_uid(self) -> None:
        client = self.client()
        self.assertEqual(self.ask(client, 1, R + "bind", b"{}"), response(1, b'{"code":500}'))
        self.assertIsNone(client.session.uid)

    def test_bind_empty_uid(self) -> None:
        """Refused with 500, as a handler error (nothing is logged as a failure)."""
        client = self.client()
        self.assertEqual(
            self.ask(client, 1, R + "bind", b'{"uid":""}'), response(1, b'{"code":500}')
        )
        self.assertIsNone(client.session.uid)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_bind_several_sessions(self) -> None:
        """Several sessions per uid are allowed by default (§12.2)."""
        a, b = self.client(), self.client()
        self.ask(a, 1, R + "bind", b'{"uid":"u"}')
        self.assertEqual(
            self.ask(b, 1, R + "bind", b'{"uid":"u"}'), response(1, b'{"code":200,"uid":"u"}')
        )
        self.assertEqual(len(self.conn.session_service.get_by_uid("u")), 2)

    def test_bind_single_session(self) -> None:
        self.conn, self.clock = make_connector(make_app(), single_session=True)
        a, b = self.client(), self.client()
        self.ask(a, 1, R + "bind", b'{"uid":"u"}')
        self.assertEqual(self.ask(b, 1, R + "bind", b'{"uid":"u"}'), response(1, b'{"code":500}'))
        self.assertFalse(a.transport.closed)

    # push and notify

    def test_push(self) -> None:
        """The push (compressed: onPush is code 9) and the answer leave in one write."""
        client = self.client()
        client.feed(request(1, R + "push", b'{"m":"hi"}'))
        self.assertEqual(
            client.turn(),
            [h("04 00 00 0d 07 00 09") + b'{"m":"hi"}' + response(1, b'{"code":200}')],
        )

    def test_push_uncompressed_without_dict(self) -> None:
        self.conn, self.clock = make_connector(make_app(), use_dict=False)
        client = self.client()
        self.assertEqual(
            self.ask(client, 1, R + "push", b"[1]"),
            push("onPush", b"[1]") + response(1, b'{"code":200}'),
        )

    def test_notify(self) -> None:
        """A notify: the push on onNotify (code 10), no response."""
        client = self.client()
        written = client.exchange(notify(R + "notify", b'{"n":1}'))
        self.assertEqual(written, h("04 00 00 0a 07 00 0a") + b'{"n":1}')
        self.assertEqual(client.exchange(notify(CODES[R + "notify"], b"[]")), push(10, b"[]"))

    def test_notify_as_request(self) -> None:
        """Requested instead: the handler returns nothing, so the answer is C{{}}."""
        client = self.client()
        self.assertEqual(
            self.ask(client, 1, R + "notify", b"{}"), push(10, b"{}") + response(1, b"{}")
        )

    def test_push_as_notify(self) -> None:
        client = self.client()
        self.assertEqual(client.exchange(notify(R + "push", b"{}")), push(9, b"{}"))

    # broadcast

    def test_broadcast(self) -> None:
        """Every working session gets it, TCP and WebSocket alike; one write each."""
        sender = self.client()
        tcp = Client(self.conn, self.clock, ws=False).connect()
        ws = Client(self.conn, self.clock, ws=True).connect()
        waiting = Client(self.conn, self.clock, ws=False)
        waiting.handshake()  # a session, but not yet working: not sent (§4)
        sender.feed(request(7, R + "broadcast", b'{"b":1}'))
        self.clock.advance(0)
        message = h("04 00 00 0a 07 00 0b") + b'{"b":1}'
        self.assertEqual(sender.take(), [message + response(7, b'{"code":200}')])
        self.assertEqual(tcp.take(), [message])
        self.assertEqual(ws.take(), [message])
        self.assertEqual(waiting.take(), [])

    def test_broadcast_by_code(self) -> None:
        sender = self.client()
        other = self.client()
        sender.feed(request(1, CODES[R + "broadcast"], b"[]"))
        self.clock.advance(0)
        self.assertEqual(other.take(), [push(11, b"[]")])

    # kick

    def test_kick(self) -> None:
        """Every session bound to the uid gets the KICK and is closed; the caller is answered."""
        a, b, c, d = self.client(), self.client(), self.client(), self.client()
        for client, uid in ((a, "bob"), (b, "bob"), (c, "alice")):
            self.ask(client, 1, R + "bind", json.dumps({"uid": uid}).encode())
        self.assertEqual(
            self.ask(d, 2, R + "kick", b'{"uid":"bob","reason":"bye"}'),
            response(2, b'{"code":200}'),
        )
        for kicked in (a, b):
            self.assertEqual(kicked.take(), [kick_package("bye")])
            self.assertEqual(kicked.transport.lost, 1)
            self.assertIs(kicked.state, ConnectionState.CLOSED)
        self.assertFalse(c.transport.closed)
        self.assertEqual(self.conn.session_service.get_by_uid("bob"), [])
        # The kicked clients never go: they are aborted after the deadline.
        self.clock.advance(self.conn.config.kick_close_timeout)
        self.assertEqual((a.transport.aborted, b.transport.aborted, c.transport.aborted), (1, 1, 0))
        a.lose()
        b.lose()
        self.assertEqual(self.conn.session_service.sessions_count, 2)
        self.assertEqual(len(self.conn.sockets), 2)

    def test_kick_byte_exact(self) -> None:
        a, d = self.client(), self.client()
        self.ask(a, 1, R + "bind", b'{"uid":"u"}')
        self.ask(d, 1, CODES[R + "kick"], b'{"uid":"u","reason":"kick"}')
        self.assertEqual(
            a.take(), [h("05 00 00 11 7b 22 72 65 61 73 6f 6e 22 3a 22 6b 69 63 6b 22 7d")]
        )

    def test_kick_default_reason(self) -> None:
        """Without a string reason the demo kicks with "kick" (B16: a KICK is always sent)."""
        a, d = self.client(), self.client()
        self.ask(a, 1, R + "bind", b'{"uid":"u"}')
        self.ask(d, 1, R + "kick", b'{"uid":"u"}')
        self.assertEqual(a.take(), [kick_package("kick")])

    def test_kick_without_uid(self) -> None:
        """No uid, nobody kicked (not even a session bound to the uid "None")."""
        a, d = self.client(), self.client()
        self.ask(a, 1, R + "bind", b'{"uid":"None"}')
        self.assertEqual(
            self.ask(d, 1, R + "kick", b'{"reason":"x"}'), response(1, b'{"code":200}')
        )
        self.assertEqual(self.ask(d, 2, R + "kick", b"[]"), response(2, b'{"code":200}'))
        self.assertEqual(a.take(), [])
        self.assertFalse(a.transport.closed)

    def test_kick_unknown_uid(self) -> None:
        client = self.client()
        self.assertEqual(
            self.ask(client, 1, R + "kick", b'{"uid":"nobody"}'), response(1, b'{"code":200}')
        )
        self.assertFalse(client.transport.closed)

    def test_kick_self(self) -> None:
        client = self.client()
        self.ask(client, 1, R + "bind", b'{"uid":"me"}')
        client.feed(request(2, R + "kick", b'{"uid":"me","reason":"self"}'))
        self.assertEqual(client.take(), [kick_package("self")])
        self.assertEqual(client.transport.lost, 1)
        self.assertEqual(client.turn(), [])
        self.assertEqual(client.transport.late_writes, [])
        client.lose()
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    # proto

    def test_proto(self) -> None:
        """Protobuf request, protobuf response, with the demo's protos (vector case)."""
        client = self.client()
        self.assertEqual(self.ask(client, 1, R + "proto", PROTO_BODY), response(1, PROTO_BODY))
        self.assertEqual(
            self.ask(client, 2, CODES[R + "proto"], PROTO_BODY),
            encode_package(PackageType.DATA, h("04 02") + PROTO_BODY),
        )

    def test_proto_browser_wire_types(self) -> None:
        """The browser client's wrong wire types are read; the answer has the right ones."""
        client = self.client()
        self.assertEqual(
            self.ask(client, 3, CODES[R + "proto"], PROTO_BODY_BROWSER), response(3, PROTO_BODY)
        )

    def test_proto_small(self) -> None:
        client = self.client()
        body = h("08 07 12 01 61")  # {"id":7,"name":"a"}
        self.assertEqual(self.ask(client, 1, R + "proto", body), response(1, body))
        browser = h("0a 07 12 01 61")
        self.assertEqual(self.ask(client, 2, R + "proto", browser), response(2, body))

    def test_proto_field_order_kept(self) -> None:
        """The answer follows the object's key order, which is the order fields arrived in."""
        client = self.client()
        body = h("12 01 61 08 07")  # name first
        self.assertEqual(self.ask(client, 1, R + "proto", body), response(1, body))

    def test_proto_missing_required_answers_empty(self) -> None:
        """The echo does not fit the server proto (required id missing): empty body."""
        client = self.client()
        self.assertEqual(self.ask(client, 1, R + "proto", h("12 01 61")), h("04 00 00 02 04 01"))
        self.assertEqual(self.ask(client, 2, R + "proto", b""), h("04 00 00 02 04 02"))

    def test_proto_bad_body(self) -> None:
        """An undecodable body (unknown tag): the request fails; its 500 answer does not fit
        the proto either, so the body is empty. Nothing crashes, the connection stays."""
        client = self.client()
        self.assertEqual(self.ask(client, 1, R + "proto", h("78 01")), h("04 00 00 02 04 01"))
        self.assertEqual(self.ask(client, 2, R + "proto", h("08")), h("04 00 00 02 04 02"))
        self.assertEqual(client.exchange(notify(R + "proto", h("78 01"))), b"")
        self.assertIs(client.state, ConnectionState.WORKING)
        self.assertEqual(self.ask(client, 3, R + "entry"), response(3, ENTRY_BODY))

    def test_proto_as_json_without_protobuf(self) -> None:
        """With protobuf off, the route is plain JSON."""
        self.conn, self.clock = make_connector(make_app(), use_protobuf=False)
        client = self.client()
        body = json.dumps(PROTO_MESSAGE, separators=(",", ":")).encode()
        self.assertEqual(self.ask(client, 1, R + "proto", body), response(1, body))

    # unknown routes

    def test_unknown_routes(self) -> None:
        client = self.client()
        for i, route in enumerate(
            (
                R + "nope",
                R + "constructor",
                R + "__init__",
                R + "_app",
                R + "__class__",
                "connector.otherHandler.entry",
                "chat.chatHandler.send",
                "area.entryHandler.entry",
                "connector.entryHandler",
                "entry",
                "",
                R + "entry.x",
            ),
            1,
        ):
            self.assertEqual(self.ask(client, i, route), response(i, b'{"code":500}'), route)
        self.assertEqual(self.ask(client, 99, 12), response(99, b'{"code":500}'))  # unknown code
        self.assertFalse(client.transport.closed)

    def test_unknown_route_notify(self) -> None:
        client = self.client()
        self.assertEqual(client.exchange(notify(R + "nope")), b"")
        self.assertEqual(client.exchange(notify(12)), b"")

    # a whole session

    def test_session(self) -> None:
        """Handshake, ACK, a few routes and heartbeats, then a clean close by the client."""
        client = self.client(connect=False)
        hello = (
            b'{"sys":{"type":"js-websocket","version":"0.0.1","rsa":{},"protoVersion":0},"user":{}}'
        )
        self.assertIn(b'"code":200', client.handshake(hello))
        self.assertEqual(client.exchange(ACK), h("03 00 00 00"))
        self.assertEqual(self.ask(client, 1, CODES[R + "entry"]), response(1, ENTRY_BODY))
        self.clock.advance(3)
        self.assertEqual(client.exchange(h("03 00 00 00")), h("03 00 00 00"))
        self.assertEqual(
            [p.type for p in packages(self.ask(client, 2, CODES[R + "push"], b"{}"))],
            [PackageType.DATA, PackageType.DATA],
        )
        self.clock.advance(3)
        self.assertEqual(client.exchange(h("03 00 00 00")), h("03 00 00 00"))
        client.lose()
        self.clock.advance(0)
        self.assertEqual(self.conn.session_service.sessions_count, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.conn.sockets, set())

    def test_heartbeat_timeout(self) -> None:
        client = self.client()
        self.clock.advance(5.5)
        self.assertFalse(client.transport.closed)
        self.clock.advance(0.5)
        self.assertEqual(client.transport.lost, 1)
        self.assertEqual(client.take(), [])

    def test_response_type(self) -> None:
        client = self.client()
        for p in packages(self.ask(client, 5, R + "entry")):
            self.assertEqual(p.body[0] >> 1, MessageType.RESPONSE)
            self.assertEqual(p.body[0] & 0xF1, 0)


class DemoWebSocketTests(DemoTests):
    ws = True
