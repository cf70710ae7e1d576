"""Tests for L{pomelo_twisted.protocol.crypto}: RSA-signed client messages (protocol.md §5.2 step
4, §10.1, §14).

The literal JavaScript outputs below were produced with Node 20 in a scratch directory outside
the repository: C{JSON.stringify(JSON.parse(text))} for the serialisation table; the signatures
(L{tests.support.crypto}) with jsrsasign and Node's C{crypto.sign}. So a match here shows that
L{js_stringify} re-serialises byte for byte as JavaScript does.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.protocol.codec import decode_json_body
from pomelo_twisted.protocol.crypto import (
    CRYPTO_FIELD,
    MIN_MODULUS_BITS,
    ClientKeyError,
    SignatureError,
    js_stringify,
    public_key_from_handshake,
    verify_message,
)
from pomelo_twisted.protocol.errors import PomeloError
from tests.support.crypto import (
    JS_RSA,
    JS_SIGNED,
    private_key,
    sign,
    with_signature,
)

# --- literal JavaScript data ----------------------------------------------------------------

#: (JSON text, JSON.stringify(JSON.parse(text)) in Node 20).
JS_RESTRINGIFIED = [
    ('{"b":1,"2":2,"a":3,"1":4}', '{"1":4,"2":2,"b":1,"a":3}'),
    (
        '{"z":0,"10":"x","9":"y","01":"lead","-1":"neg","1.5":"dec","4294967294":"max",'
        '"4294967295":"over","":"empty"}',
        '{"9":"y","10":"x","4294967294":"max","z":0,"01":"lead","-1":"neg","1.5":"dec",'
        '"4294967295":"over","":"empty"}',
    ),
    ('{"a":1,"b":2,"a":3}', '{"a":3,"b":2}'),
    (
        "[1.0,-0,-0.0,1e21,1e20,123456789012345678901,1e-7,1e-6,0.000001,1.5e-7,2.5E+10,"
        "5e-324,1.7976931348623157e308,0.1,100,1E2]",
        "[1,0,0,1e+21,100000000000000000000,123456789012345680000,1e-7,0.000001,0.000001,"
        "1.5e-7,25000000000,5e-324,1.7976931348623157e+308,0.1,100,100]",
    ),
    (
        "[12345678901234567890,9007199254740993,-9007199254740993,18446744073709551615]",
        "[12345678901234567000,9007199254740992,-9007199254740992,18446744073709552000]",
    ),
    (
        '"\\u0000\\u0001\\u0008\\u0009\\u000a\\u000b\\u000c\\u000d\\u001f \\" \\\\ \\/ '
        '\\u007f \\u0080 \\u2028\\u2029 \\u00e9 \\u4e2d \\ud83d\\ude00"',
        '"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f \\" \\\\ / \x7f \x80 \u2028\u2029 '
        '\xe9 \u4e2d \U0001f600"',
    ),
    (
        '{"nested":{"x":[{"1":true,"0":false}],"y":null},"":{}}',
        '{"nested":{"x":[{"0":false,"1":true}],"y":null},"":{}}',
    ),
    (
        '{"__proto__":1,"constructor":2,"toString":3}',
        '{"__proto__":1,"constructor":2,"toString":3}',
    ),
    ("[]", "[]"),
    ("{}", "{}"),
]


#: RSAKey.sign(s, "sha1") over '{"legacy":true}' with the same key.
JS_SHA1 = (
    '{"legacy":true}',
    "48bddbfdb30408308a7ffc5e015e57ee57df242806337a83bffb26ecbe53c0c4"
    "f0ceba12e64825c2e814c7485a8a8c0135b14ef23f4204e8cf539838385b7f0c"
    "a63326561c11d025960637ece77a868b0a557ef4a184637ef44a3ceb76602216"
    "22e68913b621e81a512bbd04df3ea99f7ee93f275843cdf76cbc81bc809a5011",
)

#: The whole body the JS client sends for "ascii": JSON.stringify of the parsed body with
#: __crypto__ appended (pomelo-client.js sendMessage).
JS_ASCII_SENT = (
    '{"uid":"alice","rid":1,"route":"connector.entryHandler.entry","__crypto__":"'
    + JS_SIGNED["ascii"][1]
    + '"}'
)


def js_key() -> RSAPublicKey:
    return public_key_from_handshake(dict(JS_RSA), 4096)


# --- js_stringify -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


class JsStringifyTests(SynchronousTestCase):
    def test_node_outputs(self) -> None:
        """Parsing JSON as the connector does and re-serialising gives Node's bytes."""
        for text, expected in JS_RESTRINGIFIED:
            self.assertEqual(js_stringify(decode_json_body(text.encode("utf-8"))), expected, text)

    def test_signed_bodies(self) -> None:
        """Every signed body of the JS vectors re-serialises to what Node signed."""
        for name, (stringified, _) in JS_SIGNED.items():
            self.assertEqual(
                js_stringify(decode_json_body(stringified.encode("utf-8"))), stringified, name
            )

    def test_key_order(self) -> None:
        """Integer-like keys first, ascending; then the others in insertion order."""
        self.assertEqual(
            js_stringify({"b": 1, "10": 2, "a": 3, "2": 4, "02": 5, "0": 6}),
            '{"0":6,"2":4,"10":2,"b":1,"a":3,"02":5}',
        )
        self.assertEqual(js_stringify({1: "x", "b": "y"}), '{"1":"x","b":"y"}')

    def test_numbers(self) -> None:
        """JavaScript number formatting (values checked against Node's JSON.stringify)."""
        cases = {
            1.0: "1",
            -0.0: "0",
            1.5: "1.5",
            1e21: "1e+21",
            1e20: "100000000000000000000",
            1e-7: "1e-7",
            1e-6: "0.000001",
            -1.5e-7: "-1.5e-7",
            0.1 + 0.2: "0.30000000000000004",
            123456789.125: "123456789.125",
            2.5e-10: "2.5e-10",
            -1.2345e300: "-1.2345e+300",
            float("nan"): "null",
            float("inf"): "null",
            float("-inf"): "null",
        }
        for value, expected in cases.items():
            self.assertEqual(js_stringify(value), expected, repr(value))
        self.assertEqual(js_stringify(2**53), "9007199254740992")
        self.assertEqual(js_stringify(2**53 + 1), "9007199254740992")
        self.assertEqual(js_stringify(-(2**64)), "-18446744073709552000")
        self.assertEqual(js_stringify(10**400), "null")  # Infinity in JavaScript
        self.assertEqual(js_stringify([True, False, None]), "[true,false,null]")

    def test_strings(self) -> None:
        self.assertEqual(
            js_stringify("a\u0000\u007f\u2028\U0001f600"), '"a\\u0000\x7f\u2028\U0001f600"'
        )
        self.assertEqual(js_stringify("\ud800"), '"\\ud800"')  # a lone surrogate, ES2019
        self.assertEqual(js_stringify("/<>&'"), '"/<>&\'"')

    def test_tuples_are_arrays(self) -> None:
        self.assertEqual(js_stringify((1, (2,), [])), "[1,[2],[]]")

    def test_deep_nesting(self) -> None:
        """No recursion: nesting far beyond Python's stack limit is fine."""
        value: Any = []
        for _ in range(50000):
            value = [value]
        self.assertEqual(js_stringify(value), "[" * 50001 + "]" * 50001)

    def test_repeated_but_not_circular(self) -> None:
        shared = {"a": 1}
        self.assertEqual(js_stringify([shared, shared]), '[{"a":1},{"a":1}]')

    def test_circular(self) -> None:
        loop: list[Any] = []
        loop.append(loop)
        self.assertRaises(ValueError, js_stringify, loop)

    def test_unsupported(self) -> None:
        self.assertRaises(TypeError, js_stringify, {"a": b"bytes"})
        self.assertRaises(TypeError, js_stringify, {1.5: "float key"})
        self.assertRaises(TypeError, js_stringify, {1, 2})

    @given(json_values)
    def test_round_trip(self, value: Any) -> None:
        """The output is JSON that reads back as the same value (numbers as JavaScript reads
        them: as doubles; 5.156068107758506e16 is written 51560681077585060, for example)."""
        self.assertEqual(json.loads(js_stringify(value), parse_int=float), value)


