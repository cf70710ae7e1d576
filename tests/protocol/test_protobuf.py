"""Tests for L{pomelo_twisted.protocol.protobuf}: the pomelo-protobuf codec (protocol.md §9.3,
§5.3)."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

import pomelo_twisted.demo
from pomelo_twisted.protocol import json_codec
from pomelo_twisted.protocol.errors import PomeloError, ProtobufError
from pomelo_twisted.protocol.protobuf import (
    MAX_DEPTH,
    Protobuf,
    decode,
    encode,
    parse_protos,
    protos_version,
)
from tests.support.vectors import SPEC_CLIENT_PROTOS, SPEC_SERVER_PROTOS, h, load_vectors

DEMO_CONFIG = os.path.join(os.path.dirname(pomelo_twisted.demo.__file__), "config")


def js(value: Any) -> bytes:
    """Compact JSON text, key order included: what JSON.stringify writes."""
    return json_codec.dumps(value)


VECTORS = load_vectors("protobuf.json")
# The "nested" vector definition has a field (Item.at) whose type is not visible from Item:
# the strict default rejects it, so the vectors are parsed leniently, as upstream does.
VECTOR_PROTOS = parse_protos(VECTORS["protos"], strict=False)

SPEC = Protobuf(SPEC_CLIENT_PROTOS, SPEC_SERVER_PROTOS)

# §9.3.6 server -> client: (route, object, body).
SERVER_EXAMPLES: list[tuple[str, dict[str, Any], bytes]] = [
    ("connector.entryHandler.entry", {"code": 200, "msg": "ok"}, h("08 c8 01 12 02 6f 6b")),
    ("connector.entryHandler.entry", {"msg": "ok", "code": 200}, h("12 02 6f 6b 08 c8 01")),
    ("connector.entryHandler.entry", {"code": 200}, h("08 c8 01")),
    (
        "onMove",
        {
            "entityId": 7,
            "path": [{"x": 1, "y": -1}, {"x": -64, "y": 64}],
            "ids": [1, 2, 300],
            "t": 1.5,
        },
        h(
            "08 07 12 04 08 02 10 01 12 05 08 7f 10 80 01 18 03 01 02 ac 02 21 00 00 00 00 00 00"
            " f8 3f"
        ),
    ),
    (
        "onBag",
        {"items": [{"id": 1, "name": "sword"}, {"id": 2}], "tags": ["a", "bc"], "w": [0.5, 2]},
        h(
            "0a 09 08 01 12 05 73 77 6f 72 64 0a 02 08 02 12 01 61 12 02 62 63 1d 02 00 00 00 3f"
            " 00 00 00 40"
        ),
    ),
]

# §9.3.6 client -> server.
CLIENT_EXAMPLES: list[tuple[str, dict[str, Any], bytes]] = [
    ("connector.entryHandler.entry", {"username": "bob", "rid": 1}, h("0a 03 62 6f 62 10 01")),
    ("area.playerHandler.move", {"x": -3, "y": -3, "speed": 2.5}, h("08 05 10 05 1d 00 00 20 40")),
]

# §9.3.6: the same objects as the browser JS client sends them (wrong wire types).
BROWSER_EXAMPLES: list[tuple[str, dict[str, Any], bytes]] = [
    ("connector.entryHandler.entry", {"username": "bob", "rid": 1}, h("0a 03 62 6f 62 12 01")),
    ("area.playerHandler.move", {"x": -3, "y": -3, "speed": 2.5}, h("0a 05 12 05 1d 00 00 20 40")),
]
BROWSER_REPEATED_PROTOS = {"r": {"repeated uInt32 ids": 1, "repeated double d": 2}}
BROWSER_REPEATED = (
    {"ids": [1, 2, 300], "d": [1.5]},
    h("0a 03 01 02 ac 02 11 01 00 00 00 00 00 00 f8 3f"),  # browser client
    h("08 03 01 02 ac 02 11 01 00 00 00 00 00 00 f8 3f"),  # correct wire types
)

# §9.3.6 ZigZag and varint table.
SINT32_TABLE = [
    (0, "00"),
    (-1, "01"),
    (1, "02"),
    (-2, "03"),
    (2, "04"),
    (-64, "7f"),
    (64, "80 01"),
    (2147483647, "fe ff ff ff 0f"),
    (-2147483648, "ff ff ff ff 0f"),
]
UINT32_TABLE = [(150, "96 01"), (4294967295, "ff ff ff ff 0f")]

# §9.3.6 complete packages: (package bytes, length of header + message header, side, route,
# object).
PACKAGE_EXAMPLES: list[tuple[bytes, int, str, str, dict[str, Any]]] = [
    (
        h("04 00 00 0b 01 05 00 01 0a 03 62 6f 62 10 01"),
        8,  # package header, type REQUEST, id 5, route code 1 (2 bytes)
        "client",
        "connector.entryHandler.entry",
        {"username": "bob", "rid": 1},
    ),
    (
        h("04 00 00 09 04 05 08 c8 01 12 02 6f 6b"),
        6,  # package header, type RESPONSE, id 5
        "server",
        "connector.entryHandler.entry",
        {"code": 200, "msg": "ok"},
    ),
    (
        h(
            "04 00 00 26 06 06 6f 6e 4d 6f 76 65 08 07 12 04 08 02 10 01 12 05 08 7f 10 80 01 18"
            " 03 01 02 ac 02 21 00 00 00 00 00 00 f8 3f"
        ),
        12,  # package header, type PUSH, route length 6, "onMove"
        "server",
        "onMove",
        {
            "entityId": 7,
            "path": [{"x": 1, "y": -1}, {"x": -64, "y": 64}],
            "ids": [1, 2, 300],
            "t": 1.5,
        },
    ),
]

# §5.3 full example: the parsed protos and the version in the handshake.
FULL_EXAMPLE_PROTOS = (
    '{"server":{"connector.entryHandler.entry":{"code":{"option":"required","type":"uInt32",'
    '"tag":1},"msg":{"option":"optional","type":"string","tag":2},"__messages":{},"__tags":'
    '{"1":"code","2":"msg"}}},"client":{"connector.entryHandler.entry":{"username":{"option":'
    '"required","type":"string","tag":1},"rid":{"option":"optional","type":"uInt32","tag":2},'
    '"__messages":{},"__tags":{"1":"username","2":"rid"}}},"version":"ITvcUExPBWuzYlklNpWXrw=="}'
)


def _keys(value: Any) -> Any:
    """The key order of C{value}, recursively: decoded floats print as C{2.0} where JavaScript
    prints C{2}, so JSON text is not compared for decoded values, key order is."""
    if isinstance(value, dict):
        return [(k, _keys(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_keys(v) for v in value]
    return None


def _entry_only(protos: dict[str, Any]) -> dict[str, Any]:
    return {"connector.entryHandler.entry": protos["connector.entryHandler.entry"]}


class ParseTests(SynchronousTestCase):
    """L{parse_protos}: the parsed form must be upstream's, key order included (§9.3.2)."""

    def test_vectors(self) -> None:
        """Each vector definition parses to upstream's parsed form, JSON-text-equal."""
        self.assertEqual(VECTOR_PROTOS, VECTORS["parsed"])
        self.assertEqual(js(VECTOR_PROTOS), js(VECTORS["parsed"]))

    def test_vectors_strict_except_nested(self) -> None:
        """Every vector definition but C{nested} is accepted by the strict default."""
        for route, raw in VECTORS["protos"].items():
            if route == "nested":
                continue
            parsed = parse_protos({route: raw})
            self.assertEqual(js(parsed), js({route: VECTORS["parsed"][route]}))

    def test_invisible_nested_type_rejected(self) -> None:
        """C{nested}'s C{Item.at} has type C{Pos}, declared in C{nested}, not in C{Item}: outer
        enclosing messages are not searched (§9.3.1), so strict parsing names the problem."""
        e = self.assertRaises(ProtobufError, parse_protos, VECTORS["protos"])
        self.assertIn("'nested'", str(e))
        self.assertIn("Item.at", str(e))
        self.assertIn("'Pos'", str(e))

    def test_spec_example(self) -> None:
        """The §9.3.2 example."""
        self.assertEqual(
            js(parse_protos(_entry_only(SPEC_CLIENT_PROTOS))),
            b'{"connector.entryHandler.entry":{"username":{"option":"required","type":"string",'
            b'"tag":1},"rid":{"option":"optional","type":"uInt32","tag":2},"__messages":{},'
            b'"__tags":{"1":"username","2":"rid"}}}',
        )

    def test_spec_protos(self) -> None:
        """The §9.3.1 server protos: nested and top-level messages kept as upstream does."""
        parsed = parse_protos(SPEC_SERVER_PROTOS)
        self.assertEqual(list(parsed), list(SPEC_SERVER_PROTOS))
        self.assertEqual(
            js(parsed["onMove"]),
            b'{"entityId":{"option":"required","type":"uInt32","tag":1},"path":{"option":'
            b'"repeated","type":"Pos","tag":2},"ids":{"option":"repeated","type":"uInt32","tag":3},'
            b'"t":{"option":"optional","type":"double","tag":4},"__messages":{"Pos":{"x":{"option":'
            b'"required","type":"sInt32","tag":1},"y":{"option":"required","type":"sInt32","tag":2},'
            b'"__messages":{},"__tags":{"1":"x","2":"y"}}},"__tags":{"1":"entityId","2":"path",'
            b'"3":"ids","4":"t"}}',
        )
        self.assertIn("message Item", parsed)

    def test_demo_config_matches_handshake(self) -> None:
        """The demo config parses to exactly what the real server sent in its handshake."""
        protos = _handshake_protos()
        for name in ("clientProtos.json", "serverProtos.json"):
            with open(os.path.join(DEMO_CONFIG, name), encoding="utf-8") as f:
                raw = json.load(f)
            key = "client" if name.startswith("client") else "server"
            self.assertEqual(js(parse_protos(raw)), js(protos[key]))

    def test_tags_ordered_numerically(self) -> None:
        """C{__tags} keys come out in ascending numeric order, as JavaScript orders them."""
        parsed = parse_protos(
            {"r": {"required uInt32 a": 300, "required uInt32 b": 16, "optional string c": 2}}
        )
        self.assertEqual(js(parsed["r"]["__tags"]), b'{"2":"c","16":"b","300":"a"}')
        self.assertEqual(list(parsed["r"]), ["a", "b", "c", "__messages", "__tags"])

    def test_integer_like_keys_first(self) -> None:
        """Integer-like routes, field names and message names are ordered first, ascending, as
        JSON.stringify writes them; the version depends on it."""
        parsed = parse_protos(
            {
                "a.b": {"required uInt32 x": 1},
                "10": {"required uInt32 y": 1, "required uInt32 7": 2, "message 5": {}},
                "2": {},
                "01": {},
            }
        )
        self.assertEqual(list(parsed), ["2", "10", "a.b", "01"])
        self.assertEqual(list(parsed["10"]), ["7", "y", "__messages", "__tags"])
        self.assertEqual(list(parsed["10"]["__messages"]), ["5"])

    def test_duplicate_tag_later_ignored(self) -> None:
        """A field reusing a tag is ignored, as upstream does."""
        parsed = parse_protos({"r": {"required uInt32 a": 1, "optional string b": 1}})
        self.assertEqual(
            js(parsed),
            b'{"r":{"a":{"option":"required","type":"uInt32","tag":1},"__messages":{},'
            b'"__tags":{"1":"a"}}}',
        )

    def test_other_keys_ignored(self) -> None:
        """Keys with the wrong number of words or an unknown first word are ignored."""
        parsed = parse_protos(
            {
                "r": {
                    "required uInt32": 1,
                    "required  uInt32 a": 2,
                    "requird uInt32 b": 3,
                    "message A B": {},
                    "comment": "x",
                    "optional uInt32 c": 4,
                }
            }
        )
        self.assertEqual(list(parsed["r"]), ["c", "__messages", "__tags"])
        self.assertEqual(parsed["r"]["__messages"], {})

    def test_integral_float_tag(self) -> None:
        """A tag written C{1.0} is the integer 1, as for JavaScript."""
        self.assertEqual(
            js(parse_protos({"r": {"required uInt32 a": 1.0}})),
            js(parse_protos({"r": {"required uInt32 a": 1}})),
        )

    def test_root_message_visible_everywhere(self) -> None:
        """A top-level C{message X} can be used from nested messages too."""
        parse_protos(
            {
                "r": {"message In": {"optional Item i": 1}, "optional In x": 1},
                "message Item": {"optional Item next": 1},
            }
        )

    def test_unsupported_types_rejected(self) -> None:
        """bool, bytes, 64-bit integers and unknown names fail at load time, naming the route
        and the field."""
        for type_name in ("bool", "bytes", "int64", "uInt64", "sInt64", "uint32", "Unknown"):
            raw = {"my.route": {"required uInt32 ok": 1, f"optional {type_name} bad": 2}}
            e = self.assertRaises(ProtobufError, parse_protos, raw)
            self.assertIn("'my.route'", str(e))
            self.assertIn("'bad'", str(e))
            self.assertIn(repr(type_name), str(e))
            # Lenient parsing accepts it, as upstream does.
            parse_protos(raw, strict=False)
        e = self.assertRaises(
            ProtobufError,
            parse_protos,
            {"r": {"message M": {"repeated bool flags": 1}, "optional M m": 1}},
        )
        self.assertIn("M.flags", str(e))

    def test_malformed_definitions(self) -> None:
        """Structural errors are L{ProtobufError}s whatever C{strict} says."""
        bad: list[Any] = [
            [],
            {"r": 1},
            {"r": {"message M": 5}},
            {"r": {"required uInt32 a": "1"}},
            {"r": {"required uInt32 a": True}},
            {"r": {"required uInt32 a": -1}},
            {"r": {"required uInt32 a": 1 << 28}},
            {"r": {"required uInt32 a": 1.5}},
            {"r": {"required uInt32 __tags": 1}},
            {"r": {"required uInt32 ": 1}},
            {"r": {"required uInt32 a": 1, "optional string a": 2}},
            {1: {}},
        ]
        for raw in bad:
            self.assertRaises(ProtobufError, parse_protos, raw)
            self.assertRaises(ProtobufError, parse_protos, raw, strict=False)

    def test_deep_definitions(self) -> None:
        """Definitions nested deeper than L{MAX_DEPTH} are refused, not a RecursionError."""
        raw: dict[str, Any] = {}
        for _ in range(MAX_DEPTH + 5):
            raw = {"message M": raw}
        self.assertRaises(ProtobufError, parse_protos, {"r": raw})


