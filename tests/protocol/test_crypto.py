"""Tests for C{useCrypto}: RSA-signed client messages (protocol.md §5.2 step 4, §10.1, §14).

The literal JavaScript outputs and signatures below were produced with Node 20 in a scratch
directory outside the repository: C{JSON.stringify(JSON.parse(text))} for the serialisation
table, and for the signatures a 1024-bit key (e = 65537, the JS client's parameters) signing
C{JSON.stringify(body)} both with jsrsasign 11.1.5's C{RSAKey.sign(s, "sha256")} (the rsasign
API the Pomelo JS client calls as C{rsa.signString}) and with Node's C{crypto.sign("sha256")};
the two agreed on every body, the non-ASCII one included. So a match here shows that
L{js_stringify} re-serialises byte for byte as JavaScript does.
"""

from __future__ import annotations

import json
from typing import Any, cast

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.demo import make_app
from pomelo_twisted.protocol.codec import decode_json_body
from pomelo_twisted.protocol.connection import ConnectionState
from pomelo_twisted.protocol.crypto import (
    CRYPTO_FIELD,
    MIN_MODULUS_BITS,
    SESSION_KEY,
    ClientKeyError,
    SignatureError,
    js_stringify,
    public_key_from_handshake,
    verify_message,
)
from pomelo_twisted.protocol.errors import PomeloError
from pomelo_twisted.protocol.message import MessageType
from pomelo_twisted.protocol.package import PackageType, encode_package
from tests.server.test_connector import (
    ACK,
    ERROR_500,
    ERROR_501,
    Client,
    ConnectorTestCase,
    make_test_app,
    messages,
    notify,
    request,
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

#: The JS test key: sys.rsa as the JS client sends it (rsa.n.toString(16), rsa.e).
JS_RSA = {
    "rsa_n": (
        "c37bc95a159a5967aec6889d55e8f2400c4a16dbfafa8431c39c1b8428482bca"
        "1cdcfa9436009f03fda31e21444df3e5d0e6c10ac18e4efb58a3e42e1e985b4b"
        "056431e69b01f4c296e8fb063e14c4311c3d77d66a19226ea078d14eea6f57ae"
        "91d8fc9774b66c25b6b29505f5ed790a8f327bca929bdfca336fa66a606174a7"
    ),
    "rsa_e": 65537,
}

#: name -> (JSON.stringify(body), the signature as the client sends it, in hex).
JS_SIGNED = {
    "ascii": (
        '{"uid":"alice","rid":1,"route":"connector.entryHandler.entry"}',
        "5b50f223899f50c5eebe469e04bcf5ac2ddbe2901c12380ce647bf642333f0e2"
        "fa39309a202ca4e828cc5aa9fb5faafc814cf7205e6b6424418741514667a66e"
        "1bcd05f7e2aa8aeba5ad68df66e1bac7a8c8d3a0a24798826b8e97036c193249"
        "416398e18498a460f998d8eb9894b923fd248292a8d9c9426d19d7d09b0c3079",
    ),
    "nested": (
        '{"content":{"text":"hi","to":["bob","carol"],"meta":{}},'
        '"flags":{"urgent":true,"ttl":null},"list":[1,[2,[3]],{}]}',
        "62cf2585d3864449c120470371c09f03747456ea730ca3a4fed27582ab5e0c43"
        "78b8d039dcb069572d30169d216157f4387e896ef95486412b110427c6165a77"
        "c6d6ee5fe60fba92cd8496f0fc184bde87bfc91b02c082e515d82b1fbaa77e3d"
        "7d0d7aac0007cf1f6da94e2176a404c2e0a3a0ec5a38e363b86a3694fb1744c6",
    ),
    # JS: {b: 1, 2: "two", a: 3, 1: "one", "01": ..., "-1": ..., 4294967295: ..., 10: "ten"}
    "integer_keys": (
        '{"1":"one","2":"two","10":"ten","b":1,"a":3,"01":"zero-one","-1":"neg",'
        '"4294967295":"not-an-index"}',
        "0104156949efcccdfdd5405fc39f94aa6b44b668965e4b6c660dc5ed2069e136"
        "278f87b63d32a40d48a0ce26d73539e0862f4b2ffcf2512f09fecc70cef23b5d"
        "9b2cb553fc412eba8178205a3ab2184a6bcb6dbedaee6213afe909ff2bdc1849"
        "545a27aa2ac3c0f4bd25a8efdf516ddb87f78db22fd7a5f823fc9d9f44c23da8",
    ),
    # JS: {x: 1.5, big: 1e21, small: 1e-7, whole: 2.0, neg: -0, sci: 1.5e300, third: 1 / 3,
    #      tiny: 5e-324, int53: 9007199254740993}
    "floats": (
        '{"x":1.5,"big":1e+21,"small":1e-7,"whole":2,"neg":0,"sci":1.5e+300,'
        '"third":0.3333333333333333,"tiny":5e-324,"int53":9007199254740992}',
        "5cb2ef088fe46bc72d4cc2eb00a25b69daada425ff672f214aa9c065b8e70520"
        "3327b6d715d8f0b03ddc0da244d6abe37cd35c78c66b29dd28f5977feb7f9ae3"
        "46df60ffe58cd44ea135db34eec3968d48fca54d0929d3c75dd74b5c6cbfcd62"
        "dbc766f18026e83ed579b8fd5f1f1441100dbe4ffa379b328efc1f0624961876",
    ),
    "escapes": (
        '{"s":"quote \\" backslash \\\\ nl \\n cr \\r tab \\t bs \\b ff \\f ctl \\u0001 '
        '\\u001f del \x7f slash / ls \u2028"}',
        "79c8b7905ce23f29a453f0902b60ba34db53b542c580887558317614a65ab455"
        "1235c6f498e768732bfeef9c46fbf373d4970fea9d0cfcb45d11844b41133714"
        "0fa5fb21e4e0f8264475e0d44836f56e9a059099dc3631175cfc8f062bc356b9"
        "aa6121044369e0f0f54d7f58da72e2b18dce3994c2ca69e7ecf6620f97b85b0b",
    ),
    # Signed over the UTF-8 bytes (jsrsasign and Node agree); see protocol.md §22 item 2.
    "non_ascii": (
        '{"msg":"h\xe9llo \u4e2d\u6587 \U0001f600"}',
        "a3209d283647f25f98fadd684fbb611e7fbab2d966dbdd6449d1f3cb3e1fdbe7"
        "0226a1e4bbff49f2b6d6c3a1c5932d3af7d768b0657dbe4376930cc594ed0717"
        "a9d1a9cb88602523eda9af5ce05f6d5ea965a39ef11fb9e12ac5be9a014e4ee3"
        "8860b7b81241a22862da8256408ef39145a79502eed38ee116935f9d9596db69",
    ),
    # The signature starts with a zero nibble; sent without it (255 hex digits), as
    # BigInteger.toString(16) writes it.
    "short_signature": (
        '{"seq":7}',
        "9d71ff3b8b2badb50988c987589890dda047f5d78c74952ece0cad7a03816d44"
        "93ddd2b924279dd42e3d77be8b1c021e72b65b97a15357213e763ba464a6bd61"
        "73f50133bab78fab1a31937264a4f2c9d7cc1cb0c294393b7abaf87aec1e0ee4"
        "28fdea7d7a40b1207c983e27bc01f17b5258dca00ee8c0443dcc898e990a903",
    ),
}

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


def with_signature(stringified: str, signature: str) -> str:
    """The body a client sends: C{JSON.stringify(body)} with C{__crypto__} appended last."""
    inner = stringified[1:-1]
    return "{" + inner + ("," if inner else "") + f'"{CRYPTO_FIELD}":"{signature}"' + "}"


def js_key() -> RSAPublicKey:
    return public_key_from_handshake(dict(JS_RSA), 4096)


# --- keys generated in the tests --------------------------------------------------------------

_KEYS: dict[int, RSAPrivateKey] = {}


def private_key(bits: int = 1024) -> RSAPrivateKey:
    """A test key (generated once per size per run)."""
    key = _KEYS.get(bits)
    if key is None:
        key = _KEYS[bits] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key


def rsa_field(key: RSAPrivateKey) -> dict[str, Any]:
    """C{sys.rsa} for C{key}, as the JS client writes it."""
    numbers = key.public_key().public_numbers()
    return {"rsa_n": format(numbers.n, "x"), "rsa_e": numbers.e}


def sign(key: RSAPrivateKey, body: dict[str, Any], algorithm: Any = None) -> str:
    """Sign as the JS client does; return the body it sends, as JSON text."""
    stringified = js_stringify(body)
    signature = key.sign(
        stringified.encode("utf-8"), padding.PKCS1v15(), algorithm or hashes.SHA256()
    )
    return with_signature(stringified, signature.hex())


def handshake_body(rsa_value: Any = None, omit: bool = False) -> bytes:
    """The JS client's handshake, with C{sys.rsa} set to C{rsa_value} (or left out)."""
    sys: dict[str, Any] = {"type": "js-websocket", "version": "0.0.1"}
    if not omit:
        sys["rsa"] = rsa_value
    sys["protoVersion"] = 0
    return json.dumps({"sys": sys, "user": {}}, separators=(",", ":")).encode()


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
    def test_nodeOutputs(self) -> None:
        """Parsing JSON as the connector does and re-serialising gives Node's bytes."""
        for text, expected in JS_RESTRINGIFIED:
            self.assertEqual(js_stringify(decode_json_body(text.encode("utf-8"))), expected, text)

    def test_signedBodies(self) -> None:
        """Every signed body of the JS vectors re-serialises to what Node signed."""
        for name, (stringified, _) in JS_SIGNED.items():
            self.assertEqual(
                js_stringify(decode_json_body(stringified.encode("utf-8"))), stringified, name
            )

    def test_keyOrder(self) -> None:
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

    def test_tuplesAreArrays(self) -> None:
        self.assertEqual(js_stringify((1, (2,), [])), "[1,[2],[]]")

    def test_deepNesting(self) -> None:
        """No recursion: nesting far beyond Python's stack limit is fine."""
        value: Any = []
        for _ in range(50000):
            value = [value]
        self.assertEqual(js_stringify(value), "[" * 50001 + "]" * 50001)

    def test_repeatedButNotCircular(self) -> None:
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
    def test_roundTrip(self, value: Any) -> None:
        """The output is JSON that reads back as the same value (numbers as JavaScript reads
        them: as doubles; 5.156068107758506e16 is written 51560681077585060, for example)."""
        self.assertEqual(json.loads(js_stringify(value), parse_int=float), value)


# --- keys -----------------------------------------------------------------------------------


class ClientKeyTests(SynchronousTestCase):
    def test_jsKey(self) -> None:
        numbers = js_key().public_numbers()
        self.assertEqual(numbers.n, int(str(JS_RSA["rsa_n"]), 16))
        self.assertEqual(numbers.e, 65537)

    def test_lenientButExact(self) -> None:
        """Upper-case hex, leading zeros (not counted) and an integral float exponent."""
        n = str(JS_RSA["rsa_n"])
        key = public_key_from_handshake({"rsa_n": "000" + n.upper(), "rsa_e": 65537.0}, 1024)
        self.assertEqual(key.public_numbers().n, int(n, 16))
        self.assertEqual(key.key_size, 1024)

    def test_errorsAreClientKeyErrors(self) -> None:
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

    def test_badModulus(self) -> None:
        e = 65537
        self.assertRefused({}, "rsa_n")  # what the JS client sends when it does not sign
        self.assertRefused({"rsa_e": e}, "rsa_n")
        self.assertRefused({"rsa_n": "", "rsa_e": e}, "missing or empty")
        self.assertRefused({"rsa_n": 12345, "rsa_e": e}, "missing or empty")
        for bad in ("xyz", "0x" + str(JS_RSA["rsa_n"]), " ab", "ab ", "a_b", "-ab", "+ab", "é"):
            self.assertRefused({"rsa_n": bad, "rsa_e": e}, "not a hex string")

    def test_modulusSize(self) -> None:
        n = str(JS_RSA["rsa_n"])
        self.assertRefused({"rsa_n": n, "rsa_e": 65537}, "1024 bits, more than the 1023", 1023)
        self.assertRefused({"rsa_n": n + "0" * 4000, "rsa_e": 65537}, "larger than 4096 bits")
        small = format((1 << (MIN_MODULUS_BITS - 2)) | 1, "x")
        self.assertRefused({"rsa_n": small, "rsa_e": 3}, "fewer than the 512 required")
        self.assertRefused({"rsa_n": "0000", "rsa_e": 3}, "0 bits")
        self.assertRefused({"rsa_n": n[:-1] + "6", "rsa_e": 65537}, "even")

    def test_badExponent(self) -> None:
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

    def test_exponentThree(self) -> None:
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
    def test_jsSignatures(self) -> None:
        """Every signature made by the JavaScript RSA library verifies."""
        key = js_key()
        for name, (stringified, signature) in JS_SIGNED.items():
            body = decode_json_body(with_signature(stringified, signature).encode("utf-8"))
            verified = verify_message(key, body)
            self.assertEqual(js_stringify(verified), stringified, name)
            self.assertNotIn(CRYPTO_FIELD, verified)

    def test_jsSentBody(self) -> None:
        """The exact bytes the JS client sends (the signature appended last) verify."""
        self.assertEqual(with_signature(*JS_SIGNED["ascii"]), JS_ASCII_SENT)
        body = decode_json_body(JS_ASCII_SENT.encode())
        self.assertEqual(
            verify_message(js_key(), body),
            {"uid": "alice", "rid": 1, "route": "connector.entryHandler.entry"},
        )

    def test_bodyNotModified(self) -> None:
        body = decode_json_body(JS_ASCII_SENT.encode())
        before = dict(body)
        verify_message(js_key(), body)
        self.assertEqual(body, before)

    def test_sha1OnlyWhenAsked(self) -> None:
        body = decode_json_body(with_signature(*JS_SHA1).encode())
        self.assertRaises(SignatureError, verify_message, js_key(), body)
        self.assertEqual(verify_message(js_key(), body, allow_sha1=True), {"legacy": True})

    def test_pythonSignature(self) -> None:
        key = private_key()
        body = {"b": [1.5, 1e21, None], "2": {"1": "x", "0": "y"}, "a": "\u4e2d\n"}
        sent = json.loads(sign(key, body))
        self.assertEqual(verify_message(key.public_key(), sent), body)

    def test_signatureLeadingZeros(self) -> None:
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

    def test_otherKey(self) -> None:
        body = json.loads(with_signature(*JS_SIGNED["ascii"]))
        self.assertBad(body, "does not verify", private_key().public_key())

    def test_unserialisable(self) -> None:
        key = private_key()
        signature = key.sign(b"{}", padding.PKCS1v15(), hashes.SHA256()).hex()
        self.assertBad(
            {"x": b"raw", CRYPTO_FIELD: signature}, "cannot be serialised", key.public_key()
        )


# --- through the connector -------------------------------------------------------------------


class CryptoConnectorTests(ConnectorTestCase):
    """A connector with C{use_crypto}, fed a client in memory."""

    def setUp(self) -> None:
        self.app = make_test_app()
        self.connector(self.app, heartbeat=0, use_dict=False, use_protobuf=False, use_crypto=True)
        self.key = private_key()

    def signed_client(self, rsa_value: Any = None) -> Client:
        client = self.client()
        client.connect(handshake_body(rsa_value or rsa_field(self.key)))
        return client

    def test_handshakeStoresKey(self) -> None:
        client = self.client()
        answer = client.handshake(handshake_body(rsa_field(self.key)))
        self.assertEqual(answer, encode_package(PackageType.HANDSHAKE, b'{"code":200,"sys":{}}'))
        stored = client.session.get(SESSION_KEY)
        self.assertIsInstance(stored, RSAPublicKey)
        self.assertEqual(stored.public_numbers(), self.key.public_key().public_numbers())

    def test_signedRequestAnswered(self) -> None:
        client = self.signed_client()
        body = {"text": "hello", "n": [1, 2.5]}
        written = client.exchange(
            request(5, "connector.testHandler.echo", sign(self.key, body).encode())
        )
        [reply] = messages(written)
        self.assertEqual((reply.type, reply.id), (MessageType.RESPONSE, 5))
        self.assertEqual(json.loads(reply.body), body)  # the handler saw no __crypto__
        self.assertEqual(self.app.calls, [("echo", body)])  # type: ignore[attr-defined]

    def test_signedNotify(self) -> None:
        client = self.signed_client()
        written = client.exchange(
            notify("connector.testHandler.none", sign(self.key, {"a": 1}).encode())
        )
        self.assertEqual(written, b"")
        self.assertEqual(self.app.calls, [("none", {"a": 1})])  # type: ignore[attr-defined]

    def test_jsSignedRequests(self) -> None:
        """Bodies signed by the JavaScript library are accepted through the whole stack."""
        client = self.signed_client(dict(JS_RSA))
        for mid, (stringified, signature) in enumerate(JS_SIGNED.values(), 1):
            sent = with_signature(stringified, signature).encode("utf-8")
            written = client.exchange(request(mid, "connector.testHandler.echo", sent))
            [reply] = messages(written)
            self.assertEqual(reply.id, mid)
            self.assertEqual(json.loads(reply.body), json.loads(stringified))

    def assertDropped(self, client: Client, package: bytes) -> None:
        calls = list(self.app.calls)  # type: ignore[attr-defined]
        self.assertEqual(client.exchange(package), b"")
        self.assertEqual(self.app.calls, calls)  # type: ignore[attr-defined]
        self.assertIs(client.state, ConnectionState.WORKING)
        self.assertFalse(client.transport.closed)

    def test_badSignatureDropped(self) -> None:
        """§10.1: a request with a bad signature gets no response; the connection stays."""
        client = self.signed_client()
        sent = json.loads(sign(self.key, {"text": "hello"}))
        sent["text"] = "tampered"
        self.assertDropped(
            client, request(1, "connector.testHandler.echo", json.dumps(sent).encode())
        )
        self.assertDropped(client, notify("connector.testHandler.none", json.dumps(sent).encode()))
        # ...and the next good message is answered as usual
        written = client.exchange(
            request(2, "connector.testHandler.echo", sign(self.key, {}).encode())
        )
        self.assertEqual([(m.id, m.body) for m in messages(written)], [(2, b"{}")])

    def test_sha1Dropped(self) -> None:
        """SHA-1 signatures (which Pomelo accepts) are refused: SHA-256 only by default."""
        client = self.signed_client()
        sent = sign(self.key, {"a": 1}, hashes.SHA1()).encode()
        self.assertDropped(client, request(1, "connector.testHandler.echo", sent))

    def test_missingSignatureDropped(self) -> None:
        client = self.signed_client()
        self.assertDropped(client, request(1, "connector.testHandler.echo", b'{"text":"hi"}'))
        self.assertDropped(client, notify("connector.testHandler.none", b'{"text":"hi"}'))
        self.assertDropped(client, request(2, "connector.testHandler.echo", b""))
        self.assertDropped(client, request(3, "connector.testHandler.echo", b"[1]"))
        self.assertDropped(client, request(4, "connector.testHandler.echo", b"not json"))

    def test_dropIsLogged(self) -> None:
        client = self.signed_client()
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        client.exchange(request(9, "connector.testHandler.echo", b"{}"))
        texts = [e.get("log_format", "") for e in events]
        self.assertTrue(any("use_crypto" in t for t in texts), texts)
        [event] = [e for e in events if "use_crypto" in e.get("log_format", "")]
        self.assertEqual(event["kind"], "request 9")
        self.assertIsInstance(event["e"], SignatureError)

    def test_otherClientsKey(self) -> None:
        """Each connection is checked against its own key."""
        first = self.signed_client()
        other = private_key(1536)
        second = self.signed_client(rsa_field(other))
        self.assertDropped(
            second, request(1, "connector.testHandler.echo", sign(self.key, {}).encode())
        )
        self.assertDropped(
            first, request(1, "connector.testHandler.echo", sign(other, {}).encode())
        )
        written = second.exchange(
            request(2, "connector.testHandler.echo", sign(other, {}).encode())
        )
        self.assertEqual(len(messages(written)), 1)

    def test_keyRemovedFromSession(self) -> None:
        """Without its key a session's messages are all dropped (fail closed)."""
        client = self.signed_client()
        client.session.remove(SESSION_KEY)
        self.assertDropped(
            client, request(1, "connector.testHandler.echo", sign(self.key, {}).encode())
        )
        client.session.set(SESSION_KEY, "not a key")
        self.assertDropped(
            client, request(2, "connector.testHandler.echo", sign(self.key, {}).encode())
        )

    def test_unknownRouteCodeStillAnswered(self) -> None:
        """An unknown route code is answered 500 before any body is looked at (as without
        use_crypto); the dictionary is off here, so any compressed route is unknown."""
        client = self.signed_client()
        [reply] = messages(client.exchange(request(3, 1, b"{}")))
        self.assertEqual((reply.id, reply.body), (3, b'{"code":500}'))

    def test_keyFreedOnClose(self) -> None:
        """The key lives in the session, which goes when the connection closes."""
        client = self.signed_client()
        session = client.session
        self.assertIsNotNone(session.get(SESSION_KEY))
        client.sock.disconnect("test")
        self.assertTrue(session.closed)
        self.assertClosedAndClean(client)

    def assertRefused(self, body: bytes) -> None:
        client = self.client()
        self.assertEqual(client.handshake(body), ERROR_500)
        self.assertClosedAndClean(client)

    def test_handshakeWithoutRsa(self) -> None:
        """§5.2 step 4: no usable sys.rsa under use_crypto → code 500, then a close."""
        self.assertRefused(handshake_body(omit=True))
        self.assertRefused(handshake_body({}))  # the JS client without crypto
        self.assertRefused(handshake_body(None))
        self.assertRefused(handshake_body({"rsa_n": "nothex", "rsa_e": 65537}))
        self.assertRefused(handshake_body({"rsa_n": rsa_field(self.key)["rsa_n"], "rsa_e": 4}))
        self.assertRefused(b'{"sys":1}')

    def test_modulusLimit(self) -> None:
        self.connector(
            self.app,
            heartbeat=0,
            use_dict=False,
            use_protobuf=False,
            use_crypto=True,
            rsa_max_modulus_bits=1023,
        )
        self.assertRefused(handshake_body(rsa_field(self.key)))

    def test_checkClientFirst(self) -> None:
        """The client check (501) comes before the key, as in Pomelo's order."""
        self.app.check_client = lambda client_type, version: False
        client = self.client()
        self.assertEqual(client.handshake(handshake_body(omit=True)), ERROR_501)

    def test_notWorkingYet(self) -> None:
        """A signed request before the ACK is dropped like any other (state first)."""
        client = self.client()
        client.handshake(handshake_body(rsa_field(self.key)))
        written = client.exchange(
            request(1, "connector.testHandler.echo", sign(self.key, {}).encode())
        )
        self.assertEqual(written, b"")
        client.exchange(ACK)
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]


