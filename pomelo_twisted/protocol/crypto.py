"""RSA-signed client messages, Pomelo's ``useCrypto`` (protocol.md §14), sans-IO.

With ``useCrypto`` the client sends its RSA public key in the handshake
(C{sys.rsa = {"rsa_n": <hex>, "rsa_e": <number>}}) and signs every message: it serialises the
body with JavaScript's C{JSON.stringify}, signs those characters with RSASSA-PKCS1-v1_5 over
SHA-256, and sends the body with an extra field C{"__crypto__": <signature as hex>}. The server
removes that field, serialises what is left exactly as JavaScript would (L{js_stringify}) and
checks the signature.

Deliberate differences from pomelo 2.2.7 (protocol.md §14, §18 B13):

  - the key is checked when the handshake arrives (missing, empty, not hex, too large, a bad
    exponent: L{ClientKeyError}), rather than failing on every later message;
  - a standard, strict PKCS#1 v1.5 verifier (C{cryptography}); SHA-256 only unless SHA-1 is
    asked for;
  - the modulus size is bounded, so a client cannot make every check expensive.

This module does not touch the network; L{pomelo_twisted.server.commands} applies it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from .errors import PomeloError

__all__ = [
    "CRYPTO_FIELD",
    "MIN_MODULUS_BITS",
    "SESSION_KEY",
    "ClientKeyError",
    "SignatureError",
    "js_stringify",
    "public_key_from_handshake",
    "verify_message",
]

#: The body field that carries the signature.
CRYPTO_FIELD = "__crypto__"
#: The session setting that holds a connection's key (Pomelo keeps it there too, as C{pubKey}).
SESSION_KEY = "pubKey"
#: The smallest modulus accepted: a 512-bit modulus is the smallest standard RSA size that
#: holds a PKCS#1 v1.5 SHA-256 signature (11 + 19 + 32 = 62 bytes). The JS client uses 1024.
MIN_MODULUS_BITS = 512
#: JavaScript numbers hold integers exactly up to 2**53; a JS client cannot send a larger
#: C{rsa_e}, and a bounded exponent keeps verification cheap (65537 is what clients use).
_MAX_EXPONENT = 2**53 - 1

_HEX = re.compile(r"[0-9a-fA-F]+")


class ClientKeyError(PomeloError):
    """The handshake's C{sys.rsa} is missing or is not a usable RSA public key."""


class SignatureError(PomeloError):
    """A message's C{__crypto__} signature is missing, malformed or does not verify."""


# --- JavaScript's JSON.stringify ------------------------------------------------------------

_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}
# Control characters, the two characters that must be escaped, and lone surrogates (which
# JSON.stringify writes as \udXXX since ES2019; a decoded JSON body never holds them).
_NEEDS_ESCAPE = re.compile('[\x00-\x1f"\\\\\ud800-\udfff]')
_INDEX_KEY = re.compile(r"0|[1-9][0-9]{0,9}")
_MAX_INDEX = 2**32 - 2  # the largest array index, which is what "integer-like" means in JS
_SAFE_INTEGER = 2**53


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _quote(text: str) -> str:
    return '"' + _NEEDS_ESCAPE.sub(_escape, text) + '"'