def _handshake_protos() -> dict[str, Any]:
    """C{sys.protos} of the real server's first handshake answer."""
    case = load_vectors("handshake.json")["cases"][0]
    response = h(case["response_hex"])
    self_length = int.from_bytes(response[1:4], "big")
    assert response[0] == 1 and self_length == len(response) - 4
    body: dict[str, Any] = json_codec.loads(response[4:])
    protos: dict[str, Any] = body["sys"]["protos"]
    return protos


class VersionTests(SynchronousTestCase):
    """L{protos_version} and L{Protobuf.version} (§9.3.2, §5.4)."""

    def test_demo_config(self) -> None:
        """The demo config's version is the one the real server sent."""
        expected = _handshake_protos()["version"]
        self.assertEqual(Protobuf.from_config_dir(DEMO_CONFIG).version, expected)
        self.assertEqual(Protobuf.from_config_dir(DEMO_CONFIG).version, "+nI7xdqt1pqIv0cOBP3KtQ==")

    def test_full_example(self) -> None:
        """§5.3: the protos of §9.3.1 restricted to the entry route."""
        protobuf = Protobuf(_entry_only(SPEC_CLIENT_PROTOS), _entry_only(SPEC_SERVER_PROTOS))
        self.assertEqual(protobuf.version, "ITvcUExPBWuzYlklNpWXrw==")
        self.assertEqual(
            js({"server": protobuf.server, "client": protobuf.client, "version": protobuf.version}),
            FULL_EXAMPLE_PROTOS.encode(),
        )
        self.assertEqual(
            protos_version(protobuf.client, protobuf.server), "ITvcUExPBWuzYlklNpWXrw=="
        )

    def test_no_files(self) -> None:
        """No proto file at all: version C{""} (§5.4), empty protos."""
        with tempfile.TemporaryDirectory() as path:
            protobuf = Protobuf.from_config_dir(path)
        self.assertEqual((protobuf.client, protobuf.server, protobuf.version), ({}, {}, ""))
        self.assertEqual(Protobuf().version, "")
        self.assertFalse(protobuf.has_client("a.b"))
        self.assertFalse(protobuf.has_server("a.b"))

    def test_empty_files(self) -> None:
        """A file that exists but is C{{}} still gets a hashed version, as upstream."""
        self.assertEqual(Protobuf({}, None).version, protos_version({}, {}))
        self.assertEqual(Protobuf(None, {}).version, protos_version({}, {}))
        self.assertNotEqual(protos_version({}, {}), "")

    def test_one_file(self) -> None:
        """Only one of the two files: the other counts as C{{}}."""
        with tempfile.TemporaryDirectory() as path:
            with open(os.path.join(path, "serverProtos.json"), "w", encoding="utf-8") as f:
                json.dump(SPEC_SERVER_PROTOS, f)
            protobuf = Protobuf.from_config_dir(path)
        self.assertEqual(protobuf.client, {})
        self.assertEqual(protobuf.version, protos_version({}, parse_protos(SPEC_SERVER_PROTOS)))
        self.assertTrue(protobuf.has_server("onMove"))

    def test_bad_json_file(self) -> None:
        """A config file that is not JSON is a L{ProtobufError}."""
        with tempfile.TemporaryDirectory() as path:
            with open(os.path.join(path, "clientProtos.json"), "w", encoding="utf-8") as f:
                f.write("{nope")
            self.assertRaises(ProtobufError, Protobuf.from_config_dir, path)


