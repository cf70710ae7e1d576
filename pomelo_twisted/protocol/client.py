"""The client's sans-IO core: bytes in, events out, packages to send.

L{PomeloClientConnection} takes bytes (a TCP stream, or whole WebSocket messages) and returns
events (L{HandshakeCompleted}, L{ResponseReceived}, L{PushReceived}, L{KickReceived}, ...);
sends become packages queued for L{PomeloClientConnection.data_to_send}. It chooses route
compression and pomelo-protobuf per route exactly as Pomelo's clients do (protocol.md §8.2,
§9.1), with this layer's own codecs. No clock, no sockets: the Twisted side is
L{pomelo_twisted.client}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any
from typing import Protocol as TypingProtocol

from .._version import __version__
from . import json_codec
from .codec import decode_json_body
from .connection import HEARTBEAT_PACKAGE
from .errors import MessageError, PackageError, PomeloError, ProtobufError, ProtocolError
from .message import MAX_ID, MessageType, decode_message, encode_message
from .package import MAX_BODY, Package, PackageDecoder, PackageType, decode_packages, encode_package
from .protobuf import Protobuf

#: The C{sys.type} this client announces in its handshake.
CLIENT_TYPE = "pomelo-twisted-client"

_ACK_PACKAGE = encode_package(PackageType.HANDSHAKE_ACK)


# --- errors -----------------------------------------------------------------------------------


class ClientError(PomeloError):
    """Base class of the client's own errors."""


class NotConnected(ClientError):
    """A request or notify while the client has no working connection."""


class HandshakeFailed(ClientError):
    """The server answered the handshake with a code other than 200 (500: bad handshake or a
    failed hook; 501: client refused by the server's C{check_client}).

    @ivar code: the answer's C{code}.
    @ivar answer: the whole answer.
    """

    def __init__(self, code: Any, answer: Any) -> None:
        super().__init__(f"handshake refused with code {code!r}")
        self.code = code
        self.answer = answer


class HandshakeTimeout(ClientError):
    """The server did not answer the handshake in time."""


class HeartbeatTimeout(ClientError):
    """Nothing came from the server for C{heartbeat_grace} heartbeat intervals."""


class RequestTimeout(ClientError):
    """No response came within the request timeout.

    @ivar route: the request's route.
    @ivar id: its message id.
    @ivar timeout: the timeout, in seconds.
    """

    def __init__(self, route: str, id: int, timeout: float) -> None:
        super().__init__(f"no response to request {id} ({route}) within {timeout} s")
        self.route = route
        self.id = id
        self.timeout = timeout


class Kicked(ClientError):
    """The server kicked this client (a KICK package).

    @ivar reason: the kick's C{reason} (Pomelo sends a string, C{"kick"} by default).
    """

    def __init__(self, reason: Any) -> None:
        super().__init__(f"kicked by the server: {reason!r}")
        self.reason = reason


class _Reason(TypingProtocol):
    """A Twisted C{Failure}, as far as this layer needs one (it imports no Twisted)."""

    def getErrorMessage(self) -> str: ...


class ConnectionClosed(ClientError):
    """A request's connection closed before its response came.

    @ivar reason: why the connection closed: a L{Failure} of L{Kicked}, L{HeartbeatTimeout},
        Twisted's C{ConnectionDone}/C{ConnectionLost}, ...
    """

    def __init__(self, reason: _Reason) -> None:
        super().__init__(f"connection closed: {reason.getErrorMessage()}")
        self.reason = reason


# --- sans-IO core -----------------------------------------------------------------------------


class ClientState(Enum):
    """The client side of Pomelo's connection states (protocol.md §4, seen from the client)."""

    #: Connected; the handshake is not sent yet.
    INITED = 0
    #: The handshake is sent; waiting for the server's answer.
    HANDSHAKING = 1
    #: The answer was taken and the ACK queued: requests, notifies and heartbeats flow.
    WORKING = 2
    #: Refused, failed or closed: nothing flows any more.
    CLOSED = 3


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """The server accepted the handshake; the ACK is queued.

    @ivar answer: the server's whole answer (C{{"code": 200, "sys": {...}, "user": ...}}).
    @ivar heartbeat: the heartbeat interval in seconds; 0 when the server has none.
    """

    answer: dict[str, Any]
    heartbeat: float


@dataclass(frozen=True, slots=True)
class HandshakeRefused:
    """The server answered the handshake with a code other than 200; the connection is done."""

    code: Any
    answer: Any


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    """A HEARTBEAT package from the server."""


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The response to request C{id} (of C{route}; C{None} for an id this side never sent)."""

    id: int
    route: str | None
    body: Any


@dataclass(frozen=True, slots=True)
class PushReceived:
    """A push on C{route} (always the full route string, codes are expanded)."""

    route: str
    body: Any


@dataclass(frozen=True, slots=True)
class KickReceived:
    """A KICK package: C{reason} is its body's C{reason} (the whole body if not an object)."""

    reason: Any


