"""The WebSocket transport's own reading of simple frames, mixed with frames Autobahn reads.

L{PomeloWebSocketProtocol._dataReceived} reads whole, final, masked binary frames itself and
leaves every other frame (pings, fragments, part-read frames, oversized ones) to Autobahn; the
two must hand over cleanly in any order and at any split.
"""

from __future__ import annotations

import json

from pomelo_twisted.protocol.message import MessageType, decode_message, encode_message
from pomelo_twisted.protocol.package import PackageType, decode_packages, encode_package
from tests.support.transports import WebSocketClient, WebSocketMemoryHarness, client_frame


def request(mid: int, route: str, body: bytes = b"{}") -> bytes:
    return encode_package(PackageType.DATA, encode_message(MessageType.REQUEST, mid, route, body))


ENTRY = "connector.entryHandler.entry"
ECHO = "connector.entryHandler.echo"


class FastPathTests(WebSocketMemoryHarness):
    def answers(self, client: WebSocketClient) -> list[tuple[int, object]]:
        """(id, body) of every response the client got, one package per message."""
        out = []
        for payload, is_binary in client.messages:
            self.assertTrue(is_binary)
            [package] = decode_packages(payload)
            msg = decode_message(package.body)
            out.append((msg.id, json.loads(msg.body)))
        return out

    def mixed_stream(self) -> bytes:
        big = json.dumps({"pad": "x" * 300}).encode()
        first, second = request(3, ENTRY)[:5], request(3, ENTRY)[5:]
        return b"".join(
            [
                client_frame(request(1, ENTRY)),
                client_frame(b"ping!", opcode=9),  # Autobahn answers it with a pong
                client_frame(request(2, ECHO, big)),  # a 16-bit extended length
                # One message in two fragments: Autobahn reassembles it.
                bytes([0x02, 0x80 | len(first)]) + b"\x00\x00\x00\x00" + first,
                bytes([0x80, 0x80 | len(second)]) + b"\x00\x00\x00\x00" + second,
                client_frame(request(4, ENTRY)),
            ]
        )

    def expected(self) -> list[tuple[int, object]]:
        ok = {"code": 200, "msg": "game server is ok."}
        return [(1, ok), (2, {"pad": "x" * 300}), (3, ok), (4, ok)]

    def test_mixed_frames_in_one_read(self) -> None:
        client, pump = self.ready()
        client.transport.write(self.mixed_stream())
        pump.flush()
        self.assertEqual(self.answers(client), self.expected())
        self.assertIsNone(client.closed)

    def test_mixed_frames_byte_at_a_time(self) -> None:
        client, pump = self.ready()
        for i, byte in enumerate(self.mixed_stream()):
            client.transport.write(bytes([byte]))
            pump.flush()
            if i == 10:
                self.assertEqual(client.messages, [])  # nothing from half a frame
        self.assertEqual(self.answers(client), self.expected())

    def test_oversized_frame_left_to_autobahn(self) -> None:
        """A frame over the cap is not read here: Autobahn closes with 1009."""
        client, pump = self.ready()
        limit = self.connector.config.max_package_size + 4
        client.transport.write(client_frame(b"\x00" * (limit + 1)))
        pump.flush()
        self.assertEqual(client.messages, [])
        self.assertIsNotNone(client.closed)
        self.assertEqual(client.closed[1], 1009)

    def test_unmasked_frame_refused(self) -> None:
        """A client frame must be masked (RFC 6455 §5.1): Autobahn fails the connection."""
        client, pump = self.ready()
        client.transport.write(bytes([0x82, 4]) + encode_package(PackageType.HEARTBEAT))
        pump.flush()
        self.assertIsNotNone(client.closed)
        self.assertEqual(self.connector.sockets, set())

    def test_message_that_closes_stops_reading(self) -> None:
        """After a package closes the connection (a client KICK), later frames are not read."""
        client, pump = self.ready()
        client.transport.write(
            client_frame(encode_package(PackageType.KICK, b"{}")) + client_frame(request(9, ENTRY))
        )
        pump.flush()
        self.assertEqual(client.messages, [])
        self.assertEqual(self.connector.sockets, set())
