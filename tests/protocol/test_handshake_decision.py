"""handshake.decide: Pomelo's handshake checks, in order, without a socket (protocol.md §5.2)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.protocol import handshake as hs
from pomelo_twisted.protocol.crypto import ClientKeyError
from pomelo_twisted.protocol.dictionary import RouteDictionary

DICTIONARY = RouteDictionary(["connector.entryHandler.entry"], [])
SYS = {"type": "js-websocket", "version": "0.0.1"}


def accept(client_type: Any, version: Any) -> bool:
    return True


def decide(
    msg: dict[str, Any], check: Any = accept, rsa: int | None = None
) -> hs.HandshakeDecision:
    return hs.decide(msg, check, 3, DICTIONARY, None, rsa)


class DecideTests(SynchronousTestCase):
    def test_ok(self) -> None:
        decision = decide({"sys": SYS})
        self.assertEqual(decision.code, hs.CODE_OK)
        self.assertEqual(
            decision.response, {"code": 200, "sys": hs.build_sys(SYS, 3, DICTIONARY, None)}
        )
        self.assertIsNone(decision.key)
        self.assertIsNone(decision.error)

    def test_no_sys(self) -> None:
        for msg in ({}, {"sys": None}, {"sys": 0}, {"sys": ""}):
            decision = decide(msg)
            self.assertEqual((decision.code, decision.why), (500, "handshake without sys"))

    def test_check_client_sees_type_and_version(self) -> None:
        seen: list[tuple[Any, Any]] = []
        decide({"sys": SYS}, lambda t, v: seen.append((t, v)) or True)
        decide({"sys": []}, lambda t, v: seen.append((t, v)) or True)  # truthy, not an object
        self.assertEqual(seen, [("js-websocket", "0.0.1"), (None, None)])

    def test_refused(self) -> None:
        decision = decide({"sys": SYS}, lambda t, v: False)
        self.assertEqual((decision.code, decision.why), (501, "client refused by check_client"))

    def test_check_client_raises(self) -> None:
        def broken(t: Any, v: Any) -> bool:
            raise RuntimeError("boom")

        decision = decide({"sys": SYS}, broken)
        self.assertEqual((decision.code, decision.why), (500, "check_client hook failed"))
        self.assertIsInstance(decision.error, RuntimeError)

    def test_check_before_key(self) -> None:
        """A refused client is refused (501) before its key is looked at."""
        decision = decide({"sys": SYS}, lambda t, v: False, rsa=4096)
        self.assertEqual(decision.code, 501)

    def test_unusable_key(self) -> None:
        decision = decide({"sys": {**SYS, "rsa": {}}}, rsa=4096)
        self.assertEqual(decision.code, 500)
        self.assertTrue(decision.why.startswith("bad RSA key: "))
        self.assertIsInstance(decision.error, ClientKeyError)