def _number(value: float) -> str:
    """JavaScript's Number::toString for a double (ECMA-262 §6.1.6.1.20)."""
    if not math.isfinite(value):
        return "null"  # JSON.stringify writes NaN and the infinities as null
    if value == 0:
        return "0"  # -0 too
    # repr is the shortest string that reads back as the same double, as JS requires.
    _, digits_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digits_tuple))
    k = len(digits)
    n = k + exponent  # value = 0.digits * 10**n
    prefix = "-" if value < 0 else ""
    if k <= n <= 21:
        return prefix + digits + "0" * (n - k)
    if 0 < n <= 21:
        return prefix + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return prefix + "0." + "0" * -n + digits
    e = n - 1
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{prefix}{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


def _integer(value: int) -> str:
    if -_SAFE_INTEGER <= value <= _SAFE_INTEGER:
        return str(value)
    try:
        return _number(float(value))  # what JSON.parse would have made of it
    except OverflowError:
        return "null"  # Infinity in JavaScript


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    raise TypeError(f"object keys must be str, not {type(key).__name__}")


def _ordered_items(obj: dict[Any, Any]) -> list[tuple[str, Any]]:
    """An object's properties in JavaScript's order: array-index keys first, ascending; then
    the other keys in insertion order."""
    indexes: list[tuple[int, str, Any]] = []
    others: list[tuple[str, Any]] = []
    for raw_key, value in obj.items():
        key = _key(raw_key)
        if _INDEX_KEY.fullmatch(key) and int(key) <= _MAX_INDEX:
            indexes.append((int(key), key, value))
        else:
            others.append((key, value))
    if not indexes:
        return others
    indexes.sort(key=lambda item: item[0])
    return [(key, value) for _, key, value in indexes] + others


class _Frame:
    __slots__ = ("closer", "count", "ident", "is_object", "items")

    def __init__(self, items: Iterator[Any], closer: str, is_object: bool, ident: int) -> None:
        self.items = items
        self.closer = closer
        self.is_object = is_object
        self.ident = ident
        self.count = 0


_END: Any = object()


def js_stringify(value: Any) -> str:
    """Serialise C{value} exactly as JavaScript's C{JSON.stringify(value)} does.

    C{value} is what a JSON decoder produces (dict, list, str, int, float, bool, None; tuples
    count as arrays). The output is compact; object keys come in JavaScript's property order
    (integer-like keys first, ascending, then insertion order); strings escape only C{"},
    C{\\} and control characters (C{\\b \\f \\n \\r \\t} or C{\\u00XX}); everything else,
    non-ASCII included, is written as is; numbers are formatted as JavaScript formats them
    (C{1} for 1.0, C{1e+21}, C{1e-7}, C{null} for NaN and the infinities), and integers beyond
    2**53 as the double JavaScript would have parsed.

    Iterative, so deeply nested input cannot exhaust the Python stack.

    @raise TypeError: a value of another type, or a non-string key.
    @raise ValueError: a container that contains itself.
    """
    parts: list[str] = []
    frames: list[_Frame] = []
    open_ids: set[int] = set()
    current = value
    while True:
        if isinstance(current, str):
            parts.append(_quote(current))
        elif current is None:
            parts.append("null")
        elif current is True:
            parts.append("true")
        elif current is False:
            parts.append("false")
        elif isinstance(current, int):
            parts.append(_integer(current))
        elif isinstance(current, float):
            parts.append(_number(current))
        elif isinstance(current, (dict, list, tuple)):
            ident = id(current)
            if ident in open_ids:
                raise ValueError("circular structure cannot be serialised")
            open_ids.add(ident)
            if isinstance(current, dict):
                parts.append("{")
                frames.append(_Frame(iter(_ordered_items(current)), "}", True, ident))
            else:
                parts.append("[")
                frames.append(_Frame(iter(current), "]", False, ident))
        else:
            raise TypeError(f"{type(current).__name__} is not JSON-serialisable")
        while frames:
            frame = frames[-1]
            item = next(frame.items, _END)
            if item is _END:
                parts.append(frame.closer)
                open_ids.discard(frame.ident)
                frames.pop()
                continue
            if frame.count:
                parts.append(",")
            frame.count += 1
            if frame.is_object:
                key, current = item
                parts.append(_quote(key))
                parts.append(":")
            else:
                current = item
            break
        else:
            return "".join(parts)


# --- keys and signatures --------------------------------------------------------------------


def public_key_from_handshake(rsa: Any, max_bits: int) -> RSAPublicKey:
    """The client's public key from a handshake's C{sys.rsa}.

    @param rsa: C{{"rsa_n": <modulus as hex>, "rsa_e": <public exponent as a number>}}.
    @param max_bits: the largest modulus accepted, in bits.
    @raise ClientKeyError: C{rsa} is missing or not an object; C{rsa_n} is missing, empty, not
        hex, even, smaller than L{MIN_MODULUS_BITS} or larger than C{max_bits}; C{rsa_e} is not
        an integral number, is even, is below 3, is not below the modulus, or is larger than a
        JavaScript number holds exactly.
    """
    if not isinstance(rsa, dict):
        what = "missing" if rsa is None else f"a {type(rsa).__name__}, not an object"
        raise ClientKeyError(f"sys.rsa is {what}")
    hex_n = rsa.get("rsa_n")
    if not isinstance(hex_n, str) or not hex_n:
        raise ClientKeyError("sys.rsa.rsa_n (the modulus as hex) is missing or empty")
    if not _HEX.fullmatch(hex_n):
        raise ClientKeyError("sys.rsa.rsa_n is not a hex string")
    significant = hex_n.lstrip("0")
    if len(significant) * 4 > max_bits + 3:  # reject before converting a huge string
        raise ClientKeyError(f"the RSA modulus is larger than {max_bits} bits")
    n = int(significant or "0", 16)
    bits = n.bit_length()
    if bits > max_bits:
        raise ClientKeyError(f"the RSA modulus has {bits} bits, more than the {max_bits} allowed")
    if bits < MIN_MODULUS_BITS:
        raise ClientKeyError(
            f"the RSA modulus has {bits} bits, fewer than the {MIN_MODULUS_BITS} required"
        )
    if not n & 1:
        raise ClientKeyError("the RSA modulus is even")
    e = rsa.get("rsa_e")
    if isinstance(e, float) and e.is_integer():
        e = int(e)
    if not isinstance(e, int) or isinstance(e, bool):
        raise ClientKeyError("sys.rsa.rsa_e (the public exponent) is missing or not an integer")
    if e < 3 or not e & 1:
        raise ClientKeyError(f"the RSA public exponent {e} is not an odd number of 3 or more")
    if e > _MAX_EXPONENT or e >= n:
        raise ClientKeyError("the RSA public exponent is too large")
    try:
        return RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:  # cryptography's own checks; the ones above should cover them
        raise ClientKeyError(f"unusable RSA public key: {exc}") from exc


def _signature_bytes(signature: Any, size: int) -> bytes:
    """The hex signature as C{size} bytes (the client writes it without leading zeros)."""
    if not isinstance(signature, str) or not signature:
        raise SignatureError(f"{CRYPTO_FIELD} is not a non-empty hex string")
    if not _HEX.fullmatch(signature):
        raise SignatureError(f"{CRYPTO_FIELD} is not a hex string")
    significant = signature.lstrip("0")
    if len(significant) > 2 * size:
        raise SignatureError(f"{CRYPTO_FIELD} is longer than the key's {size} bytes")
    return int(significant or "0", 16).to_bytes(size, "big")


def verify_message(key: RSAPublicKey, body: Any, *, allow_sha1: bool = False) -> dict[str, Any]:
    """Check a signed message body and return it without its signature.

    The signature is taken from C{body["__crypto__"]} (hex, any length up to the modulus
    size); the rest of the body is serialised with L{js_stringify}, encoded as UTF-8, and
    checked as an RSASSA-PKCS1-v1_5 signature with SHA-256 (or SHA-1, when C{allow_sha1}).
    C{body} itself is not modified.

    @return: a new dict: C{body} without C{__crypto__}, in the same order.
    @raise SignatureError: C{body} is not an object, has no C{__crypto__}, or the signature
        is malformed or does not verify.
    """
    if not isinstance(body, dict):
        raise SignatureError(
            f"the body is a {type(body).__name__}, not a JSON object, so it has no {CRYPTO_FIELD}"
        )
    if CRYPTO_FIELD not in body:
        raise SignatureError(f"the body has no {CRYPTO_FIELD} signature")
    signature = _signature_bytes(body[CRYPTO_FIELD], (key.key_size + 7) // 8)
    rest = {k: v for k, v in body.items() if k != CRYPTO_FIELD}
    try:
        signed = js_stringify(rest).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise SignatureError(f"the body cannot be serialised as JavaScript would: {e}") from e
    algorithms: tuple[hashes.HashAlgorithm, ...] = (
        (hashes.SHA256(), hashes.SHA1()) if allow_sha1 else (hashes.SHA256(),)
    )
    for algorithm in algorithms:
        try:
            key.verify(signature, signed, padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            continue
        return rest
    raise SignatureError("the signature does not verify")