class VectorCodecTests(SynchronousTestCase):
    """The golden encode/decode cases from pomelo-protobuf 0.4.0."""

    def test_cases(self) -> None:
        """Every case encodes byte-exactly and decodes to what upstream decodes, except the one
        that sets a field of an invisible type (see L{test_invisible_type_field})."""
        for case in VECTORS["cases"]:
            route, message = case["route"], case["message"]
            data = h(case["encoded_hex"])
            if not any("at" in item for item in message.get("items", [])):
                self.assertEqual(encode(VECTOR_PROTOS, route, message).hex(), case["encoded_hex"])
            self.assertEqual(decode(VECTOR_PROTOS, route, data), case["decoded"])
            self.assertEqual(_keys(decode(VECTOR_PROTOS, route, data)), _keys(case["decoded"]))

    def test_float32_widening(self) -> None:
        """A C{float} decodes to the double nearest the float32, as JavaScript gives it."""
        case = VECTORS["cases"][3]
        decoded = decode(VECTOR_PROTOS, "all.scalars", h(case["encoded_hex"]))
        self.assertEqual(decoded["f"], 0.10000000149011612)
        self.assertEqual(decoded["d"], 0.1)
        self.assertIsInstance(decoded["u"], int)

    def test_invisible_type_field(self) -> None:
        """C{Item.at} (type C{Pos}, not visible from C{Item}): upstream writes its key with no
        value (the trailing C{1a} inside the second item, sub-message length 6). Decoding reads
        that key and no value, as upstream does; encoding a value for it is refused instead of
        writing the corrupt key (§18 B6)."""
        case = VECTORS["cases"][5]
        self.assertIn("at", case["message"]["items"][1])
        upstream = h(case["encoded_hex"])
        self.assertIn(h("1a 06 08 02 12 01 62 1a"), upstream)
        self.assertEqual(decode(VECTOR_PROTOS, "nested", upstream), case["decoded"])
        e = self.assertRaises(ProtobufError, encode, VECTOR_PROTOS, "nested", case["message"])
        self.assertIn("'nested'", str(e))
        self.assertIn("Item.at", str(e))
        # Without the field, the bytes are upstream's minus the dangling key.
        message = json.loads(json.dumps(case["message"]))
        del message["items"][1]["at"]
        self.assertEqual(
            encode(VECTOR_PROTOS, "nested", message),
            upstream.replace(h("1a 06 08 02 12 01 62 1a"), h("1a 05 08 02 12 01 62")),
        )
        # None or an empty list for a dead field is simply absent.
        message["items"][1]["at"] = None
        encode(VECTOR_PROTOS, "nested", message)

    def test_every_cut(self) -> None:
        """Every prefix of every valid encoding decodes or raises L{ProtobufError}; nothing
        else escapes."""
        for case in VECTORS["cases"]:
            data = h(case["encoded_hex"])
            for cut in range(len(data)):
                with contextlib.suppress(ProtobufError):
                    decode(VECTOR_PROTOS, case["route"], data[:cut])

    def test_cut_inside_values_fails(self) -> None:
        """Cuts inside a fixed-size or length-prefixed value are errors, not silent truncation
        as upstream."""
        data = h(VECTORS["cases"][1]["encoded_hex"])  # all.scalars
        for cut in (1, 3, 5, 7, 8, 9, 12, 14, 19, 21, 22):
            self.assertRaises(ProtobufError, decode, VECTOR_PROTOS, "all.scalars", data[:cut])