# --- keys -----------------------------------------------------------------------------------


class ClientKeyTests(SynchronousTestCase):
    def test_js_key(self) -> None:
        numbers = js_key().public_numbers()
        self.assertEqual(numbers.n, int(str(JS_RSA["rsa_n"]), 16))
        self.assertEqual(numbers.e, 65537)

    def test_lenient_but_exact(self) -> None:
        """Upper-case hex, leading zeros (not counted) and an integral float exponent."""
        n = str(JS_RSA["rsa_n"])
        key = public_key_from_handshake({"rsa_n": "000" + n.upper(), "rsa_e": 65537.0}, 1024)
        self.assertEqual(key.public_numbers().n, int(n, 16))
        self.assertEqual(key.key_size, 1024)

    def test_errors_are_client_key_errors(self) -> None:
        self.assertTrue(issubclass(ClientKeyError, PomeloError))
        self.assertTrue(issubclass(SignatureError, PomeloError))

    def assertRefused(self, rsa_value: Any, fragment: str, max_bits: int = 4096) -> None:
        with self.assertRaises(ClientKeyError) as caught:
            public_key_from_handshake(rsa_value, max_bits)
        self.assertIn(fragment, str(caught.exception))

    def test_missing(self) -> None:
        self.assertRefused(None, "sys.rsa is missing")
        self.assertRefused([], "not an object")
        self.assertRefused("abc", "not an object")

    def test_bad_modulus(self) -> None:
        e = 65537
        self.assertRefused({}, "rsa_n")  # what the JS client sends when it does not sign
        self.assertRefused({"rsa_e": e}, "rsa_n")
        self.assertRefused({"rsa_n": "", "rsa_e": e}, "missing or empty")
        self.assertRefused({"rsa_n": 12345, "rsa_e": e}, "missing or empty")
        for bad in ("xyz", "0x" + str(JS_RSA["rsa_n"]), " ab", "ab ", "a_b", "-ab", "+ab", "é"):
            self.assertRefused({"rsa_n": bad, "rsa_e": e}, "not a hex string")

    def test_modulus_size(self) -> None:
        n = str(JS_RSA["rsa_n"])
        self.assertRefused({"rsa_n": n, "rsa_e": 65537}, "1024 bits, more than the 1023", 1023)
        self.assertRefused({"rsa_n": n + "0" * 4000, "rsa_e": 65537}, "larger than 4096 bits")
        small = format((1 << (MIN_MODULUS_BITS - 2)) | 1, "x")
        self.assertRefused({"rsa_n": small, "rsa_e": 3}, "fewer than the 512 required")
        self.assertRefused({"rsa_n": "0000", "rsa_e": 3}, "0 bits")
        self.assertRefused({"rsa_n": n[:-1] + "6", "rsa_e": 65537}, "even")

    def test_bad_exponent(self) -> None:
        n = str(JS_RSA["rsa_n"])
        for e in (None, "65537", "10001", True, 1.5, [65537]):
            self.assertRefused({"rsa_n": n, "rsa_e": e}, "not an integer")
        for e in (1, 2, 65536, -65537, 0):
            self.assertRefused({"rsa_n": n, "rsa_e": e}, "not an odd number of 3 or more")
        self.assertRefused({"rsa_n": n, "rsa_e": 2**53 + 1}, "too large")
        self.assertRefused({"rsa_n": n, "rsa_e": 2**64 + 1}, "too large")
        # 2**53 + 1.0 is the double 2**53, which is even
        self.assertRefused({"rsa_n": n, "rsa_e": 2**53 + 1.0}, "not an odd")
        # the largest exponent a JavaScript number holds exactly is accepted
        key = public_key_from_handshake({"rsa_n": n, "rsa_e": 2**53 - 1}, 4096)
        self.assertEqual(key.public_numbers().e, 2**53 - 1)

    def test_exponent_three(self) -> None:
        key = private_key()
        n = key.public_key().public_numbers().n
        self.assertEqual(
            public_key_from_handshake({"rsa_n": format(n, "x"), "rsa_e": 3}, 4096)
            .public_numbers()
            .e,
            3,
        )


