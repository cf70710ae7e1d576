"""Message bodies and routes for one server (protocol.md §8.2, §9.1), sans-IO.

Chooses per route between pomelo-protobuf and JSON, compresses and expands routes through the
dictionary, and decodes text leniently, as the browser client writes astral characters as CESU-8.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from . import json_codec
from .dictionary import RouteDictionary
from .errors import ProtobufError
from .message import MessageType, decode_message, encode_push, encode_response
from .package import PackageType, encode_package
from .protobuf import Protobuf

__all__ = ["AnswerMisfit", "InboundMessage", "ServerCodec", "decode_json_body"]

_NO_CODES: dict[int, str] = {}


class InboundMessage(Protocol):
    """A client message with its route expanded (a L{Message} whose route is no longer a
    code); the body is still encoded."""

    @property
    def type(self) -> MessageType: ...
    @property
    def id(self) -> int: ...
    @property
    def route(self) -> str | None: ...
    @property
    def body(self) -> bytes: ...


def _lenient_text(data: bytes) -> str:
    """UTF-8 that tolerates CESU-8 surrogate pairs; lone surrogates become U+FFFD."""
    text = data.decode("utf-8", "surrogatepass")
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def decode_json_body(data: bytes) -> Any:
    """Decode a JSON body; empty or unparsable bodies become C{{}}, as upstream does."""
    if not data:
        return {}
    try:
        return json_codec.loads(data)
    except json_codec.JSONDecodeError:
        pass
    try:
        return json_codec.loads(_lenient_text(data))
    except (json_codec.JSONDecodeError, UnicodeDecodeError):
        return {}


class AnswerMisfit(ProtobufError):
    """A response that does not fit its route's proto.

    @ivar package: the answer to send instead (an empty body).
    """

    def __init__(self, message: str, package: bytes) -> None:
        super().__init__(message)
        self.package = package


class ServerCodec:
    """Encodes and decodes DATA messages the way one server's clients expect.

    @ivar dictionary: the route dictionary, or C{None} when C{useDict} is off.
    @ivar protobuf: the protos, or C{None} when C{useProtobuf} is off.
    """

    __slots__ = ("_push_routes", "dictionary", "protobuf")

    def __init__(self, dictionary: RouteDictionary | None, protobuf: Protobuf | None) -> None:
        self.dictionary = dictionary
        self.protobuf = protobuf
        self._push_routes: dict[str, str | int] = {}

    def decode(self, data: bytes) -> InboundMessage:
        """Decode a client's DATA body: framing and route; the body stays bytes.

        The route is expanded through the dictionary (C{None} for an unknown code, or for a
        message type that carries no route). Decoding the body is a separate step,
        L{decode_body}, so that a request whose body is bad can still be answered by id.

        @raise MessageError: malformed framing.
        """
        dictionary = self.dictionary
        # Without a dictionary every code is unknown: expand through an empty mapping.
        codes = dictionary.codeToRoute if dictionary is not None else _NO_CODES
        return cast(InboundMessage, decode_message(data, codes))

    def decode_body(self, route: str, data: bytes) -> Any:
        """Decode an inbound body for C{route}: protobuf if client protos exist, else JSON.

        @raise pomelo_twisted.protocol.errors.ProtobufError: a protobuf body that does not decode.
        """
        protobuf = self.protobuf
        if protobuf is not None and protobuf.has_client(route):
            return protobuf.decode_client(route, data)
        return decode_json_body(data)

    def encode_body(self, route: str, value: Any) -> bytes:
        """Encode an outbound body for C{route}: protobuf if server protos exist, else JSON.

        @raise pomelo_twisted.protocol.errors.ProtobufError: the value does not fit the proto.
        @raise TypeError: the value cannot be serialised as JSON.
        """
        protobuf = self.protobuf
        if protobuf is not None and protobuf.has_server(route):
            return protobuf.encode_server(route, value)
        return json_codec.dumps(value)

    def answer(self, mid: int, route: str | None, value: Any) -> bytes:
        """The DATA package answering request C{mid} with C{value}.

        The body is encoded for C{route} (its server proto, else JSON; JSON for a route the
        dictionary did not know).

        @raise AnswerMisfit: the value does not fit the route's proto; its C{package} is the
            answer to send anyway, with an empty body as Pomelo sends it, so that the client's
            callback still fires.
        @raise TypeError: the value cannot be serialised as JSON.
        @raise pomelo_twisted.protocol.errors.EncodeError: the answer is too large to frame.
        """
        if route is None:
            body = json_codec.dumps(value)
        else:
            try:
                body = self.encode_body(route, value)
            except ProtobufError as e:
                empty = encode_package(PackageType.DATA, encode_response(mid, b""))
                raise AnswerMisfit(str(e), empty) from e
        return encode_package(PackageType.DATA, encode_response(mid, body))

    def push_route(self, route: str) -> str | int:
        """The route as a push carries it: its code when the dictionary has it."""
        cached = self._push_routes.get(route)
        if cached is None:
            code = self.dictionary.route_to_code(route) if self.dictionary else None
            cached = route if code is None else code
            if len(self._push_routes) < 4096:
                self._push_routes[route] = cached
        return cached

    def encode_push(self, route: str, value: Any) -> bytes:
        """A PUSH message for C{route} carrying C{value}."""
        return encode_push(self.push_route(route), self.encode_body(route, value))