class SpecExampleTests(SynchronousTestCase):
    """The byte examples of protocol.md §9.3.6."""

    def test_server_to_client(self) -> None:
        for route, message, body in SERVER_EXAMPLES:
            self.assertEqual(SPEC.encode_server(route, message), body)
            self.assertEqual(SPEC.decode_server(route, body), message)
            self.assertEqual(_keys(SPEC.decode_server(route, body)), _keys(message))

    def test_required_missing(self) -> None:
        """C{{"msg":"ok"}} misses C{code}: an error (upstream: an empty body)."""
        e = self.assertRaises(
            ProtobufError, SPEC.encode_server, "connector.entryHandler.entry", {"msg": "ok"}
        )
        self.assertIn("'code'", str(e))
        self.assertIn("connector.entryHandler.entry", str(e))

    def test_client_to_server(self) -> None:
        for route, message, body in CLIENT_EXAMPLES:
            self.assertEqual(SPEC.encode_client(route, message), body)
            self.assertEqual(SPEC.decode_client(route, body), message)

    def test_browser_client(self) -> None:
        """The browser client's wrong wire types decode to the same objects (§9.3.3)."""
        for route, message, body in BROWSER_EXAMPLES:
            self.assertEqual(SPEC.decode_client(route, body), message)
        message, browser, correct = BROWSER_REPEATED
        protos = parse_protos(BROWSER_REPEATED_PROTOS)
        self.assertEqual(decode(protos, "r", browser), message)
        self.assertEqual(decode(protos, "r", correct), message)
        self.assertEqual(encode(protos, "r", message), correct)

    def test_zigzag_and_varint_table(self) -> None:
        protos = parse_protos(
            {
                "s": {"required sInt32 v": 1},
                "i": {"required int32 v": 1},
                "u": {"required uInt32 v": 1},
            }
        )
        for route, table in (("s", SINT32_TABLE), ("i", SINT32_TABLE), ("u", UINT32_TABLE)):
            for value, hex_bytes in table:
                body = h("08 " + hex_bytes)
                self.assertEqual(encode(protos, route, {"v": value}), body)
                self.assertEqual(decode(protos, route, body), {"v": value})

    def test_complete_packages(self) -> None:
        """The protobuf bodies of the complete packages of §9.3.6."""
        for package, offset, side, route, message in PACKAGE_EXAMPLES:
            self.assertEqual(int.from_bytes(package[1:4], "big"), len(package) - 4)
            body = package[offset:]
            if side == "client":
                self.assertEqual(SPEC.decode_client(route, body), message)
                self.assertEqual(SPEC.encode_client(route, message), body)
            else:
                self.assertEqual(SPEC.decode_server(route, body), message)
                self.assertEqual(SPEC.encode_server(route, message), body)


