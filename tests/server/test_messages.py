"""DATA messages through the connector (protocol.md §7, §8, §20 items 27-32): requests,
notifies, responses and pushes, with and without the route dictionary and protobuf, over TCP and
WebSocket.
"""

from __future__ import annotations

from pomelo_twisted.demo import make_app
from pomelo_twisted.protocol.connection import ConnectionState
from pomelo_twisted.protocol.message import MessageType, decode_message
from pomelo_twisted.protocol.package import PackageType, encode_package
from tests.support.connector import (
    HEARTBEAT,
    ConnectorTestCase,
    TemplateApp,
    make_test_app,
    notify,
    packages,
    push,
    request,
    response,
)
from tests.support.vectors import h

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
        client.session.push_message("onChat", {"msg": "hi"})
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

    def test_spec_75_examples(self) -> None:
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
        client.session.push_message("onChat", {"msg": "hi"})
        client.session.push_message("onMove", {"msg": "yo"})
        self.assertEqual(
            client.turn(),
            [
                h("04 00 00 0f 07 00 04 7b 22 6d 73 67 22 3a 22 68 69 22 7d")
                + h("04 00 00 14 06 06 6f 6e 4d 6f 76 65 7b 22 6d 73 67 22 3a 22 79 6f 22 7d")
            ],
        )

    def test_spec_936_complete_packages(self) -> None:
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

    def test_browser_wire_type_quirk(self) -> None:
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

    def test_ids_echoed(self) -> None:
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

    def test_id_zero_is_notify(self) -> None:
        """§7.2: a REQUEST with id 0 never gets a response."""
        client = self.client().connect()
        self.assertEqual(client.exchange(request(0, "connector.testHandler.echo")), b"")
        self.assertEqual(self.app.calls, [("echo", {})])  # type: ignore[attr-defined]

    def test_compressed_request(self) -> None:
        """§20 item 29: the route code is expanded through the dictionary."""
        client = self.client().connect()
        assert self.conn.dictionary is not None
        code = self.conn.dictionary.route_to_code("connector.testHandler.echo")
        assert code is not None
        written = client.exchange(request(9, code, b'{"c":1}'))
        self.assertEqual(written, response(9, b'{"c":1}'))
        self.assertEqual(self.app.calls, [("echo", {"c": 1})])  # type: ignore[attr-defined]

    def test_unknown_code(self) -> None:
        """§20 item 30 (REC): 500 for a request, nothing for a notify; the connection stays."""
        client = self.client().connect()
        self.assertEqual(client.exchange(request(3, 999)), response(3, b'{"code":500}'))
        self.assertEqual(
            client.exchange(h("04 00 00 06 01 04 ff ff 7b 7d")), response(4, b'{"code":500}')
        )
        self.assertEqual(client.exchange(notify(999)), b"")
        self.assertIs(client.state, ConnectionState.WORKING)

    def test_compressed_route_without_dict(self) -> None:
        self.connector(self.app, use_dict=False)
        client = self.client().connect()
        self.assertEqual(client.exchange(request(3, 1)), response(3, b'{"code":500}'))
        self.assertEqual(client.exchange(notify(1)), b"")
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]

    def test_responses_never_compressed(self) -> None:
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

    def test_push_compression(self) -> None:
        """§20 item 31: compressed only when use_dict is on and the route is in the dict."""
        self.connector(self.app)  # make_test_app has no dictionary.json: onChat is not in the dict
        client = self.client().connect()
        client.session.push_message("connector.testHandler.echo", {"a": 1})
        client.session.push_message("onChat", {"a": 2})
        assert self.conn.dictionary is not None
        code = self.conn.dictionary.route_to_code("connector.testHandler.echo")
        self.assertEqual(
            client.turn(),
            [push(code, b'{"a":1}') + push("onChat", b'{"a":2}')],  # type: ignore[arg-type]
        )
        # With the dictionary off, nothing is compressed.
        self.connector(self.app, use_dict=False)
        client = self.client().connect()
        client.session.push_message("connector.testHandler.echo", {"a": 1})
        self.assertEqual(client.turn(), [push("connector.testHandler.echo", b'{"a":1}')])

    def test_push_flags(self) -> None:
        """Pushes carry flag 06 or 07 only: bits 4-7 are never set (§7.1)."""
        demo = make_app()
        self.connector(demo)
        client = self.client().connect()
        client.session.push_message("onPush", {"x": 1})
        client.session.push_message("elsewhere", {"x": 1})
        flags = [p.body[0] for p in packages(b"".join(client.turn()))]
        self.assertEqual(flags, [0x07, 0x06])

    def test_invalid_json_body_is_empty_object(self) -> None:
        """§9.2: an empty or unparsable body becomes C{{}} and the handler still runs."""
        client = self.client().connect()
        for i, body in enumerate((b"", b"{oops", b"\xff"), 1):
            self.assertEqual(
                client.exchange(request(i, "connector.testHandler.echo", body)), response(i, b"{}")
            )
        self.assertEqual(self.app.calls, [("echo", {})] * 3)  # type: ignore[attr-defined]

    def test_json_bodies(self) -> None:
        client = self.client().connect()
        body = '{"s":"héllo 世界","n":[1,2.5,null,true],"o":{}}'.encode()
        self.assertEqual(
            client.exchange(request(1, "connector.testHandler.echo", body)), response(1, body)
        )

    def test_cesu8_body(self) -> None:
        """§9.2: the browser client's CESU-8 surrogate pairs decode to the real character."""
        client = self.client().connect()
        cesu = b'{"e":"' + "\ud83d\ude00".encode("utf-8", "surrogatepass") + b'"}'
        written = client.exchange(request(1, "connector.testHandler.echo", cesu))
        self.assertEqual(written, response(1, '{"e":"😀"}'.encode()))

    def test_several_sends_one_write(self) -> None:
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

    def test_several_connections_one_write_each(self) -> None:
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
