"""C{useCrypto} test data: the JS client's RSA key and signatures, and keys made in the tests.

The literal JavaScript signatures below were produced with Node 20 in a scratch directory outside
the repository: a 1024-bit key (e = 65537, the JS client's parameters) signing
C{JSON.stringify(body)} both with jsrsasign 11.1.5's C{RSAKey.sign(s, "sha256")} (the rsasign API
the Pomelo JS client calls as C{rsa.signString}) and with Node's C{crypto.sign("sha256")}; the two
agreed on every body, the non-ASCII one included.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from pomelo_twisted.protocol.crypto import (
    CRYPTO_FIELD,
    js_stringify,
)

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


def with_signature(stringified: str, signature: str) -> str:
    """The body a client sends: C{JSON.stringify(body)} with C{__crypto__} appended last."""
    inner = stringified[1:-1]
    return "{" + inner + ("," if inner else "") + f'"{CRYPTO_FIELD}":"{signature}"' + "}"


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
