"""Tests for L{pomelo_twisted.protocol.dictionary}: the route dictionary (protocol.md §8)."""

from __future__ import annotations

import base64
import hashlib
import json
import os

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

import pomelo_twisted.demo
from pomelo_twisted.protocol.dictionary import RouteDictionary
from tests.support.vectors import load_vectors


def _specVersion(d: dict[str, int]) -> str:
    """§8.3's own Python formula for dictVersion."""
    return base64.b64encode(
        hashlib.md5(json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()).digest()
    ).decode("ascii")


DEMO_CONFIG = os.path.join(os.path.dirname(pomelo_twisted.demo.__file__), "config")

# The demo app (../demo/ROUTES.md): server type connector, handler entryHandler.
DEMO_METHODS = ["entry", "echo", "bind", "push", "notify", "broadcast", "kick", "proto"]
DEMO_HANDLER_ROUTES = [f"connector.entryHandler.{m}" for m in DEMO_METHODS]
DEMO_EXTRAS = ["onPush", "onNotify", "onBroadcast"]
DEMO_CODES = {
    "connector.entryHandler.bind": 1,
    "connector.entryHandler.broadcast": 2,
    "connector.entryHandler.echo": 3,
    "connector.entryHandler.entry": 4,
    "connector.entryHandler.kick": 5,
    "connector.entryHandler.notify": 6,
    "connector.entryHandler.proto": 7,
    "connector.entryHandler.push": 8,
    "onPush": 9,
    "onNotify": 10,
    "onBroadcast": 11,
}

# §8.3's example.
EXAMPLE_HANDLERS = [
    "connector.entryHandler.entry",
    "connector.entryHandler.publish",
    "connector.entryHandler.subscribe",
]
EXAMPLE_VERSION = "DhrOF72b3vNmhiDzNTXBTw=="


def _handshakeSys() -> dict:
    """The C{sys} object of the reference server's answer to C{{"sys":1}} (first case)."""
    case = load_vectors("handshake.json")["cases"][0]
    raw = bytes.fromhex(case["response_hex"])
    # A HANDSHAKE package: type 1, 24-bit length, then the JSON body.
    assert raw[0] == 1, raw[:4].hex()
    assert int.from_bytes(raw[1:4], "big") == len(raw) - 4
    response = json.loads(raw[4:].decode("utf-8"))
    assert response["code"] == 200
    return response["sys"]


class DemoTests(SynchronousTestCase):
    """The demo app's dictionary matches ROUTES.md and the reference server's handshake."""

    def setUp(self) -> None:
        self.sys = _handshakeSys()
        self.d = RouteDictionary(DEMO_HANDLER_ROUTES, DEMO_EXTRAS)

    def test_codes(self) -> None:
        """The codes of ROUTES.md, in code order."""
        self.assertEqual(list(self.d.routeToCode.items()), list(DEMO_CODES.items()))

    def test_handshake_dict(self) -> None:
        """C{dict} and C{routeToCode} of the handshake, key order included."""
        self.assertEqual(list(self.d.routeToCode.items()), list(self.sys["dict"].items()))
        self.assertEqual(list(self.d.routeToCode.items()), list(self.sys["routeToCode"].items()))

    def test_handshake_code_to_route(self) -> None:
        expected = {int(code): route for code, route in self.sys["codeToRoute"].items()}
        self.assertEqual(self.d.codeToRoute, expected)
        self.assertEqual(list(self.d.codeToRoute), list(range(1, 12)))

    def test_handshake_version(self) -> None:
        self.assertEqual(self.sys["dictVersion"], "Mcg0eRvPNpbFURa6QvOdqA==")
        self.assertEqual(self.d.version, self.sys["dictVersion"])
        self.assertEqual(self.d.version, _specVersion(DEMO_CODES))

    def test_handler_order_irrelevant(self) -> None:
        for routes in (sorted(DEMO_HANDLER_ROUTES), list(reversed(DEMO_HANDLER_ROUTES))):
            d = RouteDictionary(routes, DEMO_EXTRAS)
            self.assertEqual(list(d.routeToCode.items()), list(DEMO_CODES.items()))
            self.assertEqual(d.version, self.sys["dictVersion"])

    def test_iterables(self) -> None:
        """Any iterables will do, including generators."""
        d = RouteDictionary(iter(DEMO_HANDLER_ROUTES), (r for r in DEMO_EXTRAS))
        self.assertEqual(list(d.routeToCode.items()), list(DEMO_CODES.items()))

    def test_lookups(self) -> None:
        for route, code in DEMO_CODES.items():
            self.assertEqual(self.d.route_to_code(route), code)
            self.assertEqual(self.d.code_to_route(code), route)
            self.assertIn(route, self.d)
        self.assertEqual(len(self.d), 11)

    def test_unknown_lookups(self) -> None:
        for route in ("connector.entryHandler.nope", "onChat", "", "ONPUSH", "connector"):
            self.assertIsNone(self.d.route_to_code(route))
            self.assertNotIn(route, self.d)
        for code in (0, 12, -1, 65535, 65536):
            self.assertIsNone(self.d.code_to_route(code))
        self.assertNotIn(4, self.d)

    def test_from_config_dir(self) -> None:
        """The demo config directory holds the extras of the reference handshake."""
        d = RouteDictionary.from_config_dir(DEMO_HANDLER_ROUTES, DEMO_CONFIG)
        self.assertEqual(list(d.routeToCode.items()), list(self.sys["dict"].items()))
        self.assertEqual(d.version, self.sys["dictVersion"])
        self.assertEqual(d.codeToRoute, {int(c): r for c, r in self.sys["codeToRoute"].items()})


