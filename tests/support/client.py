"""What the client tests share: the demo app's routes and a proto value (the demo's ROUTES.md),
and handshake answers (the reference Pomelo server's, from tests/vectors/handshake.json)."""

from __future__ import annotations

import json
from typing import Any

from pomelo_twisted.protocol.package import (
    PackageType,
    encode_package,
)
from tests.support.vectors import load_vectors

ENTRY = "connector.entryHandler.entry"
ECHO = "connector.entryHandler.echo"
BIND = "connector.entryHandler.bind"
PUSH = "connector.entryHandler.push"
NOTIFY = "connector.entryHandler.notify"
BROADCAST = "connector.entryHandler.broadcast"
KICK = "connector.entryHandler.kick"
PROTO = "connector.entryHandler.proto"

#: A value of the demo's proto route, using every field kind it declares.
PROTO_VALUE = {
    "id": 7,
    "name": "héllo",
    "values": [-3, 0, 300],
    "score": 2.5,
    "items": [{"kind": 1, "label": "a"}, {"kind": 2}],
}

ACK = bytes.fromhex("02 00 00 00")
HEARTBEAT = bytes.fromhex("03 00 00 00")


def reference_answers() -> tuple[dict[str, Any], dict[str, Any]]:
    """The reference Pomelo server's answers for the demo app: a client with nothing cached,
    and one that sent both cached versions."""
    cases = load_vectors("handshake.json")["cases"]
    full = cases[0]["response_json"]
    cached = next(c for c in cases if "dictVersion" in c["request_body"])["response_json"]
    return full, cached


def answer_package(answer: Any) -> bytes:
    return encode_package(PackageType.HANDSHAKE, json.dumps(answer).encode())
