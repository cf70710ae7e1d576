"""The handshake's content (protocol.md §5), sans-IO: parse a request, build the answer.

The command that drives a handshake (hooks, timers, sending) lives in
L{pomelo_twisted.server.commands}; this module only decides what the bytes say and what to
answer (L{decide}), so it can be checked against Pomelo's answers in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from . import json_codec
from .crypto import ClientKeyError, public_key_from_handshake
from .dictionary import RouteDictionary
from .protobuf import Protobuf

__all__ = [
    "CODE_BAD_HANDSHAKE",
    "CODE_OK",
    "CODE_OLD_CLIENT",
    "HandshakeDecision",
    "build_sys",
    "client_key",
    "decide",
    "js_truthy",
    "parse_request",
]

CODE_OK = 200
#: A malformed handshake or a failed user hook (Pomelo's RES_FAIL).
CODE_BAD_HANDSHAKE = 500
#: The client was refused by the C{check_client} hook (Pomelo's RES_OLD_CLIENT).
CODE_OLD_CLIENT = 501


def js_truthy(value: Any) -> bool:
    """JavaScript truthiness, which Pomelo's checks use: C{{}} and C{[]} are true, C{0} is not."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)):
        return value == value and value != 0  # NaN is falsy
    if isinstance(value, str):
        return value != ""
    return True


def parse_request(body: bytes) -> dict[str, Any]:
    """Parse a handshake body; anything that is not a JSON object counts as C{{}}, as upstream."""
    try:
        msg = json_codec.loads(body)
    except (json_codec.JSONDecodeError, UnicodeDecodeError):
        return {}
    return msg if isinstance(msg, dict) else {}


def build_sys(
    client_sys: Any,
    heartbeat: int,
    dictionary: RouteDictionary | None,
    protobuf: Protobuf | None,
) -> dict[str, Any]:
    """The C{sys} object of a successful answer, keys in Pomelo's order (§5.3).

    The dictionary and protos go out only when the client's cached version differs, and each
    group goes out whole: libpomelo2 asserts that all of its keys come together.
    """
    fields = client_sys if isinstance(client_sys, dict) else {}
    sys: dict[str, Any] = {}
    if heartbeat:
        sys["heartbeat"] = int(heartbeat)  # 3.0 would go out as "3.0", which libpomelo2 reads as 0
    if dictionary is not None:
        dict_version = fields.get("dictVersion")
        if not js_truthy(dict_version) or dict_version != dictionary.version:
            sys["dict"] = dictionary.routeToCode
            sys["routeToCode"] = dictionary.routeToCode
            sys["codeToRoute"] = dictionary.codeToRoute
            sys["dictVersion"] = dictionary.version
        sys["useDict"] = True
    if protobuf is not None:
        proto_version = fields.get("protoVersion")
        if not js_truthy(proto_version) or proto_version != protobuf.version:
            sys["protos"] = {
                "server": protobuf.server,
                "client": protobuf.client,
                "version": protobuf.version,
            }
        sys["useProto"] = True
    return sys


def client_key(client_sys: Any, max_bits: int) -> RSAPublicKey:
    """The client's RSA public key from its C{sys.rsa}, for C{useCrypto} (§5.2 step 4, §14).

    Pomelo fails such a handshake with code 500 only because its catch-all turns the exception
    of a missing key into one; here every unusable key is refused up front, including the C{{}}
    that the JS client sends when it does not sign (upstream accepts that one and then drops
    every message of the client).

    @raise pomelo_twisted.protocol.crypto.ClientKeyError: no usable key; answer code 500.
    """
    rsa = client_sys.get("rsa") if isinstance(client_sys, dict) else None
    return public_key_from_handshake(rsa, max_bits)


@dataclass(frozen=True, slots=True)
class HandshakeDecision:
    """What to answer a handshake, before the session and the user's hook (§5.2).

    @ivar code: L{CODE_OK}, L{CODE_BAD_HANDSHAKE} or L{CODE_OLD_CLIENT}.
    @ivar why: for the close line when the handshake fails.
    @ivar response: on success, the answer (C{code} and C{sys}); the hook may add C{user}.
    @ivar key: the client's RSA key (with C{use_crypto}), or C{None}.
    @ivar error: an exception raised by C{check_client}, for the caller to log.
    """

    code: int
    why: str = ""
    response: dict[str, Any] = field(default_factory=dict)
    key: RSAPublicKey | None = None
    error: Exception | None = None


def decide(
    msg: dict[str, Any],
    check_client: Callable[[Any, Any], bool],
    heartbeat: int,
    dictionary: RouteDictionary | None,
    protobuf: Protobuf | None,
    rsa_max_bits: int | None = None,
) -> HandshakeDecision:
    """Pomelo's handshake checks in Pomelo's order: a C{sys} (else 500), C{check_client} on its
    C{type} and C{version} (501 if it says no, 500 if it raises), then, with C{rsa_max_bits}
    (C{use_crypto} on), a usable client key (else 500).

    @param msg: the parsed request (L{parse_request}).
    """
    client_sys = msg.get("sys")
    if not js_truthy(client_sys):
        return HandshakeDecision(CODE_BAD_HANDSHAKE, "handshake without sys")
    fields = client_sys if isinstance(client_sys, dict) else {}
    try:
        accepted = check_client(fields.get("type"), fields.get("version"))
    except Exception as e:
        return HandshakeDecision(CODE_BAD_HANDSHAKE, "check_client hook failed", error=e)
    if not accepted:
        return HandshakeDecision(CODE_OLD_CLIENT, "client refused by check_client")
    key = None
    if rsa_max_bits is not None:
        try:
            key = client_key(client_sys, rsa_max_bits)
        except ClientKeyError as e:
            return HandshakeDecision(CODE_BAD_HANDSHAKE, f"bad RSA key: {e}", error=e)
    response = {"code": CODE_OK, "sys": build_sys(client_sys, heartbeat, dictionary, protobuf)}
    return HandshakeDecision(CODE_OK, response=response, key=key)