class VersionTests(SynchronousTestCase):
    """§8.3: dictVersion = base64(md5(JSON.stringify(dict)))."""

    def test_spec_example(self) -> None:
        d = RouteDictionary(EXAMPLE_HANDLERS, ["onChat"])
        self.assertEqual(
            d.routeToCode,
            {
                "connector.entryHandler.entry": 1,
                "connector.entryHandler.publish": 2,
                "connector.entryHandler.subscribe": 3,
                "onChat": 4,
            },
        )
        self.assertEqual(d.version, EXAMPLE_VERSION)
        self.assertEqual(_specVersion(d.routeToCode), EXAMPLE_VERSION)

    def test_empty(self) -> None:
        d = RouteDictionary()
        self.assertEqual(len(d), 0)
        self.assertEqual(d.routeToCode, {})
        self.assertEqual(d.codeToRoute, {})
        self.assertEqual(d.version, _specVersion({}))
        self.assertEqual(d.version, base64.b64encode(hashlib.md5(b"{}").digest()).decode())

    def test_non_ascii(self) -> None:
        """Non-ASCII routes are hashed unescaped, as JSON.stringify writes them."""
        d = RouteDictionary(["área.h.m", "世界.h.m"], ["on🎮"])
        self.assertEqual(d.version, _specVersion(d.routeToCode))
        raw = '{"área.h.m":1,"世界.h.m":2,"on🎮":3}'.encode()
        self.assertEqual(d.version, base64.b64encode(hashlib.md5(raw).digest()).decode())

    def test_version_is_a_string(self) -> None:
        self.assertIsInstance(RouteDictionary(["a"]).version, str)

    def test_depends_on_numbering(self) -> None:
        a = RouteDictionary(["a", "b"])
        b = RouteDictionary(["a"], ["c"])
        c = RouteDictionary([], ["b", "a"])
        self.assertNotEqual(a.version, b.version)
        self.assertNotEqual(a.version, c.version)

    @given(
        st.lists(st.text(min_size=1, max_size=20), max_size=20),
        st.lists(st.text(min_size=1, max_size=20), max_size=10),
    )
    def test_version_matches_spec_formula(self, handlers: list[str], extras: list[str]) -> None:
        d = RouteDictionary(handlers, extras)
        self.assertEqual(d.version, _specVersion(d.routeToCode))