@dataclass(frozen=True, slots=True)
class ProtocolViolated:
    """The server broke the protocol (bad framing, a malformed message or handshake answer);
    always the last event, and the connection is C{CLOSED}: the transport should abort."""

    error: PomeloError


@dataclass(frozen=True, slots=True)
class MessageUndecodable:
    """A response or push whose protobuf body does not decode with the server protos.

    The framing was fine, so the connection goes on; C{id} is 0 for a push.
    """

    type: MessageType
    id: int
    route: str | None
    error: ProtobufError


ClientEvent = (
    HandshakeCompleted
    | HandshakeRefused
    | HeartbeatReceived
    | ResponseReceived
    | PushReceived
    | KickReceived
    | MessageUndecodable
    | ProtocolViolated
)


class PomeloClientConnection:
    """One client connection's protocol state, sans-IO.

    Typical use by a transport::

        conn = PomeloClientConnection(cache=cache)
        conn.initiate()                      # queue the handshake
        send(conn.data_to_send())
        for event in conn.receive_data(data):   # or receive_message() for WebSocket
            ...
        mid = conn.request("connector.entryHandler.entry", {})
        send(conn.data_to_send())

    Route compression and body codec per route follow Pomelo's clients (protocol.md §9.1):
    requests and notifies compress the route when it is in the dictionary and use
    pomelo-protobuf when C{protos.client} has the route; a response is decoded with
    C{protos.server} of I{its request's} route, a push with C{protos.server} of its own route,
    JSON otherwise.

    @ivar state: the L{ClientState}.
    @ivar cache: the shared cache of dictionaries and protos by version (see the module doc).
    @ivar heartbeat: the interval the server announced, in seconds (0: none), once working.
    @ivar route_to_code: the dictionary in use (empty when the server has none).
    @ivar code_to_route: its inverse.
    @ivar protobuf: the protos in use, or C{None}.
    """

    def __init__(
        self,
        *,
        cache: dict[str, Any] | None = None,
        client_type: str = CLIENT_TYPE,
        version: str = __version__,
        user: Any = None,
        max_package_size: int = MAX_BODY,
    ) -> None:
        self.cache: dict[str, Any] = cache if cache is not None else {}
        self.client_type = client_type
        self.version = version
        self.user = user
        self.state = ClientState.INITED
        self.heartbeat: float = 0
        self.route_to_code: dict[str, int] = {}
        self.code_to_route: dict[int, str] = {}
        self.protobuf: Protobuf | None = None
        self._decoder = PackageDecoder(max_package_size)
        self._max_package_size = max_package_size
        self._outbox: list[bytes] = []
        self._routes: dict[int, str] = {}
        self._last_id = 0

    # Outbound

    def data_to_send(self) -> list[bytes]:
        """Take the packages queued since the last call, one C{bytes} per package, in order.

        A WebSocket transport sends each as its own message (Pomelo 2.2.7 drops a connection
        whose message holds two packages, §3.5); a TCP transport may write them together.
        """
        out, self._outbox = self._outbox, []
        return out

    def handshake_body(self) -> dict[str, Any]:
        """The handshake request: C{sys} with the cached versions, and C{user} when given."""
        sys: dict[str, Any] = {"type": self.client_type, "version": self.version}
        cached_dict = self.cache.get("dict")
        if isinstance(cached_dict, dict) and cached_dict.get("version"):
            sys["dictVersion"] = cached_dict["version"]
        cached_protos = self.cache.get("protos")
        if isinstance(cached_protos, dict) and cached_protos.get("version"):
            sys["protoVersion"] = cached_protos["version"]
        body: dict[str, Any] = {"sys": sys}
        if self.user is not None:
            body["user"] = self.user
        return body

    def initiate(self) -> None:
        """Queue the handshake; C{INITED} -> C{HANDSHAKING}."""
        if self.state is not ClientState.INITED:
            raise ProtocolError(f"handshake already sent (state {self.state.name})")
        body = json_codec.dumps(self.handshake_body())
        self._outbox.append(encode_package(PackageType.HANDSHAKE, body))
        self.state = ClientState.HANDSHAKING

    def request(self, route: str, msg: Any) -> int:
        """Queue a request; return its id (1, 2, 3, ...; ids still awaiting a response are
        skipped after a wrap at 2**31-1, the largest id Pomelo's encoder round-trips).

        @raise NotConnected: not C{WORKING}.
        @raise pomelo_twisted.protocol.errors.EncodeError: a route over 255 UTF-8 bytes, a body over
            16 MiB.
        @raise ProtobufError: C{msg} does not fit C{protos.client[route]}.
        @raise TypeError: C{msg} cannot be serialised as JSON.
        """
        self._check_working()
        body = self._encode_body(route, msg)
        mid = self._next_id()
        self._enqueue_message(MessageType.REQUEST, mid, route, body)
        self._routes[mid] = route
        return mid

    def notify(self, route: str, msg: Any) -> None:
        """Queue a notify (no response). Raises as L{request}."""
        self._check_working()
        self._enqueue_message(MessageType.NOTIFY, 0, route, self._encode_body(route, msg))

    def send_heartbeat(self) -> None:
        """Queue a HEARTBEAT package (nothing unless C{WORKING})."""
        if self.state is ClientState.WORKING:
            self._outbox.append(HEARTBEAT_PACKAGE)

    def forget(self, mid: int) -> None:
        """Stop waiting for request C{mid} (timed out or cancelled); a late response to it
        is then reported with route C{None} and decoded as JSON."""
        self._routes.pop(mid, None)

    @property
    def closed(self) -> bool:
        """Whether the connection is C{CLOSED}."""
        return self.state is ClientState.CLOSED

    @property
    def pending(self) -> int:
        """How many requests await a response."""
        return len(self._routes)

    def close(self) -> None:
        """Enter C{CLOSED}: nothing more is received or queued; pending requests are dropped."""
        self.state = ClientState.CLOSED
        self._routes.clear()
        self._outbox.clear()

    def _check_working(self) -> None:
        if self.state is not ClientState.WORKING:
            raise NotConnected(f"cannot send in state {self.state.name}")

    def _next_id(self) -> int:
        limit = min(MAX_ID, 0x7FFFFFFF)
        mid = self._last_id
        for _ in range(len(self._routes) + 1):
            mid = mid + 1 if mid < limit else 1
            if mid not in self._routes:
                break
        self._last_id = mid
        return mid

    def _encode_body(self, route: str, msg: Any) -> bytes:
        protobuf = self.protobuf
        if protobuf is not None and protobuf.has_client(route):
            if not isinstance(msg, Mapping):
                raise ProtobufError(f"route {route!r} is protobuf: the message must be a mapping")
            return protobuf.encode_client(route, msg)
        return json_codec.dumps(msg)

    def _enqueue_message(self, mtype: MessageType, mid: int, route: str, body: bytes) -> None:
        code = self.route_to_code.get(route)
        data = encode_message(mtype, mid, code if code else route, body)
        self._outbox.append(encode_package(PackageType.DATA, data))

    # Inbound

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        """Feed bytes of a TCP stream (any split); return the events they complete, in order.

        Bad input never raises: it ends the list with a L{ProtocolViolated} (after the events
        of the packages before it) and closes the connection.
        """
        return self._handle(self._decoder.feed, data)

    def receive_message(self, data: bytes) -> list[ClientEvent]:
        """Feed one whole WebSocket message (one or more complete packages); as
        L{receive_data}."""
        return self._handle(lambda d: decode_packages(d, self._max_package_size), data)

    def _handle(self, decode: Callable[[bytes], list[Package]], data: bytes) -> list[ClientEvent]:
        events: list[ClientEvent] = []
        if self.state is ClientState.CLOSED:
            return events
        error: PomeloError | None = None
        try:
            packages = decode(data)
        except PackageError as e:
            packages, error = list(e.packages), e
        try:
            self._take(packages, events)
        except ProtocolError as e:
            error = e
        if error is not None and not self.closed:
            self.close()
            events.append(ProtocolViolated(error))
        return events

    def _take(self, packages: list[Package], events: list[ClientEvent]) -> None:
        for package in packages:
            state = self.state
            ptype = package.type
            if state is ClientState.CLOSED:
                return
            if ptype is PackageType.KICK:
                events.append(KickReceived(_kick_reason(package.body)))
            elif state is ClientState.HANDSHAKING:
                if ptype is PackageType.HANDSHAKE:
                    events.append(self._answer(package.body))
                # anything else before the answer is ignored, as the state tables do
            elif state is ClientState.WORKING:
                if ptype is PackageType.HEARTBEAT:
                    events.append(HeartbeatReceived())
                elif ptype is PackageType.DATA:
                    events.append(self._data(package.body))
                # a second HANDSHAKE, or an ACK echoed back: ignored

    def _answer(self, body: bytes) -> ClientEvent:
        """Take the handshake answer (§5.3): dictionary and protos, from it or the cache."""
        try:
            answer = json_codec.loads(body)
        except json_codec.JSONDecodeError:
            raise ProtocolError(f"handshake answer is not JSON: {body[:80]!r}") from None
        if not isinstance(answer, dict):
            raise ProtocolError(f"handshake answer is not an object: {body[:80]!r}")
        code = answer.get("code")
        if code != 200:
            self.close()
            return HandshakeRefused(code, answer)
        sys = answer.get("sys")
        if not isinstance(sys, dict):
            sys = {}
        self._take_dictionary(sys)
        self._take_protos(sys)
        heartbeat = sys.get("heartbeat")
        if isinstance(heartbeat, bool) or not isinstance(heartbeat, int | float) or heartbeat < 0:
            heartbeat = 0
        self.heartbeat = heartbeat
        self._outbox.append(_ACK_PACKAGE)
        self.state = ClientState.WORKING
        return HandshakeCompleted(answer, self.heartbeat)

    def _take_dictionary(self, sys: dict[str, Any]) -> None:
        # libpomelo2 reads routeToCode/codeToRoute, the JS and C# clients read dict; Pinus sends
        # only dict. Any of them given means "use this one".
        entry: Any
        route_to_code = sys.get("routeToCode") or sys.get("dict")
        if route_to_code:
            if not isinstance(route_to_code, dict):
                raise ProtocolError("malformed route dictionary: not an object")
            code_to_route = sys.get("codeToRoute") or {
                str(code): route for route, code in route_to_code.items()
            }
            entry = {
                "version": sys.get("dictVersion"),
                "routeToCode": route_to_code,
                "codeToRoute": code_to_route,
            }
            if entry["version"]:
                self.cache["dict"] = entry
        elif sys.get("useDict"):
            entry = self.cache.get("dict")
            if not isinstance(entry, dict):
                raise ProtocolError("the server left the dictionary out but none is cached")
        else:
            return
        try:
            self.route_to_code = {str(r): int(c) for r, c in entry["routeToCode"].items()}
            self.code_to_route = {int(c): str(r) for c, r in entry["codeToRoute"].items()}
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"malformed route dictionary: {e!r}") from None

    def _take_protos(self, sys: dict[str, Any]) -> None:
        entry: Any
        protos = sys.get("protos")
        if isinstance(protos, dict):
            entry = {
                "version": protos.get("version"),
                "server": protos.get("server") or {},
                "client": protos.get("client") or {},
            }
            if entry["version"]:
                self.cache["protos"] = entry
        elif sys.get("useProto"):
            entry = self.cache.get("protos")
            if not isinstance(entry, dict):
                raise ProtocolError("the server left the protos out but none are cached")
        else:
            return
        try:
            self.protobuf = Protobuf.from_parsed(
                entry["client"], entry["server"], entry.get("version") or ""
            )
        except (KeyError, ProtobufError) as e:
            raise ProtocolError(f"unusable protos: {e}") from None

    def _data(self, data: bytes) -> ClientEvent:
        msg = decode_message(data)
        mtype = msg.type
        if mtype is MessageType.RESPONSE:
            route = self._routes.pop(msg.id, None)
            return self._decoded(mtype, msg.id, route, msg.body)
        if mtype is MessageType.PUSH:
            raw = msg.route
            route = self.code_to_route.get(raw) if isinstance(raw, int) else raw
            if route is None:
                raise MessageError(f"push with unknown route code {raw}")
            return self._decoded(mtype, 0, route, msg.body)
        raise MessageError(f"the server sent a {mtype.name} message")

    def _decoded(self, mtype: MessageType, mid: int, route: str | None, body: bytes) -> ClientEvent:
        protobuf = self.protobuf
        value: Any
        if route is not None and protobuf is not None and protobuf.has_server(route):
            try:
                value = protobuf.decode_server(route, body)
            except ProtobufError as e:
                return MessageUndecodable(mtype, mid, route, e)
        else:
            value = decode_json_body(body)
        if mtype is MessageType.RESPONSE:
            return ResponseReceived(mid, route, value)
        assert route is not None
        return PushReceived(route, value)


def _kick_reason(body: bytes) -> Any:
    value = decode_json_body(body)
    return value.get("reason") if isinstance(value, dict) else value


__all__ = [
    "CLIENT_TYPE",
    "ClientError",
    "ClientEvent",
    "ClientState",
    "ConnectionClosed",
    "HandshakeCompleted",
    "HandshakeFailed",
    "HandshakeRefused",
    "HandshakeTimeout",
    "HeartbeatReceived",
    "HeartbeatTimeout",
    "KickReceived",
    "Kicked",
    "MessageUndecodable",
    "NotConnected",
    "PomeloClientConnection",
    "ProtocolViolated",
    "PushReceived",
    "RequestTimeout",
    "ResponseReceived",
]