class EncodeTests(SynchronousTestCase):
    """Encoding rules and value errors (§9.3.3-4)."""

    protos = parse_protos(
        {
            "r": {
                "required uInt32 u": 1,
                "optional sInt32 s": 2,
                "optional float f": 3,
                "optional double d": 4,
                "optional string t": 5,
                "message M": {"required uInt32 a": 1},
                "optional M m": 6,
                "repeated M ms": 7,
                "repeated uInt32 us": 8,
                "repeated string ts": 9,
            },
            "deep": {"optional Node n": 1},
            "message Node": {"optional Node next": 1, "optional uInt32 v": 2},
        }
    )

    def enc(self, message: Any, route: str = "r") -> bytes:
        return encode(self.protos, route, message)

    def test_unknown_keys_and_none(self) -> None:
        """Unknown keys are skipped; C{None} is absent; empty lists are left out."""
        self.assertEqual(
            self.enc({"x": 1, "u": 1, "s": None, "us": [], "ts": (), "__tags": {}, 5: 1}),
            h("08 01"),
        )

    def test_required_none(self) -> None:
        """A required field set to C{None} is missing."""
        self.assertRaises(ProtobufError, self.enc, {"u": None})
        self.assertRaises(ProtobufError, self.enc, {})

    def test_required_nested(self) -> None:
        """Required fields of nested messages, single and repeated, are checked."""
        self.assertRaises(ProtobufError, self.enc, {"u": 1, "m": {}})
        e = self.assertRaises(ProtobufError, self.enc, {"u": 1, "ms": [{"a": 1}, {"b": 2}]})
        self.assertIn("M.a", str(e))

    def test_negative_uint32(self) -> None:
        e = self.assertRaises(ProtobufError, self.enc, {"u": -1})
        self.assertIn("negative", str(e))
        self.assertRaises(ProtobufError, self.enc, {"u": 1, "us": [1, -1]})

    def test_integral_values(self) -> None:
        """Integral floats are accepted for integer types; fractions, bools, strings are not."""
        self.assertEqual(self.enc({"u": 300.0}), h("08 ac 02"))
        self.assertEqual(self.enc({"u": 0, "s": -1.0}), h("08 00 10 01"))
        for bad in (1.5, True, False, "5", float("nan"), float("inf"), [1], object()):
            self.assertRaises(ProtobufError, self.enc, {"u": bad})
            self.assertRaises(ProtobufError, self.enc, {"u": 1, "s": bad})

    def test_large_values(self) -> None:
        """uInt32 accepts what upstream's varint writes (e.g. millisecond timestamps), up to
        what a 10-byte varint holds; beyond is an error."""
        self.assertEqual(
            decode(self.protos, "r", self.enc({"u": 1700000000000})), {"u": 1700000000000}
        )
        self.assertEqual(decode(self.protos, "r", self.enc({"u": 2**64 - 1})), {"u": 2**64 - 1})
        self.assertRaises(ProtobufError, self.enc, {"u": 2**64})
        self.assertRaises(ProtobufError, self.enc, {"u": 0, "s": 2**63})
        self.assertEqual(
            decode(self.protos, "r", self.enc({"u": 0, "s": -(2**63)})), {"u": 0, "s": -(2**63)}
        )

    def test_float_values(self) -> None:
        """Numbers for float and double; float32 overflow is an infinity, as in JavaScript."""
        self.assertEqual(
            self.enc({"u": 0, "f": 2, "d": 1}), h("08 00 1d 00 00 00 40 21") + struct.pack("<d", 1)
        )
        self.assertEqual(self.enc({"u": 0, "f": 1e39}), h("08 00 1d 00 00 80 7f"))
        self.assertEqual(self.enc({"u": 0, "f": -1e39}), h("08 00 1d 00 00 80 ff"))
        for bad in ("1", True, object(), 10**400):
            self.assertRaises(ProtobufError, self.enc, {"u": 0, "f": bad})
            self.assertRaises(ProtobufError, self.enc, {"u": 0, "d": bad})

    def test_wrong_types(self) -> None:
        for bad in (
            {"u": 0, "t": 5},
            {"u": 0, "t": b"x"},
            {"u": 0, "t": "\ud800"},
            {"u": 0, "m": [1]},
            {"u": 0, "m": 5},
            {"u": 0, "ms": {"a": 1}},
            {"u": 0, "ms": [None]},
            {"u": 0, "us": 5},
            {"u": 0, "ts": "abc"},
            {"u": 0, "ts": [None]},
        ):
            self.assertRaises(ProtobufError, self.enc, bad)
        self.assertRaises(ProtobufError, self.enc, [("u", 1)])
        self.assertRaises(ProtobufError, self.enc, None)

    def test_unknown_route(self) -> None:
        e = self.assertRaises(ProtobufError, self.enc, {}, "nope")
        self.assertIn("'nope'", str(e))
        self.assertRaises(ProtobufError, SPEC.encode_server, "nope", {})
        self.assertRaises(ProtobufError, SPEC.encode_client, "onMove", {})

    def test_tuples_and_empty(self) -> None:
        """Tuples work as lists; a message with nothing set encodes to nothing."""
        self.assertEqual(self.enc({"u": 1, "us": (1, 2)}), self.enc({"u": 1, "us": [1, 2]}))
        self.assertEqual(self.enc({}, "deep"), b"")

    def test_recursive_definition(self) -> None:
        """A message that contains itself works, to L{MAX_DEPTH} levels of value."""
        value: dict[str, Any] = {"v": 1}
        for _ in range(MAX_DEPTH - 1):
            value = {"next": value}
        data = self.enc({"n": value}, "deep")
        self.assertEqual(decode(self.protos, "deep", data), {"n": value})
        too_deep = {"n": {"next": value}}
        self.assertRaises(ProtobufError, self.enc, too_deep, "deep")

    def test_cycle(self) -> None:
        """A cyclic value is an error, not a RecursionError."""
        node: dict[str, Any] = {"v": 1}
        node["next"] = node
        self.assertRaises(ProtobufError, self.enc, {"n": node}, "deep")