# --- verification -----------------------------------------------------------------------------


class VerifyMessageTests(SynchronousTestCase):
    def test_js_signatures(self) -> None:
        """Every signature made by the JavaScript RSA library verifies."""
        key = js_key()
        for name, (stringified, signature) in JS_SIGNED.items():
            body = decode_json_body(with_signature(stringified, signature).encode("utf-8"))
            verified = verify_message(key, body)
            self.assertEqual(js_stringify(verified), stringified, name)
            self.assertNotIn(CRYPTO_FIELD, verified)

    def test_js_sent_body(self) -> None:
        """The exact bytes the JS client sends (the signature appended last) verify."""
        self.assertEqual(with_signature(*JS_SIGNED["ascii"]), JS_ASCII_SENT)
        body = decode_json_body(JS_ASCII_SENT.encode())
        self.assertEqual(
            verify_message(js_key(), body),
            {"uid": "alice", "rid": 1, "route": "connector.entryHandler.entry"},
        )

    def test_body_not_modified(self) -> None:
        body = decode_json_body(JS_ASCII_SENT.encode())
        before = dict(body)
        verify_message(js_key(), body)
        self.assertEqual(body, before)

    def test_sha1_only_when_asked(self) -> None:
        body = decode_json_body(with_signature(*JS_SHA1).encode())
        self.assertRaises(SignatureError, verify_message, js_key(), body)
        self.assertEqual(verify_message(js_key(), body, allow_sha1=True), {"legacy": True})

    def test_python_signature(self) -> None:
        key = private_key()
        body = {"b": [1.5, 1e21, None], "2": {"1": "x", "0": "y"}, "a": "\u4e2d\n"}
        sent = json.loads(sign(key, body))
        self.assertEqual(verify_message(key.public_key(), sent), body)

    def test_signature_leading_zeros(self) -> None:
        stringified, signature = JS_SIGNED["ascii"]
        body = decode_json_body(with_signature(stringified, "0000" + signature).encode())
        verify_message(js_key(), body)
        upper = decode_json_body(with_signature(stringified, signature.upper()).encode())
        verify_message(js_key(), upper)

    def assertBad(self, body: Any, fragment: str, key: RSAPublicKey | None = None) -> None:
        with self.assertRaises(SignatureError) as caught:
            verify_message(key or js_key(), body)
        self.assertIn(fragment, str(caught.exception))

    def test_missing(self) -> None:
        self.assertBad({"uid": "alice"}, "no __crypto__")
        self.assertBad({}, "no __crypto__")
        self.assertBad([1, 2], "not a JSON object")
        self.assertBad("text", "not a JSON object")

    def test_malformed(self) -> None:
        stringified, signature = JS_SIGNED["ascii"]
        body = json.loads(stringified)
        for bad in (None, 12345, "", ["ab"]):
            self.assertBad({**body, CRYPTO_FIELD: bad}, "not a non-empty hex string")
        for bad in ("0x" + signature, signature + " ", "zz", signature[:-1] + "g"):
            self.assertBad({**body, CRYPTO_FIELD: bad}, "not a hex string")
        self.assertBad({**body, CRYPTO_FIELD: signature + "00"}, "longer than the key's 128")
        self.assertBad({**body, CRYPTO_FIELD: "f" * 256}, "does not verify")  # >= n
        self.assertBad({**body, CRYPTO_FIELD: "0"}, "does not verify")

    def test_tampered(self) -> None:
        stringified, signature = JS_SIGNED["ascii"]
        body = json.loads(stringified)
        self.assertBad({**body, "rid": 2, CRYPTO_FIELD: signature}, "does not verify")
        self.assertBad({**body, "extra": 0, CRYPTO_FIELD: signature}, "does not verify")
        # the same fields in another order are another string, so another signature
        reordered = {"rid": 1, "uid": "alice", "route": body["route"], CRYPTO_FIELD: signature}
        self.assertBad(reordered, "does not verify")
        flipped = format(int(signature, 16) ^ 1, "x")
        self.assertBad({**body, CRYPTO_FIELD: flipped}, "does not verify")

    def test_other_key(self) -> None:
        body = json.loads(with_signature(*JS_SIGNED["ascii"]))
        self.assertBad(body, "does not verify", private_key().public_key())

    def test_unserialisable(self) -> None:
        key = private_key()
        signature = key.sign(b"{}", padding.PKCS1v15(), hashes.SHA256()).hex()
        self.assertBad(
            {"x": b"raw", CRYPTO_FIELD: signature}, "cannot be serialised", key.public_key()
        )