class CryptoConnectorWebSocketTests(CryptoConnectorTests):
    ws = True


class CryptoProtobufTests(ConnectorTestCase):
    def test_protobufRouteDropped(self) -> None:
        """Protobuf bodies cannot carry __crypto__, so under use_crypto they are dropped."""
        self.connector(make_app(), use_crypto=True, heartbeat=0)
        client = self.client()
        client.connect(handshake_body(rsa_field(private_key())))
        protobuf = self.conn.protobuf
        assert protobuf is not None
        route = "connector.entryHandler.proto"
        body = protobuf.encode_client(route, {"id": 1, "name": "x"})
        self.assertEqual(client.exchange(request(1, route, body)), b"")
        self.assertIs(client.state, ConnectionState.WORKING)


class CryptoOffTests(ConnectorTestCase):
    def test_cryptoFieldPassedThrough(self) -> None:
        """Without use_crypto, __crypto__ is an ordinary field and sys.rsa is ignored."""
        app = make_test_app()
        self.connector(app, heartbeat=0, use_dict=False, use_protobuf=False)
        client = self.client()
        client.connect(handshake_body({"rsa_n": "nothex"}))
        self.assertIsNone(client.session.get(SESSION_KEY))
        body = b'{"a":1,"__crypto__":"not even hex"}'
        [reply] = messages(client.exchange(request(1, "connector.testHandler.echo", body)))
        self.assertEqual(reply.body, body)
        self.assertEqual(app.calls, [("echo", {"a": 1, "__crypto__": "not even hex"})])  # type: ignore[attr-defined]

    def test_handshakeWithoutRsa(self) -> None:
        self.connector(make_test_app(), use_dict=False, use_protobuf=False)
        self.client().connect(handshake_body(omit=True))
