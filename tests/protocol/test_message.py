"""Tests for L{pomelo_twisted.protocol.message}: DATA messages (protocol.md §7, §20 items 27-29)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.protocol.dictionary import RouteDictionary
from pomelo_twisted.protocol.errors import EncodeError, MessageError, PomeloError, ProtocolError
from pomelo_twisted.protocol.message import (
    MAX_ID,
    Message,
    MessageType,
    decode_message,
    decode_varint,
    encode_message,
    encode_push,
    encode_response,
    encode_varint,
)
from pomelo_twisted.protocol.package import PackageType, decode_packages, encode_package
from tests.support.vectors import h, load_vectors

ENTRY = "connector.entryHandler.entry"

# protocol.md §7.2, "Verified encodings", plus the top of the unsigned 32-bit range.
ID_TABLE = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "80 01"),
    (300, "ac 02"),
    (16383, "ff 7f"),
    (16384, "80 80 01"),
    (2097151, "ff ff 7f"),
    (2097152, "80 80 80 01"),
    (268435455, "ff ff ff 7f"),
    (268435456, "80 80 80 80 01"),
    (2147483647, "ff ff ff ff 07"),
]
ID_TABLE_EXTRA = [
    (2**31, "80 80 80 80 08"),
    (2**32 - 1, "ff ff ff ff 0f"),
]

# protocol.md §7.5: (description, whole DATA package, expected decoded message).
SPEC_PACKAGES = [
    (
        "request id 1, uncompressed route",
        h(
            "04 00 00 21 00 01 1c 63 6f 6e 6e 65 63 74 6f 72 2e 65 6e 74 72 79 48 61 6e 64 6c 65"
            " 72 2e 65 6e 74 72 79 7b 7d"
        ),
        Message(MessageType.REQUEST, 1, ENTRY, b"{}", False, False),
    ),
    (
        "request id 1, route code 1",
        h("04 00 00 06 01 01 00 01 7b 7d"),
        Message(MessageType.REQUEST, 1, 1, b"{}", True, False),
    ),
    (
        "request id 300, route code 1",
        h("04 00 00 07 01 ac 02 00 01 7b 7d"),
        Message(MessageType.REQUEST, 300, 1, b"{}", True, False),
    ),
    (
        "entry response",
        h(
            "04 00 00 29 04 01 7b 22 63 6f 64 65 22 3a 32 30 30 2c 22 6d 73 67 22 3a 22 67 61 6d"
            " 65 20 73 65 72 76 65 72 20 69 73 20 6f 6b 2e 22 7d"
        ),
        Message(
            MessageType.RESPONSE, 1, None, b'{"code":200,"msg":"game server is ok."}', False, False
        ),
    ),
    (
        "error response",
        h("04 00 00 0e 04 02 7b 22 63 6f 64 65 22 3a 35 30 30 7d"),
        Message(MessageType.RESPONSE, 2, None, b'{"code":500}', False, False),
    ),
    (
        "empty-object response",
        h("04 00 00 04 04 03 7b 7d"),
        Message(MessageType.RESPONSE, 3, None, b"{}", False, False),
    ),
    (
        "notify",
        h(
            "04 00 00 27 02 15 63 68 61 74 2e 63 68 61 74 48 61 6e 64 6c 65 72 2e 73 65 6e 64 7b"
            " 22 63 6f 6e 74 65 6e 74 22 3a 22 68 69 22 7d"
        ),
        Message(MessageType.NOTIFY, 0, "chat.chatHandler.send", b'{"content":"hi"}', False, False),
    ),
    (
        "push, uncompressed",
        h("04 00 00 14 06 06 6f 6e 43 68 61 74 7b 22 6d 73 67 22 3a 22 68 69 22 7d"),
        Message(MessageType.PUSH, 0, "onChat", b'{"msg":"hi"}', False, False),
    ),
    (
        "push, code 4",
        h("04 00 00 0f 07 00 04 7b 22 6d 73 67 22 3a 22 68 69 22 7d"),
        Message(MessageType.PUSH, 0, 4, b'{"msg":"hi"}', True, False),
    ),
]

SPEC_BATCH = h(
    "04 00 00 14 06 06 6f 6e 43 68 61 74 7b 22 6d 73 67 22 3a 22 68 69 22 7d"
    "04 00 00 0f 07 00 04 7b 22 6d 73 67 22 3a 22 79 6f 22 7d"
)


# Strategies for arbitrary valid messages.
messageTypes = st.sampled_from(list(MessageType))
ids = st.integers(0, MAX_ID)
strRoutes = st.text(max_size=100).filter(lambda r: len(r.encode("utf-8")) <= 255)
intRoutes = st.integers(1, 0xFFFF)
routes = st.one_of(strRoutes, intRoutes)


class ConstantsTests(SynchronousTestCase):
    def test_types(self) -> None:
        """§7.1 message types."""
        self.assertEqual(
            {t.name: int(t) for t in MessageType},
            {"REQUEST": 0, "NOTIFY": 1, "RESPONSE": 2, "PUSH": 3},
        )

    def test_max_id(self) -> None:
        self.assertEqual(MAX_ID, 2**32 - 1)

    def test_error_hierarchy(self) -> None:
        self.assertTrue(issubclass(MessageError, ProtocolError))
        self.assertTrue(issubclass(MessageError, PomeloError))
        self.assertTrue(issubclass(EncodeError, PomeloError))

    def test_message_defaults(self) -> None:
        m = Message(MessageType.NOTIFY, 0, "a", b"")
        self.assertFalse(m.compress_route)
        self.assertFalse(m.compress_gzip)


class VectorTests(SynchronousTestCase):
    """Every case of vectors/messages.json (pomelo-protocol 0.1.6 Message.encode/decode)."""

    def setUp(self) -> None:
        data = load_vectors("messages.json")
        self.assertEqual(data["types"], {"request": 0, "notify": 1, "response": 2, "push": 3})
        self.cases = data["cases"]

    def test_vectors_present(self) -> None:
        self.assertEqual({c["type"] for c in self.cases}, {0, 1, 2, 3})
        self.assertEqual({c["compressRoute"] for c in self.cases}, {0, 1})

    def test_encode(self) -> None:
        for case in self.cases:
            body = bytes.fromhex(case["body_hex"])
            self.assertEqual(
                encode_message(case["type"], case["id"], case["route"], body).hex(),
                case["encoded_hex"],
                case,
            )

    def test_encode_with_enum(self) -> None:
        for case in self.cases:
            body = bytes.fromhex(case["body_hex"])
            self.assertEqual(
                encode_message(MessageType(case["type"]), case["id"], case["route"], body),
                bytes.fromhex(case["encoded_hex"]),
            )

    def test_compressed_routes_are_ints(self) -> None:
        """The vectors give a compressed route as its code; the encoder sets flag bit 0."""
        for case in self.cases:
            if case["type"] == 2:
                continue
            encoded = bytes.fromhex(case["encoded_hex"])
            self.assertEqual(isinstance(case["route"], int), bool(case["compressRoute"]))
            self.assertEqual(encoded[0] & 1, case["compressRoute"])

    def test_decode(self) -> None:
        for case in self.cases:
            m = decode_message(bytes.fromhex(case["encoded_hex"]))
            d = case["decoded"]
            self.assertIsInstance(m, Message)
            self.assertIsInstance(m.type, MessageType)
            self.assertEqual(m.type, d["type"], case)
            self.assertEqual(m.id, d["id"], case)
            self.assertEqual(m.route, d["route"], case)
            self.assertEqual(type(m.route), type(d["route"]), case)
            self.assertEqual(m.compress_route, bool(d["compressRoute"]), case)
            self.assertEqual(m.compress_gzip, bool(d["compressGzip"]), case)
            self.assertEqual(m.body, bytes.fromhex(d["body_hex"]), case)

    def test_encode_response(self) -> None:
        cases = [c for c in self.cases if c["type"] == MessageType.RESPONSE]
        self.assertTrue(cases)
        for case in cases:
            body = bytes.fromhex(case["body_hex"])
            expected = bytes.fromhex(case["encoded_hex"])
            self.assertEqual(encode_response(case["id"], body), expected, case)
            self.assertEqual(
                encode_response(case["id"], body),
                encode_message(MessageType.RESPONSE, case["id"], None, body),
            )

    def test_encode_push(self) -> None:
        cases = [c for c in self.cases if c["type"] == MessageType.PUSH]
        self.assertTrue(cases)
        self.assertTrue(any(isinstance(c["route"], int) for c in cases))
        self.assertTrue(any(isinstance(c["route"], str) for c in cases))
        for case in cases:
            body = bytes.fromhex(case["body_hex"])
            expected = bytes.fromhex(case["encoded_hex"])
            self.assertEqual(encode_push(case["route"], body), expected, case)
            self.assertEqual(
                encode_push(case["route"], body),
                encode_message(MessageType.PUSH, 0, case["route"], body),
            )


class StringVectorTests(SynchronousTestCase):
    """vectors/strings.json (Protocol.strencode), through a message route."""

    def setUp(self) -> None:
        self.cases = load_vectors("strings.json")["cases"]

    def test_route_bytes(self) -> None:
        for case in self.cases:
            raw = bytes.fromhex(case["encoded_hex"])
            for mtype, prefix in (
                (MessageType.NOTIFY, b"\x02"),
                (MessageType.PUSH, b"\x06"),
                (MessageType.REQUEST, b"\x00\x05"),
            ):
                wire = encode_message(mtype, 5, case["text"], b"{}")
                self.assertEqual(wire, prefix + bytes((len(raw),)) + raw + b"{}", case)
            self.assertEqual(encode_push(case["text"], b""), b"\x06" + bytes((len(raw),)) + raw)

    def test_route_decode(self) -> None:
        for case in self.cases:
            raw = bytes.fromhex(case["encoded_hex"])
            m = decode_message(b"\x02" + bytes((len(raw),)) + raw + b"{}")
            self.assertEqual(m.route, case["text"])
            self.assertEqual(m.body, b"{}")


class VarintTests(SynchronousTestCase):
    """§7.2 id table, through the varint helpers and through whole messages."""

    def test_encode_varint(self) -> None:
        for value, wire in ID_TABLE + ID_TABLE_EXTRA:
            self.assertEqual(encode_varint(value), h(wire), value)

    def test_decode_varint(self) -> None:
        for value, wire in ID_TABLE + ID_TABLE_EXTRA:
            raw = h(wire)
            self.assertEqual(decode_varint(raw, 0, 5), (value, len(raw)), value)
            # At an offset, followed by other bytes.
            self.assertEqual(
                decode_varint(b"\xaa\xbb" + raw + b"\xff", 2, 5), (value, 2 + len(raw))
            )

    def test_decode_varint_errors(self) -> None:
        self.assertRaises(MessageError, decode_varint, b"", 0, 5)
        self.assertRaises(MessageError, decode_varint, h("80"), 0, 5)
        self.assertRaises(MessageError, decode_varint, h("ff ff ff ff"), 0, 5)
        self.assertRaises(MessageError, decode_varint, h("80 80 80 80 80 01"), 0, 5)
        self.assertRaises(MessageError, decode_varint, h("80 80 80 80 80"), 0, 5)
        self.assertRaises(MessageError, decode_varint, h("80 01"), 0, 1)
        self.assertRaises(MessageError, decode_varint, h("01"), 1, 5)

    def test_request_ids(self) -> None:
        for value, wire in ID_TABLE + ID_TABLE_EXTRA:
            expected = b"\x00" + h(wire) + b"\x01a" + b"{}"
            self.assertEqual(encode_message(MessageType.REQUEST, value, "a", b"{}"), expected)
            m = decode_message(expected)
            self.assertEqual(
                (m.type, m.id, m.route, m.body), (MessageType.REQUEST, value, "a", b"{}")
            )

    def test_response_ids(self) -> None:
        for value, wire in ID_TABLE + ID_TABLE_EXTRA:
            expected = b"\x04" + h(wire) + b"{}"
            self.assertEqual(encode_response(value, b"{}"), expected, value)
            self.assertEqual(encode_message(MessageType.RESPONSE, value, None, b"{}"), expected)
            m = decode_message(expected)
            self.assertEqual(
                (m.type, m.id, m.route, m.body), (MessageType.RESPONSE, value, None, b"{}")
            )

    def test_id_echoed(self) -> None:
        """§20 item 28: the id of a request comes back in the response, byte for byte."""
        for value in (1, 127, 128, 300, 16384, 2**31 - 1, 2**31, 2**32 - 1):
            request = encode_message(MessageType.REQUEST, value, ENTRY, b"{}")
            response = encode_response(decode_message(request).id, b"{}")
            self.assertEqual(decode_message(response).id, value)
            self.assertEqual(response[1:-2], encode_varint(value))
            self.assertEqual(response[1:-2], request[1 : 1 + len(response) - 3])

    def test_id_around_the_inline_sizes(self) -> None:
        """Ids of one and two varint bytes are read inline, longer ones by decode_varint."""
        for value in (0, 1, 127, 128, 129, 16383, 16384, 2**21 - 1, 2**21):
            wire = encode_message(MessageType.REQUEST, value, 7, b"xyz")
            m = decode_message(wire)
            self.assertEqual((m.id, m.route, m.body), (value, 7, b"xyz"), value)

    def test_routes_expanded(self) -> None:
        """Given the dictionary's codes, a compressed route decodes to its string (or None for
        an unknown code); a string route is left as it is."""
        codes = {7: "connector.entryHandler.entry"}
        request = encode_message(MessageType.REQUEST, 300, 7, b"{}")
        m = decode_message(request, codes)
        self.assertEqual((m.id, m.route, m.compress_route), (300, codes[7], True))
        unknown = encode_message(MessageType.NOTIFY, 0, 8, b"{}")
        self.assertIsNone(decode_message(unknown, codes).route)
        plain = encode_message(MessageType.REQUEST, 1, "a.b.c", b"{}")
        self.assertEqual(decode_message(plain, codes).route, "a.b.c")

    @given(ids)
    def test_varint_round_trip(self, value: int) -> None:
        raw = encode_varint(value)
        self.assertLessEqual(len(raw), 5)
        self.assertTrue(all(b & 0x80 for b in raw[:-1]))
        self.assertFalse(raw[-1] & 0x80)
        self.assertEqual(decode_varint(raw, 0, 5), (value, len(raw)))


class SpecPackageTests(SynchronousTestCase):
    """§7.5: complete DATA packages; decode the package, then the message, and back."""

    def test_decode(self) -> None:
        for what, wire, expected in SPEC_PACKAGES:
            pkgs = decode_packages(wire)
            self.assertEqual(len(pkgs), 1, what)
            self.assertEqual(pkgs[0].type, PackageType.DATA, what)
            self.assertEqual(decode_message(pkgs[0].body), expected, what)

    def test_encode(self) -> None:
        for what, wire, m in SPEC_PACKAGES:
            body = encode_message(m.type, m.id, m.route, m.body)
            self.assertEqual(encode_package(PackageType.DATA, body), wire, what)

    def test_encode_hot_paths(self) -> None:
        for what, wire, m in SPEC_PACKAGES:
            if m.type == MessageType.RESPONSE:
                body = encode_response(m.id, m.body)
            elif m.type == MessageType.PUSH:
                body = encode_push(m.route, m.body)
            else:
                continue
            self.assertEqual(encode_package(PackageType.DATA, body), wire, what)

    def test_flag_bytes(self) -> None:
        """§7.1: request 00/01, notify 02/03, response 04, push 06/07."""
        self.assertEqual(encode_message(MessageType.REQUEST, 1, "a")[0], 0x00)
        self.assertEqual(encode_message(MessageType.REQUEST, 1, 1)[0], 0x01)
        self.assertEqual(encode_message(MessageType.NOTIFY, 0, "a")[0], 0x02)
        self.assertEqual(encode_message(MessageType.NOTIFY, 0, 1)[0], 0x03)
        self.assertEqual(encode_message(MessageType.RESPONSE, 1, None)[0], 0x04)
        self.assertEqual(encode_response(1, b"")[0], 0x04)
        self.assertEqual(encode_response(300, b"")[0], 0x04)
        self.assertEqual(encode_message(MessageType.PUSH, 0, "a")[0], 0x06)
        self.assertEqual(encode_message(MessageType.PUSH, 0, 1)[0], 0x07)
        self.assertEqual(encode_push("a", b"")[0], 0x06)
        self.assertEqual(encode_push(1, b"")[0], 0x07)

    def test_response_never_compressed(self) -> None:
        """§20 item 32: a route given for a response is ignored; no route, no bit 0."""
        self.assertEqual(encode_message(MessageType.RESPONSE, 1, "a", b"{}"), h("04 01 7b 7d"))
        self.assertEqual(encode_message(MessageType.RESPONSE, 1, 7, b"{}"), h("04 01 7b 7d"))

    def test_no_id_for_notify_and_push(self) -> None:
        """An id given for a notify or push is not put on the wire."""
        self.assertEqual(encode_message(MessageType.NOTIFY, 99, "a", b""), h("02 01 61"))
        self.assertEqual(encode_message(MessageType.PUSH, 99, "a", b""), h("06 01 61"))
        self.assertEqual(decode_message(h("02 01 61")).id, 0)

    def test_batch(self) -> None:
        """The buffered-scheduler batch of two pushes (43 bytes)."""
        self.assertEqual(len(SPEC_BATCH), 43)
        expected = [
            Message(MessageType.PUSH, 0, "onChat", b'{"msg":"hi"}', False, False),
            Message(MessageType.PUSH, 0, 4, b'{"msg":"yo"}', True, False),
        ]
        pkgs = decode_packages(SPEC_BATCH)
        self.assertEqual([p.type for p in pkgs], [PackageType.DATA, PackageType.DATA])
        self.assertEqual([decode_message(p.body) for p in pkgs], expected)
        self.assertEqual(
            b"".join(
                encode_package(PackageType.DATA, encode_push(m.route, m.body)) for m in expected
            ),
            SPEC_BATCH,
        )

    def test_compressed_request_through_dictionary(self) -> None:
        """§20 item 29: a compressed request is decoded through the dictionary (§8.3's)."""
        d = RouteDictionary(
            [
                "connector.entryHandler.subscribe",
                "connector.entryHandler.entry",
                "connector.entryHandler.publish",
            ],
            ["onChat"],
        )
        (pkg,) = decode_packages(h("04 00 00 06 01 01 00 01 7b 7d"))
        m = decode_message(pkg.body)
        self.assertTrue(m.compress_route)
        self.assertEqual(d.code_to_route(m.route), ENTRY)
        (pkg,) = decode_packages(h("04 00 00 07 01 ac 02 00 01 7b 7d"))
        m = decode_message(pkg.body)
        self.assertEqual((m.id, d.code_to_route(m.route)), (300, ENTRY))
        # And §7.5's compressed push uses this dictionary's code for onChat.
        self.assertEqual(
            encode_push(d.route_to_code("onChat"), b'{"msg":"hi"}'),
            h("07 00 04 7b 22 6d 73 67 22 3a 22 68 69 22 7d"),
        )


class DecodeTests(SynchronousTestCase):
    """Decoding details beyond the vectors."""

    def test_gzip_bit(self) -> None:
        """Bit 4 is reported, not acted on (§7.1)."""
        m = decode_message(h("12 01 61 7b 7d"))
        self.assertEqual(m, Message(MessageType.NOTIFY, 0, "a", b"{}", False, True))
        m = decode_message(h("14 05 7b 7d"))
        self.assertEqual(
            (m.type, m.id, m.body, m.compress_gzip), (MessageType.RESPONSE, 5, b"{}", True)
        )

    def test_empty_route(self) -> None:
        self.assertEqual(decode_message(h("02 00")), Message(MessageType.NOTIFY, 0, "", b""))
        self.assertEqual(encode_message(MessageType.NOTIFY, 0, ""), h("02 00"))

    def test_empty_body(self) -> None:
        self.assertEqual(decode_message(h("04 01")), Message(MessageType.RESPONSE, 1, None, b""))
        self.assertEqual(
            decode_message(h("07 ff ff")), Message(MessageType.PUSH, 0, 0xFFFF, b"", True)
        )
        self.assertEqual(decode_message(h("00 01 01 61")).body, b"")

    def test_route_code_big_endian(self) -> None:
        self.assertEqual(decode_message(h("03 12 34")).route, 0x1234)
        self.assertEqual(encode_message(MessageType.NOTIFY, 0, 0x1234), h("03 12 34"))

    def test_body_kept_raw(self) -> None:
        body = bytes(range(256))
        self.assertEqual(decode_message(h("06 01 61") + body).body, body)

    def test_longest_route(self) -> None:
        route = "r" * 255
        wire = h("02 ff") + route.encode() + b"x"
        self.assertEqual(decode_message(wire), Message(MessageType.NOTIFY, 0, route, b"x"))

    def test_route_code_zero(self) -> None:
        """Code 0 decodes (it is left to the dictionary to reject) but never encodes."""
        self.assertEqual(
            decode_message(h("03 00 00")), Message(MessageType.NOTIFY, 0, 0, b"", True)
        )

    def test_five_byte_id_non_canonical(self) -> None:
        """A 5-byte id with a redundant top group is still a value below 2**32."""
        self.assertEqual(decode_message(h("04 81 80 80 80 00")).id, 1)


class MessageErrorTests(SynchronousTestCase):
    """Malformed messages raise L{MessageError} (§7.2 REC, §7.3, §15.2)."""

    def assertBad(self, data: bytes) -> None:
        self.assertRaises(MessageError, decode_message, data)

    def test_empty(self) -> None:
        self.assertBad(b"")

    def test_unknown_types(self) -> None:
        """Types 4-7 (flag bits 1-3), with or without more bytes, with any bit 0."""
        for mtype in (4, 5, 6, 7):
            for low in (0, 1):
                flag = (mtype << 1) | low
                self.assertBad(bytes((flag,)))
                self.assertBad(bytes((flag,)) + h("01 01 61 7b 7d"))
                self.assertBad(bytes((flag | 0x10,)) + h("01 01 61"))

    def test_truncated_id(self) -> None:
        for data in (h("00"), h("04"), h("00 80"), h("04 80"), h("00 ff ff"), h("04 ff ff ff ff")):
            self.assertBad(data)

    def test_id_varint_too_long(self) -> None:
        """More than five id bytes is an error, even if it would end later."""
        self.assertBad(h("00 80 80 80 80 80 01 01 61"))
        self.assertBad(h("04 80 80 80 80 80 01"))
        self.assertBad(h("04 80 80 80 80 80"))
        self.assertBad(h("04 ff ff ff ff ff ff ff ff ff 7f"))
        # Six bytes whose value would fit 32 bits: still refused on length alone.
        self.assertBad(h("04 80 80 80 80 80 00"))
        self.assertBad(h("00 81 80 80 80 80 00 01 61"))

    def test_id_too_large(self) -> None:
        """Five bytes, but a value of 2**32 or more."""
        self.assertBad(h("04 80 80 80 80 10"))
        self.assertBad(h("00 80 80 80 80 10 01 61"))
        self.assertBad(h("04 ff ff ff ff 7f"))
        self.assertEqual(decode_message(h("04 ff ff ff ff 0f")).id, 2**32 - 1)

    def test_truncated_route_code(self) -> None:
        for data in (h("01 01"), h("01 01 00"), h("03"), h("03 00"), h("07"), h("07 00")):
            self.assertBad(data)

    def test_missing_route_length(self) -> None:
        for data in (h("00 01"), h("02"), h("06")):
            self.assertBad(data)

    def test_route_past_end(self) -> None:
        for data in (h("02 01"), h("02 05 61 62 63"), h("00 01 03 61 62"), h("06 ff") + b"a" * 254):
            self.assertBad(data)

    def test_route_not_utf8(self) -> None:
        bad = ("ff", "c3", "c0 80", "ed a0 80", "61 80 62", "f8 88 80 80 80")
        for raw in map(h, bad):
            self.assertBad(h("02") + bytes((len(raw),)) + raw + b"{}")
            self.assertBad(h("00 01") + bytes((len(raw),)) + raw)
            self.assertBad(h("06") + bytes((len(raw),)) + raw)

    def test_bad_body_is_not_an_error(self) -> None:
        """Only the header of a message is checked here; the body is opaque."""
        self.assertEqual(decode_message(h("02 01 61 ff fe")).body, h("ff fe"))


class EncodeErrorTests(SynchronousTestCase):
    """Values that cannot go on the wire raise L{EncodeError} (§7.2, §7.3)."""

    def test_id_out_of_range(self) -> None:
        for value in (-1, 2**32, 2**40):
            self.assertRaises(EncodeError, encode_message, MessageType.REQUEST, value, "a", b"")
            self.assertRaises(EncodeError, encode_message, MessageType.RESPONSE, value, None, b"")
            self.assertRaises(EncodeError, encode_response, value, b"")

    def test_route_too_long(self) -> None:
        for route in ("a" * 256, "é" * 128, "世" * 86, "🎮" * 64, "a" * 1000):
            self.assertGreater(len(route.encode("utf-8")), 255)
            for mtype in (MessageType.REQUEST, MessageType.NOTIFY, MessageType.PUSH):
                self.assertRaises(EncodeError, encode_message, mtype, 1, route, b"")
            self.assertRaises(EncodeError, encode_push, route, b"")

    def test_route_255_bytes(self) -> None:
        """Exactly 255 UTF-8 bytes is the largest route, whatever the characters."""
        for route in ("a" * 255, "世" * 85, "🎮" * 63 + "abc", "é" * 127 + "a"):
            raw = route.encode("utf-8")
            self.assertEqual(len(raw), 255)
            wire = encode_message(MessageType.NOTIFY, 0, route, b"{}")
            self.assertEqual(wire, b"\x02\xff" + raw + b"{}")
            self.assertEqual(decode_message(wire).route, route)
            self.assertEqual(encode_push(route, b""), b"\x06\xff" + raw)

    def test_route_code_out_of_range(self) -> None:
        for code in (0, 65536, -1, 2**20):
            for mtype in (MessageType.REQUEST, MessageType.NOTIFY, MessageType.PUSH):
                self.assertRaises(EncodeError, encode_message, mtype, 1, code, b"")
            self.assertRaises(EncodeError, encode_push, code, b"")

    def test_route_code_limits(self) -> None:
        self.assertEqual(encode_message(MessageType.NOTIFY, 0, 1), h("03 00 01"))
        self.assertEqual(encode_message(MessageType.NOTIFY, 0, 65535), h("03 ff ff"))
        self.assertEqual(encode_push(65535, b""), h("07 ff ff"))

    def test_missing_route(self) -> None:
        for mtype in (MessageType.REQUEST, MessageType.NOTIFY, MessageType.PUSH):
            self.assertRaises(EncodeError, encode_message, mtype, 1, None, b"")

    def test_unknown_type(self) -> None:
        for mtype in (4, 7, -1, 255):
            self.assertRaises(EncodeError, encode_message, mtype, 1, "a", b"")


class PropertyTests(SynchronousTestCase):
    """Arbitrary valid messages round-trip; arbitrary bytes raise only PomeloError."""

    @given(messageTypes, ids, routes, st.binary(max_size=200))
    def test_round_trip(self, mtype: MessageType, mid: int, route: str | int, body: bytes) -> None:
        wire = encode_message(mtype, mid, route, body)
        has_id = mtype in (MessageType.REQUEST, MessageType.RESPONSE)
        has_route = mtype != MessageType.RESPONSE
        expected = Message(
            mtype,
            mid if has_id else 0,
            route if has_route else None,
            body,
            has_route and isinstance(route, int),
            False,
        )
        self.assertEqual(decode_message(wire), expected)
        # Bits 4-7 are never set on the wire (§7.1 MUST).
        self.assertEqual(wire[0] & 0xF0, 0)
        self.assertEqual(wire[0] >> 1, int(mtype))

    @given(ids, st.binary(max_size=200))
    def test_encode_response_agrees(self, mid: int, body: bytes) -> None:
        self.assertEqual(
            encode_response(mid, body), encode_message(MessageType.RESPONSE, mid, None, body)
        )

    @given(routes, st.binary(max_size=200))
    def test_encode_push_agrees(self, route: str | int, body: bytes) -> None:
        self.assertEqual(encode_push(route, body), encode_message(MessageType.PUSH, 0, route, body))

    @given(st.binary(max_size=300))
    def test_garbage(self, data: bytes) -> None:
        try:
            m = decode_message(data)
        except PomeloError as e:
            self.assertIsInstance(e, MessageError)
            return
        self.assertIsInstance(m, Message)
        self.assertIn(m.type, list(MessageType))
        self.assertTrue(0 <= m.id <= MAX_ID)
        if m.route == 0:
            # Code 0 is never assigned (§7.3): it decodes (the dictionary lookup then fails)
            # but cannot be encoded.
            self.assertRaises(EncodeError, encode_message, m.type, m.id, m.route, m.body)
            return
        # What decodes re-encodes into something that decodes to the same message.
        again = decode_message(encode_message(m.type, m.id, m.route, m.body))
        self.assertEqual(
            (again.type, again.id, again.route, again.body), (m.type, m.id, m.route, m.body)
        )

    @given(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04, 0x06, 0x07]), st.binary(max_size=40))
    def test_garbage_after_valid_flag(self, flag: int, rest: bytes) -> None:
        """Garbage after each valid flag byte, to reach the id and route checks often."""
        try:
            decode_message(bytes((flag,)) + rest)
        except PomeloError as e:
            self.assertIsInstance(e, MessageError)
