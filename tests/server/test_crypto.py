"""C{useCrypto} through the connector: signed requests and notifies are verified, bad or missing
signatures are refused with the codes Pomelo answers (protocol.md §5.2 step 4, §10.1, §14)."""

from __future__ import annotations

import json
from typing import Any, cast

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from twisted.logger import ILogObserver, globalLogPublisher

from pomelo_twisted.demo import make_app
from pomelo_twisted.protocol.connection import ConnectionState
from pomelo_twisted.protocol.crypto import (
    SESSION_KEY,
    SignatureError,
)
from pomelo_twisted.protocol.message import MessageType
from pomelo_twisted.protocol.package import PackageType, encode_package
from tests.support.connector import (
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
from tests.support.crypto import (
    JS_RSA,
    JS_SIGNED,
    handshake_body,
    private_key,
    rsa_field,
    sign,
    with_signature,
)


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

    def test_handshake_stores_key(self) -> None:
        client = self.client()
        answer = client.handshake(handshake_body(rsa_field(self.key)))
        self.assertEqual(answer, encode_package(PackageType.HANDSHAKE, b'{"code":200,"sys":{}}'))
        stored = client.session.get(SESSION_KEY)
        self.assertIsInstance(stored, RSAPublicKey)
        self.assertEqual(stored.public_numbers(), self.key.public_key().public_numbers())

    def test_signed_request_answered(self) -> None:
        client = self.signed_client()
        body = {"text": "hello", "n": [1, 2.5]}
        written = client.exchange(
            request(5, "connector.testHandler.echo", sign(self.key, body).encode())
        )
        [reply] = messages(written)
        self.assertEqual((reply.type, reply.id), (MessageType.RESPONSE, 5))
        self.assertEqual(json.loads(reply.body), body)  # the handler saw no __crypto__
        self.assertEqual(self.app.calls, [("echo", body)])  # type: ignore[attr-defined]

    def test_signed_notify(self) -> None:
        client = self.signed_client()
        written = client.exchange(
            notify("connector.testHandler.none", sign(self.key, {"a": 1}).encode())
        )
        self.assertEqual(written, b"")
        self.assertEqual(self.app.calls, [("none", {"a": 1})])  # type: ignore[attr-defined]

    def test_js_signed_requests(self) -> None:
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

    def test_bad_signature_dropped(self) -> None:
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

    def test_sha1_dropped(self) -> None:
        """SHA-1 signatures (which Pomelo accepts) are refused: SHA-256 only by default."""
        client = self.signed_client()
        sent = sign(self.key, {"a": 1}, hashes.SHA1()).encode()
        self.assertDropped(client, request(1, "connector.testHandler.echo", sent))

    def test_missing_signature_dropped(self) -> None:
        client = self.signed_client()
        self.assertDropped(client, request(1, "connector.testHandler.echo", b'{"text":"hi"}'))
        self.assertDropped(client, notify("connector.testHandler.none", b'{"text":"hi"}'))
        self.assertDropped(client, request(2, "connector.testHandler.echo", b""))
        self.assertDropped(client, request(3, "connector.testHandler.echo", b"[1]"))
        self.assertDropped(client, request(4, "connector.testHandler.echo", b"not json"))

    def test_drop_is_logged(self) -> None:
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

    def test_other_clients_key(self) -> None:
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

    def test_key_removed_from_session(self) -> None:
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

    def test_unknown_route_code_still_answered(self) -> None:
        """An unknown route code is answered 500 before any body is looked at (as without
        use_crypto); the dictionary is off here, so any compressed route is unknown."""
        client = self.signed_client()
        [reply] = messages(client.exchange(request(3, 1, b"{}")))
        self.assertEqual((reply.id, reply.body), (3, b'{"code":500}'))

    def test_key_freed_on_close(self) -> None:
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

    def test_handshake_without_rsa(self) -> None:
        """§5.2 step 4: no usable sys.rsa under use_crypto → code 500, then a close."""
        self.assertRefused(handshake_body(omit=True))
        self.assertRefused(handshake_body({}))  # the JS client without crypto
        self.assertRefused(handshake_body(None))
        self.assertRefused(handshake_body({"rsa_n": "nothex", "rsa_e": 65537}))
        self.assertRefused(handshake_body({"rsa_n": rsa_field(self.key)["rsa_n"], "rsa_e": 4}))
        self.assertRefused(b'{"sys":1}')

    def test_modulus_limit(self) -> None:
        self.connector(
            self.app,
            heartbeat=0,
            use_dict=False,
            use_protobuf=False,
            use_crypto=True,
            rsa_max_modulus_bits=1023,
        )
        self.assertRefused(handshake_body(rsa_field(self.key)))

    def test_check_client_first(self) -> None:
        """The client check (501) comes before the key, as in Pomelo's order."""
        self.app.check_client = lambda client_type, version: False
        client = self.client()
        self.assertEqual(client.handshake(handshake_body(omit=True)), ERROR_501)

    def test_not_working_yet(self) -> None:
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
    def test_protobuf_route_dropped(self) -> None:
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
    def test_crypto_field_passed_through(self) -> None:
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

    def test_handshake_without_rsa(self) -> None:
        self.connector(make_test_app(), use_dict=False, use_protobuf=False)
        self.client().connect(handshake_body(omit=True))
