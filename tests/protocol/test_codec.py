"""ServerCodec.answer: a request's answer package, encoded the way its route's answers are."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.protocol.codec import AnswerMisfit, ServerCodec
from pomelo_twisted.protocol.dictionary import RouteDictionary
from pomelo_twisted.protocol.errors import EncodeError, ProtobufError
from pomelo_twisted.protocol.message import MessageType, decode_message
from pomelo_twisted.protocol.package import PackageDecoder, PackageType
from pomelo_twisted.protocol.protobuf import Protobuf

ROUTE = "connector.entryHandler.entry"
PROTO_ROUTE = "connector.entryHandler.proto"
SERVER_PROTOS = {PROTO_ROUTE: {"required uInt32 code": 1}}


def codec() -> ServerCodec:
    return ServerCodec(RouteDictionary([ROUTE, PROTO_ROUTE], []), Protobuf({}, SERVER_PROTOS))


def unpack(package: bytes) -> tuple[int, bytes]:
    [decoded] = PackageDecoder().feed(package)
    assert decoded.type is PackageType.DATA
    message = decode_message(decoded.body)
    assert message.type is MessageType.RESPONSE
    return message.id, message.body


class AnswerTests(SynchronousTestCase):
    def test_json_route(self) -> None:
        self.assertEqual(unpack(codec().answer(7, ROUTE, {"code": 429})), (7, b'{"code":429}'))

    def test_unknown_route_code_answers_json(self) -> None:
        self.assertEqual(unpack(codec().answer(300, None, {"code": 500})), (300, b'{"code":500}'))

    def test_proto_route(self) -> None:
        self.assertEqual(
            unpack(codec().answer(1, PROTO_ROUTE, {"code": 200})), (1, b"\x08\xc8\x01")
        )

    def test_not_fitting_the_proto_goes_out_empty(self) -> None:
        """Pomelo's rule: the client's callback still fires; the caller gets the error."""
        with self.assertRaises(AnswerMisfit) as caught:
            codec().answer(2, PROTO_ROUTE, {"code": "not a number"})
        self.assertIsInstance(caught.exception, ProtobufError)
        self.assertEqual(unpack(caught.exception.package), (2, b""))

    def test_not_serialisable(self) -> None:
        self.assertRaises(TypeError, codec().answer, 3, ROUTE, {"code": object()})

    def test_bad_id(self) -> None:
        self.assertRaises(EncodeError, codec().answer, 2**32, ROUTE, {})