class DecodeTests(SynchronousTestCase):
    """Decoding errors (§9.3.5, §15.2): only L{ProtobufError}, never a crash."""

    protos = EncodeTests.protos

    def dec(self, data: bytes, route: str = "r") -> dict[str, Any]:
        return decode(self.protos, route, data)

    def test_unknown_tag(self) -> None:
        e = self.assertRaises(ProtobufError, self.dec, h("08 01 50 01"))
        self.assertIn("unknown tag 10", str(e))
        self.assertIn("'r'", str(e))
        self.assertRaises(ProtobufError, self.dec, h("32 02 10 01"))  # tag 2 inside M
        self.assertRaises(
            ProtobufError, SPEC.decode_client, "connector.entryHandler.entry", h("18 01")
        )

    def test_over_long_varint(self) -> None:
        """Ten varint bytes are read; an eleventh is an error."""
        self.assertEqual(self.dec(h("08 ff ff ff ff ff ff ff ff ff 01")), {"u": 2**64 - 1})
        e = self.assertRaises(ProtobufError, self.dec, h("08 ff ff ff ff ff ff ff ff ff ff 01"))
        self.assertIn("10 bytes", str(e))
        self.assertRaises(ProtobufError, self.dec, h("ff ff ff ff ff ff ff ff ff ff 01"))

    def test_truncated(self) -> None:
        for data in (
            h("08"),
            h("08 80"),
            h("1d 00 00"),
            h("21 00 00 00 00 00 00 00"),
            h("2a 03 61 62"),
            h("32 05 08 01"),
            h("42 02 00"),  # count 2, one element
            h("42 02 00 80"),
        ):
            self.assertRaises(ProtobufError, self.dec, data)

    def test_sub_message_bounds(self) -> None:
        """A value inside a sub-message may not run past the sub-message's declared length."""
        self.assertRaises(ProtobufError, self.dec, h("32 01 08 01"))
        self.assertRaises(ProtobufError, self.dec, h("32 02 08 80 01"))

    def test_huge_counts(self) -> None:
        """Counts larger than the remaining bytes fail at once."""
        protos = parse_protos(
            {"r": {"repeated double d": 1, "repeated float f": 2, "repeated uInt32 u": 3}}
        )
        for data in (
            h("09 ff ff ff ff 0f 00"),
            h("15 ff ff ff ff 0f"),
            h("18 ff ff ff ff 0f 01 02"),
        ):
            self.assertRaises(ProtobufError, decode, protos, "r", data)

    def test_empty_repeated(self) -> None:
        """A zero count gives an empty list, as upstream."""
        self.assertEqual(self.dec(h("42 00")), {"us": []})

    def test_last_occurrence_wins(self) -> None:
        self.assertEqual(self.dec(h("08 01 08 02")), {"u": 2})
        self.assertEqual(self.dec(h("4a 01 61 4a 01 62")), {"ts": ["a", "b"]})

    def test_required_not_enforced(self) -> None:
        self.assertEqual(self.dec(b""), {})
        self.assertEqual(self.dec(h("10 01")), {"s": -1})

    def test_utf8(self) -> None:
        """Bad UTF-8 is an error; the browser client's CESU-8 surrogate pairs are accepted."""
        for bad in ("ff", "c3", "ed a0 80", "80"):
            self.assertRaises(ProtobufError, self.dec, h(f"2a {len(h(bad)):02x} {bad}"))
        self.assertEqual(self.dec(h("2a 04 f0 9f 98 80")), {"t": "\U0001f600"})
        self.assertEqual(self.dec(h("2a 06 ed a0 bd ed b8 80")), {"t": "\U0001f600"})

    def test_deep_body(self) -> None:
        """A body of thousands of nested length prefixes is a L{ProtobufError}."""
        inner = b""
        for _ in range(3000):
            inner = b"\x0a" + bytes(_varint(len(inner))) + inner
        self.assertRaises(
            ProtobufError, self.dec, b"\x0a" + bytes(_varint(len(inner))) + inner, "deep"
        )

    def test_unknown_route(self) -> None:
        self.assertRaises(ProtobufError, self.dec, b"", "nope")
        self.assertRaises(ProtobufError, SPEC.decode_client, "onMove", b"")
        self.assertRaises(ProtobufError, SPEC.decode_server, "area.playerHandler.move", b"")

    def test_bytes_like(self) -> None:
        data = h("08 01 2a 01 61")
        for value in (bytearray(data), memoryview(data)):
            self.assertEqual(decode(self.protos, "r", value), {"u": 1, "t": "a"})

    def test_error_is_pomelo_error(self) -> None:
        self.assertTrue(issubclass(ProtobufError, PomeloError))


