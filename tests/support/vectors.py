"""Test data shared by the suite: the vectors of C{tests/vectors/*.json} (captured from the real
Pomelo server and clients), hex dumps as protocol.md prints them, and protocol.md's protobuf
example definitions (§9.3.1)."""

from __future__ import annotations

import json
import os
from typing import Any

#: The folder of the captured vectors.
VECTORS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vectors")


def load_vectors(name: str) -> Any:
    """The JSON of C{tests/vectors/<name>}."""
    with open(os.path.join(VECTORS_DIR, name), encoding="utf-8") as f:
        return json.load(f)


def h(text: str) -> bytes:
    """Bytes from a hex dump with spaces, as printed in protocol.md."""
    return bytes.fromhex(text)


# protocol.md §9.3.1, as literal test data.
SPEC_SERVER_PROTOS = {
    "connector.entryHandler.entry": {"required uInt32 code": 1, "optional string msg": 2},
    "onMove": {
        "message Pos": {"required sInt32 x": 1, "required sInt32 y": 2},
        "required uInt32 entityId": 1,
        "repeated Pos path": 2,
        "repeated uInt32 ids": 3,
        "optional double t": 4,
    },
    "onBag": {"repeated Item items": 1, "repeated string tags": 2, "repeated float w": 3},
    "message Item": {"required uInt32 id": 1, "optional string name": 2},
}
SPEC_CLIENT_PROTOS = {
    "connector.entryHandler.entry": {"required string username": 1, "optional uInt32 rid": 2},
    "area.playerHandler.move": {
        "required sInt32 x": 1,
        "required int32 y": 2,
        "optional float speed": 3,
    },
}