class ConstructionTests(SynchronousTestCase):
    """§8.1: handler routes sorted and numbered from 1, then the extras in order."""

    def test_extras_keep_order(self) -> None:
        d = RouteDictionary(["b.h.m", "a.h.m"], ["zeta", "alpha", "mid"])
        self.assertEqual(
            list(d.routeToCode.items()),
            [("a.h.m", 1), ("b.h.m", 2), ("zeta", 3), ("alpha", 4), ("mid", 5)],
        )

    def test_only_extras(self) -> None:
        d = RouteDictionary(extra_routes=["onChat", "onAdd"])
        self.assertEqual(d.routeToCode, {"onChat": 1, "onAdd": 2})

    def test_duplicate_handler_routes(self) -> None:
        d = RouteDictionary(["b.h.m", "a.h.m", "b.h.m", "a.h.m"])
        self.assertEqual(list(d.routeToCode.items()), [("a.h.m", 1), ("b.h.m", 2)])

    def test_extra_duplicates_handler(self) -> None:
        """An extra route already among the handler routes keeps its handler code."""
        d = RouteDictionary(
            DEMO_HANDLER_ROUTES, ["onPush", "connector.entryHandler.entry", "onNotify"]
        )
        self.assertEqual(d.route_to_code("connector.entryHandler.entry"), 4)
        self.assertEqual(d.route_to_code("onPush"), 9)
        self.assertEqual(d.route_to_code("onNotify"), 10)
        self.assertEqual(len(d), 10)
        self.assertEqual(list(d.codeToRoute), list(range(1, 11)))

    def test_duplicate_extras(self) -> None:
        """A repeated extra route keeps its first code; numbering stays dense."""
        d = RouteDictionary(["b.h.m", "a.h.m", "b.h.m"], ["onX", "a.h.m", "onY", "onX", "onY"])
        self.assertEqual(
            list(d.routeToCode.items()), [("a.h.m", 1), ("b.h.m", 2), ("onX", 3), ("onY", 4)]
        )
        self.assertEqual(d.codeToRoute, {1: "a.h.m", 2: "b.h.m", 3: "onX", 4: "onY"})

    def test_utf16_sort(self) -> None:
        """JavaScript sorts by UTF-16 code unit: an astral character sorts before U+FF01."""
        d = RouteDictionary(["\uff01.h.m", "\U0001f600.h.m", "a.h.m", "\u00e9.h.m"])
        self.assertEqual(
            list(d.routeToCode),
            ["a.h.m", "\u00e9.h.m", "\U0001f600.h.m", "\uff01.h.m"],
        )

    def test_ascii_sort_is_python_sort(self) -> None:
        routes = ["connector.entryHandler.Zed", "connector.entryHandler.a", "area.h.m", "Area.h.m"]
        d = RouteDictionary(routes)
        self.assertEqual(list(d.routeToCode), sorted(routes))

    def test_maximum_size(self) -> None:
        """65535 routes fit two-byte codes; one more does not."""
        routes = [f"r{i:05d}" for i in range(0xFFFF)]
        d = RouteDictionary(routes)
        self.assertEqual(len(d), 0xFFFF)
        self.assertEqual(d.route_to_code("r65534"), 0xFFFF)
        self.assertEqual(d.code_to_route(0xFFFF), "r65534")
        self.assertRaises(ValueError, RouteDictionary, routes, ["one.more"])
        self.assertRaises(ValueError, RouteDictionary, [*routes, "one.more"])
        # Duplicates do not count.
        self.assertEqual(len(RouteDictionary(routes, routes[:10])), 0xFFFF)

    @given(
        st.lists(st.text(max_size=10), max_size=30),
        st.lists(st.text(max_size=10), max_size=30),
    )
    def test_invariants(self, handlers: list[str], extras: list[str]) -> None:
        d = RouteDictionary(handlers, extras)
        expected_routes = set(handlers) | set(extras)
        self.assertEqual(set(d.routeToCode), expected_routes)
        self.assertEqual(list(d.routeToCode.values()), list(range(1, len(expected_routes) + 1)))
        self.assertEqual(d.codeToRoute, {c: r for r, c in d.routeToCode.items()})
        self.assertEqual(len(d), len(expected_routes))
        # Handler routes first, then the new extras in first-seen order.
        n = len(set(handlers))
        self.assertEqual(set(list(d.routeToCode)[:n]), set(handlers))
        new_extras = []
        for r in extras:
            if r not in handlers and r not in new_extras:
                new_extras.append(r)
        self.assertEqual(list(d.routeToCode)[n:], new_extras)
        for route, code in d.routeToCode.items():
            self.assertEqual(d.route_to_code(route), code)
            self.assertEqual(d.code_to_route(code), route)
            self.assertIn(route, d)


class ConfigDirTests(SynchronousTestCase):
    """L{RouteDictionary.from_config_dir}."""

    def _dir(self, content: bytes | None) -> str:
        path = self.mktemp()
        os.makedirs(path)
        if content is not None:
            with open(os.path.join(path, "dictionary.json"), "wb") as f:
                f.write(content)
        return path

    def test_demo_config(self) -> None:
        self.assertTrue(os.path.isfile(os.path.join(DEMO_CONFIG, "dictionary.json")))
        d = RouteDictionary.from_config_dir(DEMO_HANDLER_ROUTES, DEMO_CONFIG)
        self.assertEqual(list(d.routeToCode.items()), list(DEMO_CODES.items()))
        self.assertEqual(d.version, "Mcg0eRvPNpbFURa6QvOdqA==")

    def test_no_dictionary_file(self) -> None:
        d = RouteDictionary.from_config_dir(DEMO_HANDLER_ROUTES, self._dir(None))
        self.assertEqual(
            list(d.routeToCode.items()), [(r, c) for r, c in DEMO_CODES.items() if c <= 8]
        )
        self.assertEqual(d.version, RouteDictionary(DEMO_HANDLER_ROUTES).version)

    def test_empty_array(self) -> None:
        d = RouteDictionary.from_config_dir(["a.b.c"], self._dir(b"[]"))
        self.assertEqual(d.routeToCode, {"a.b.c": 1})

    def test_extras_from_file(self) -> None:
        path = self._dir('["onChat", "on\u4e16", "a.b.c"]'.encode())
        d = RouteDictionary.from_config_dir(["b.b.c", "a.b.c"], path)
        self.assertEqual(
            list(d.routeToCode.items()),
            [("a.b.c", 1), ("b.b.c", 2), ("onChat", 3), ("on\u4e16", 4)],
        )

    def test_bad_dictionary_file(self) -> None:
        for content in (
            b'{"onChat": 1}',
            b'"onChat"',
            b"1",
            b"null",
            b'["onChat", 1]',
            b'["onChat", null]',
            b'[["onChat"]]',
            b"not json",
            b"",
            b'["onChat"',
        ):
            self.assertRaises(
                ValueError, RouteDictionary.from_config_dir, ["a.b.c"], self._dir(content)
            )