def _varint(value: int) -> bytearray:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return out


class ProtobufClassTests(SynchronousTestCase):
    """L{Protobuf}: one server's protos, both directions, and a client's view."""

    def test_from_parsed(self) -> None:
        """A client builds the same codec from the handshake's parsed protos."""
        protos = _handshake_protos()
        client = Protobuf.from_parsed(protos["client"], protos["server"], protos["version"])
        server = Protobuf.from_config_dir(DEMO_CONFIG)
        self.assertEqual(client.version, server.version)
        self.assertEqual(
            Protobuf.from_parsed(protos["client"], protos["server"]).version, server.version
        )
        message = {"id": 1, "name": "n", "values": [1, -1], "items": [{"kind": 3}]}
        route = "connector.entryHandler.proto"
        self.assertEqual(server.decode_client(route, client.encode_client(route, message)), message)
        self.assertEqual(client.decode_server(route, server.encode_server(route, message)), message)
        self.assertTrue(client.has_client(route))
        self.assertTrue(client.has_server(route))
        self.assertFalse(client.has_client("connector.entryHandler.entry"))

    def test_from_parsed_keeps_version(self) -> None:
        self.assertEqual(Protobuf.from_parsed({}, {}, "").version, "")

    def test_from_parsed_malformed(self) -> None:
        bad: Any
        for bad in (
            {"r": 5},
            {"r": {"a": 5}},
            {"r": {"a": {"option": "sometimes", "type": "uInt32", "tag": 1}}},
            {"r": {"a": {"option": "required", "type": 5, "tag": 1}}},
            {"r": {"a": {"option": "required", "type": "uInt32", "tag": "1"}}},
            {"r": {"a": {"option": "required", "type": "uInt32", "tag": 1}, "__tags": {"1": "b"}}},
            {"r": {"__tags": {"x": "a"}, "a": {"option": "required", "type": "uInt32", "tag": 1}}},
            {"r": {"__messages": [], "__tags": {}}},
        ):
            self.assertRaises(ProtobufError, Protobuf.from_parsed, bad, {})
        self.assertRaises(ProtobufError, Protobuf.from_parsed, [], {})

    def test_from_parsed_without_tags(self) -> None:
        """A hand-written parsed form without C{__tags} decodes by the fields' tags."""
        protobuf = Protobuf.from_parsed(
            {"r": {"a": {"option": "required", "type": "uInt32", "tag": 1}}}, {}
        )
        self.assertEqual(protobuf.decode_client("r", h("08 05")), {"a": 5})

    def test_bad_definition_fails_at_load(self) -> None:
        self.assertRaises(ProtobufError, Protobuf, {"r": {"optional bool b": 1}})
        Protobuf({"r": {"optional bool b": 1}}, strict=False)

    def test_parsed_form_untouched(self) -> None:
        """The compiled tables live outside the parsed dictionaries, which stay JSON."""
        protobuf = Protobuf.from_config_dir(DEMO_CONFIG)
        before = js(protobuf.client)
        protobuf.encode_client(
            "connector.entryHandler.proto", {"id": 1, "name": "x", "items": [{"kind": 1}]}
        )
        self.assertEqual(js(protobuf.client), before)
        self.assertEqual(js(protobuf.client), js(_handshake_protos()["client"]))
        self.assertIn("Protobuf", repr(protobuf))


# --- property tests ---------------------------------------------------------------------------

_u32 = st.integers(min_value=0, max_value=2**32 - 1)
_s32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
_double = st.floats(allow_nan=False)
_float32 = st.floats(allow_nan=False, width=32)

_demo_item = st.fixed_dictionaries({"kind": _u32}, optional={"label": st.text()})
_demo_message = st.fixed_dictionaries(
    {"id": _u32, "name": st.text()},
    optional={
        "values": st.lists(_s32, max_size=8),
        "score": _double,
        "items": st.lists(_demo_item, max_size=4),
    },
)
_pos = st.fixed_dictionaries({"x": _s32, "y": _s32})
_nested_message = st.fixed_dictionaries(
    {"id": _u32},
    optional={
        "pos": _pos,
        "items": st.lists(
            st.fixed_dictionaries({"kind": _u32}, optional={"label": st.text()}), max_size=4
        ),
        "ids": st.lists(_u32, max_size=8),
        "deltas": st.lists(_s32, max_size=8),
        "ds": st.lists(_double, max_size=8),
        "fs": st.lists(_float32, max_size=8),
        "names": st.lists(st.text(), max_size=4),
    },
)


def _without_empty_lists(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if v != []}


class PropertyTests(SynchronousTestCase):
    """Round trips of generated messages, and arbitrary bytes."""

    demo = Protobuf.from_config_dir(DEMO_CONFIG)

    @given(_demo_message)
    def test_demo_round_trip(self, message: dict[str, Any]) -> None:
        route = "connector.entryHandler.proto"
        data = self.demo.encode_server(route, message)
        decoded = self.demo.decode_client(route, data)
        expected = _without_empty_lists(message)
        self.assertEqual(decoded, expected)
        self.assertEqual(list(decoded), list(expected))
        self.assertEqual(decode(self.demo.server, route, data), expected)

    @given(_nested_message)
    def test_nested_round_trip(self, message: dict[str, Any]) -> None:
        data = encode(VECTOR_PROTOS, "nested", message)
        self.assertEqual(decode(VECTOR_PROTOS, "nested", data), _without_empty_lists(message))

    @given(st.binary(max_size=64), st.sampled_from(sorted(VECTOR_PROTOS)))
    @settings(max_examples=500)
    def test_arbitrary_bytes(self, data: bytes, route: str) -> None:
        try:
            result = decode(VECTOR_PROTOS, route, data)
        except ProtobufError:
            return
        self.assertIsInstance(result, dict)

    @given(_nested_message, st.data())
    def test_cut_round_trip(self, message: dict[str, Any], data: st.DataObject) -> None:
        """Cutting a valid body anywhere decodes or raises L{ProtobufError}."""
        body = encode(VECTOR_PROTOS, "nested", message)
        cut = data.draw(st.integers(min_value=0, max_value=len(body)))
        with contextlib.suppress(ProtobufError):
            decode(VECTOR_PROTOS, "nested", body[:cut])
