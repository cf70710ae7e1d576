# -*- test-case-name: tests.test_client -*-
"""A Pomelo client for Twisted, over raw TCP or WebSocket.

For bots, load scripts, server-to-server tools and this project's own end-to-end tests. It speaks
to any Pomelo hybrid connector (Pomelo 2.x, Pinus, or this package's server)::

    client = PomeloClient(reactor)
    answer = yield client.connect("tcp:host=127.0.0.1:port=3010")   # or "ws://127.0.0.1:3010"
    client.on("onChat", lambda msg: print(msg))
    reply = yield client.request("connector.entryHandler.entry", {"username": "bot"})
    client.notify("chat.chatHandler.send", {"content": "hi"})
    yield client.close()

It is built in two layers, like the server:

  1. L{PomeloClientConnection}, sans-IO: it takes bytes (a TCP stream, or whole WebSocket
     messages) and returns events (L{HandshakeCompleted}, L{ResponseReceived}, L{PushReceived},
     L{KickReceived}, ...); sends become packages queued for L{PomeloClientConnection.data_to_send}.
     It chooses route compression and pomelo-protobuf per route exactly as Pomelo's clients do
     (protocol.md §8.2, §9.1), with the package's own codecs: L{package}, L{message},
     L{protobuf}, L{codec.decode_json_body}. No clock, no sockets.
  2. L{PomeloClient}, the Twisted side: endpoints, the TCP protocol (here) and the Autobahn
     WebSocket protocol (L{pomelo_twisted.client_ws}), heartbeat and deadline timers on an
     injected reactor, one Deferred per request, push callbacks, and optional reconnection
     with back-off.

The route dictionary and the protos are kept in L{PomeloClient.cache}, a plain JSON-able dict
keyed by their versions: the next handshake (a reconnect, or another client sharing the cache)
sends the cached versions, and the server then leaves the dictionary and protos out of its answer
(§5.4). Persist it with C{json.dump} to keep it across runs, one cache per server cluster.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal
from typing import Protocol as TypingProtocol
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import json_codec
from ._version import __version__
from .codec import decode_json_body
from .connection import HEARTBEAT_PACKAGE
from .errors import MessageError, PackageError, PomeloError, ProtobufError, ProtocolError
from .message import MAX_ID, MessageType, decode_message, encode_message
from .package import MAX_BODY, Package, PackageDecoder, PackageType, decode_packages, encode_package
from .protobuf import Protobuf

__all__ = [
    "CLIENT_TYPE",
    "DEFAULT",
    "Backoff",
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
    "PomeloClient",
    "PomeloClientConnection",
    "PomeloClientProtocol",
    "ProtocolViolated",
    "PushReceived",
    "RequestTimeout",
    "ResponseReceived",
]

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


class ConnectionClosed(ClientError):
    """A request's connection closed before its response came.

    @ivar reason: why the connection closed: a L{Failure} of L{Kicked}, L{HeartbeatTimeout},
        Twisted's C{ConnectionDone}/C{ConnectionLost}, ...
    """

    def __init__(self, reason: Failure) -> None:
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
        @raise pomelo_twisted.errors.EncodeError: a route over 255 UTF-8 bytes, a body over
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


# --- reconnection policy -----------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """When to reconnect after a connection is lost or an attempt fails.

    The delay before attempt I{n} (1, 2, ...) is C{min(maximum, initial * factor ** (n-1))},
    then stretched by a random fraction up to C{jitter} so that many clients dropped together
    do not all come back in the same instant. The defaults are libpomelo2's: 2 s, doubling, at
    most 30 s, forever.

    @ivar max_attempts: give up after this many failed attempts in a row; C{None}: never.
    @ivar after_kick: reconnect after a kick too (a server that restarts kicks everyone with
        a reason such as C{"server shutting down"}); off by default, as in libpomelo2.
    @ivar random: the source of jitter, a function returning a float in [0, 1).
    """

    initial: float = 2.0
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.1
    max_attempts: int | None = None
    after_kick: bool = False
    random: Callable[[], float] = field(default=_random.random, repr=False, compare=False)

    def delay(self, attempt: int) -> float:
        """The delay before attempt C{attempt} (1-based)."""
        try:
            base = min(self.maximum, self.initial * float(self.factor) ** max(0, attempt - 1))
        except OverflowError:  # after ~1000 attempts: long past the maximum
            base = self.maximum
        return base * (1 + self.jitter * self.random()) if self.jitter else base


# --- the Twisted side --------------------------------------------------------------------------


class _Transport(TypingProtocol):
    """What a link needs from its transport protocol (TCP or WebSocket)."""

    def writePackages(self, packages: list[bytes]) -> None: ...

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...


class _Link:
    """One transport connection of a L{PomeloClient}: a sans-IO core, its timers and its
    pending requests. A reconnect makes a new link; a late event of an old one finds it
    detached and does nothing.

    @ivar handshaken: the handshake completed on this link.
    @ivar final: the client must not reconnect after this link (kicked, refused, closed).
    @ivar reason: why this side closed the link, when it did.
    """

    def __init__(self, client: PomeloClient, transport: _Transport) -> None:
        self.client = client
        self.transport = transport
        self.core = PomeloClientConnection(
            cache=client.cache,
            client_type=client.client_type,
            version=client.version,
            user=client.user,
            max_package_size=client.max_package_size,
        )
        self.pending: dict[int, tuple[Deferred[Any], IDelayedCall | None]] = {}
        self.opened = False
        self.handshaken = False
        self.final = False
        self.reason: Failure | None = None
        self.lost = False
        self._timer: IDelayedCall | None = None  # handshake deadline, then liveness deadline
        self._beat: IDelayedCall | None = None

    # Driven by the transport protocol

    def open(self) -> None:
        """The transport is ready (TCP connected, WebSocket open): send the handshake."""
        self.opened = True
        self.core.initiate()
        self.flush()
        timeout = self.client.handshake_timeout
        if timeout:
            self._timer = self.client.reactor.callLater(timeout, self._handshake_timed_out)

    def dataReceived(self, data: bytes) -> None:
        self._receive(self.core.receive_data, data)

    def messageReceived(self, data: bytes) -> None:
        self._receive(self.core.receive_message, data)

    def protocolError(self, error: Exception) -> None:
        self.client.log.warn("protocol error from the server: {error}", error=error)
        self._abort(Failure(error))

    def connectionLost(self, reason: Failure) -> None:
        if self.lost:
            return
        self.lost = True
        self.core.close()
        self._cancel_timers()
        why = self.reason or reason
        pending, self.pending = self.pending, {}
        for d, call in pending.values():
            if call is not None and call.active():
                call.cancel()
            d.errback(Failure(ConnectionClosed(why)))
        self.client._linkLost(self, why)

    # Driven by the client

    def request(self, route: str, msg: Any, timeout: float | None) -> Deferred[Any]:
        try:
            mid = self.core.request(route, msg)
        except Exception:
            return fail()

        def cancel(d: Deferred[Any]) -> None:
            entry = self.pending.pop(mid, None)
            if entry is not None and entry[1] is not None and entry[1].active():
                entry[1].cancel()
            self.core.forget(mid)

        d: Deferred[Any] = Deferred(cancel)
        call = None
        if timeout:
            call = self.client.reactor.callLater(
                timeout, self._request_timed_out, mid, route, timeout
            )
        self.pending[mid] = (d, call)
        self.flush()
        return d

    def notify(self, route: str, msg: Any) -> None:
        self.core.notify(route, msg)
        self.flush()

    def close(self) -> None:
        """Close gracefully (the user's close): a WebSocket close handshake, or a TCP FIN."""
        self.final = True
        if self.reason is None:
            self.reason = Failure(ConnectionDone("closed by the client"))
        if self.opened:
            self.transport.loseConnection()
        else:
            self.transport.abortConnection()

    def flush(self) -> None:
        packages = self.core.data_to_send()
        if packages and not self.lost:
            self.transport.writePackages(packages)

    # Inside

    def _receive(self, decode: Callable[[bytes], list[ClientEvent]], data: bytes) -> None:
        if self.lost:
            return
        events = decode(data)
        if events and self.handshaken:
            self._alive()
        for event in events:
            if self.lost or self.final:
                break
            if isinstance(event, ResponseReceived):
                self._response(event.id, event.body, None)
            elif isinstance(event, PushReceived):
                self.client._push(event.route, event.body)
            elif isinstance(event, HeartbeatReceived):
                pass  # liveness only, counted above
            elif isinstance(event, HandshakeCompleted):
                self._handshake_completed(event)
            elif isinstance(event, KickReceived):
                self._kicked(event.reason)
                break  # nothing after a kick counts
            elif isinstance(event, HandshakeRefused):
                self.final = True
                self._close_gracefully(Failure(HandshakeFailed(event.code, event.answer)))
            elif isinstance(event, MessageUndecodable):
                self.client.log.warn(
                    "undecodable {type} on {route}: {error}",
                    type=event.type.name,
                    route=event.route,
                    error=event.error,
                )
                if event.type is MessageType.RESPONSE:
                    self._response(event.id, None, event.error)
            elif isinstance(event, ProtocolViolated):
                self.protocolError(event.error)
        self.flush()

    def _response(self, mid: int, body: Any, error: Exception | None) -> None:
        entry = self.pending.pop(mid, None)
        if entry is None:
            self.client.log.info("dropping a response to unknown request {id}", id=mid)
            return
        d, call = entry
        if call is not None and call.active():
            call.cancel()
        if error is None:
            d.callback(body)
        else:
            d.errback(Failure(error))

    def _handshake_completed(self, event: HandshakeCompleted) -> None:
        self.handshaken = True
        self._cancel_timers()
        self.flush()  # the ACK leaves before anything the callbacks send
        interval = event.heartbeat
        if interval:
            reactor = self.client.reactor
            self._beat = reactor.callLater(interval, self._send_heartbeat)
            self._timer = reactor.callLater(interval * self.client.heartbeat_grace, self._dead)
        self.client._handshaken(self, event.answer)

    def _kicked(self, reason: Any) -> None:
        policy = self.client.reconnect
        self.final = policy is None or not policy.after_kick
        self.reason = Failure(Kicked(reason))
        self.core.close()
        self._cancel_timers()
        self.client._kicked(reason)
        if not self.lost:
            # The server closes after a kick; closing from here too makes it certain.
            self.transport.loseConnection()

    def _alive(self) -> None:
        timer = self._timer
        if timer is not None and timer.active():
            timer.reset(self.core.heartbeat * self.client.heartbeat_grace)

    def _send_heartbeat(self) -> None:
        self._beat = None
        if self.lost or self.core.state is not ClientState.WORKING:
            return
        self.core.send_heartbeat()
        self.flush()
        self._beat = self.client.reactor.callLater(self.core.heartbeat, self._send_heartbeat)

    def _dead(self) -> None:
        self._timer = None
        interval = self.core.heartbeat * self.client.heartbeat_grace
        self.client.log.info("no package from the server for {s} s: closing", s=interval)
        self._abort(Failure(HeartbeatTimeout(f"nothing from the server for {interval} s")))

    def _handshake_timed_out(self) -> None:
        self._timer = None
        timeout = self.client.handshake_timeout
        self._abort(Failure(HandshakeTimeout(f"no handshake answer within {timeout} s")))

    def _request_timed_out(self, mid: int, route: str, timeout: float) -> None:
        entry = self.pending.pop(mid, None)
        self.core.forget(mid)
        if entry is not None:
            entry[0].errback(Failure(RequestTimeout(route, mid, timeout)))

    def _abort(self, reason: Failure) -> None:
        if self.reason is None:
            self.reason = reason
        self.core.close()
        self._cancel_timers()
        if not self.lost:
            self.transport.abortConnection()

    def _close_gracefully(self, reason: Failure) -> None:
        """Close gracefully (a refused handshake: the server closes too)."""
        if self.reason is None:
            self.reason = reason
        self._cancel_timers()
        if not self.lost:
            self.transport.loseConnection()

    def _cancel_timers(self) -> None:
        for call in (self._timer, self._beat):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._beat = None


class PomeloClientProtocol(Protocol):
    """The raw TCP transport of a L{PomeloClient}: the package stream straight on the socket."""

    def __init__(self, client: PomeloClient) -> None:
        self._client = client
        self._link: _Link | None = None

    def connectionMade(self) -> None:
        setTcpNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setTcpNoDelay is not None:
            with suppress(OSError, NotImplementedError):
                setTcpNoDelay(True)
        self._link = self._client._linkMade(self)
        if self._link is not None:
            self._link.open()

    def dataReceived(self, data: bytes) -> None:
        link = self._link
        if link is not None:
            link.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.connectionLost(reason)

    def writePackages(self, packages: list[bytes]) -> None:
        self.transport.writeSequence(packages)  # type: ignore[union-attr]

    def loseConnection(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def abortConnection(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]


class _TCPFactory(Factory[PomeloClientProtocol]):
    def __init__(self, client: PomeloClient) -> None:
        self.client = client

    def buildProtocol(self, addr: Any) -> PomeloClientProtocol:
        return PomeloClientProtocol(self.client)


class _Default(Enum):
    DEFAULT = 0


#: "Use the client's setting", for L{PomeloClient.request}'s C{timeout}.
DEFAULT = _Default.DEFAULT

PushCallback = Callable[[Any], object]
Remove = Callable[[], None]


class PomeloClient:
    """A Pomelo client: one connection at a time, to one server.

    Lifecycle events (each C{on_*} method returns a function that removes the listener):

      - C{connect(answer)}: every completed handshake, the first and each reconnection;
      - C{kick(reason)}: the server kicked this client; it then closes, and reconnects only
        with C{Backoff(after_kick=True)};
      - C{disconnect(reason)}: a connection that had completed its handshake is lost
        (C{reason} is a L{Failure}: L{Kicked}, L{HeartbeatTimeout}, C{ConnectionDone}, ...);
      - C{reconnect(attempt, delay)}: with C{reconnect=Backoff(...)}, a new attempt is
        scheduled C{delay} seconds from now;
      - C{close(reason)}: the client is idle for good: closed by L{close}, kicked, refused,
        or lost without (or beyond) reconnection. Once per L{connect}, after which
        L{connect} may be called again.

    Callbacks run inside the reactor; an exception in one is logged, never raised into the
    connection.

    @ivar reactor: the reactor of timers and connections.
    @ivar cache: dictionaries and protos by version, a plain JSON-able dict (module doc).
    @ivar answer: the last handshake answer, or C{None}.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any = None,
        *,
        user: Any = None,
        cache: dict[str, Any] | None = None,
        client_type: str = CLIENT_TYPE,
        version: str = __version__,
        heartbeat_grace: float = 2.0,
        request_timeout: float | None = 30.0,
        handshake_timeout: float | None = 30.0,
        reconnect: Backoff | None = None,
        max_package_size: int = MAX_BODY,
    ) -> None:
        """
        @param reactor: provides C{IReactorTime} and, for string endpoints and URLs,
            C{IReactorTCP}; C{twisted.internet.reactor} when not given.
        @param user: the handshake's C{user} field (for the server's handshake hook).
        @param cache: a cache to share between clients or restore from disk; a new one when
            not given. It is used in place, never copied.
        @param client_type: the handshake's C{sys.type}.
        @param version: the handshake's C{sys.version}.
        @param heartbeat_grace: the connection is dead after this many heartbeat intervals
            with no package from the server (libpomelo2 and the JS client use 2).
        @param request_timeout: seconds before a request fails with L{RequestTimeout};
            C{None} waits forever.
        @param handshake_timeout: seconds for the server to answer the handshake.
        @param reconnect: reconnect with this back-off after a lost connection or a failed
            attempt; C{None} (the default) never reconnects.
        @param max_package_size: the largest package body accepted from the server.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor: IReactorTime = reactor
        self.user = user
        self.cache: dict[str, Any] = cache if cache is not None else {}
        self.client_type = client_type
        self.version = version
        self.heartbeat_grace = heartbeat_grace
        self.request_timeout = request_timeout
        self.handshake_timeout = handshake_timeout
        self.reconnect = reconnect
        self.max_package_size = max_package_size
        self.answer: dict[str, Any] | None = None

        self._routes: dict[str, list[PushCallback]] = {}
        self._listeners: dict[str, list[Callable[..., object]]] = {
            "connect": [],
            "kick": [],
            "disconnect": [],
            "reconnect": [],
            "close": [],
        }
        self._target: tuple[IStreamClientEndpoint, str, str] | None = None
        self._link: _Link | None = None
        self._connecting: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        self._attempts = 0
        self._ready: Deferred[dict[str, Any]] | None = None
        self._active = False
        self._closing = False
        self._close_waiters: list[Deferred[None]] = []

    # Connecting and closing

    def connect(
        self,
        endpoint: IStreamClientEndpoint | str,
        *,
        transport: Literal["tcp", "ws"] | None = None,
        url: str | None = None,
    ) -> Deferred[dict[str, Any]]:
        """Connect, shake hands, and fire with the server's handshake answer once the ACK is
        sent (requests may be made from then on).

        @param endpoint: where to connect: an C{IStreamClientEndpoint}; a client endpoint
            string (C{"tcp:host=127.0.0.1:port=3010"}, C{"tls:..."}, ...); or a WebSocket
            URL, C{"ws://host:port/path"} or C{"wss://..."}, which implies C{transport="ws"}.
        @param transport: C{"tcp"} (the default for endpoints) or C{"ws"}.
        @param url: for C{"ws"} over an endpoint, the URL of the opening handshake (its host
            goes in the C{Host} header, its path in the request line); C{"ws://localhost/"}
            by default.
        @return: fires with the answer (C{{"code": 200, "sys": {...}, ...}}); fails with
            L{HandshakeFailed}, L{HandshakeTimeout}, the connection error, or, with
            C{reconnect}, only once the back-off gives up. Cancelling it closes the client.
        @raise RuntimeError: the client is already connected or connecting.
        """
        if self._active:
            raise RuntimeError("this client is already connected or connecting; close() it first")
        ep, kind, ws_url = self._resolve(endpoint, transport, url)
        self._target = (ep, kind, ws_url)
        self._active = True
        self._closing = False
        self._attempts = 0
        self._ready = Deferred(lambda d: self._cancel_connect())
        ready = self._ready
        self._attempt()
        return ready

    def close(self) -> Deferred[None]:
        """Close the connection (pending requests fail with L{ConnectionClosed}) and stop
        reconnecting; fires once the connection is gone and C{close} was emitted."""
        if not self._active:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._close_waiters.append(d)
        if self._closing:
            return d
        self._closing = True
        reason = Failure(ConnectionDone("closed by the client"))
        if self._link is not None:
            self._link.close()
        elif self._connecting is not None:
            self._connecting.cancel()  # -> _attemptFailed -> _finish
        else:
            retry, self._retry = self._retry, None
            if retry is not None and retry.active():
                retry.cancel()
            self._finish(reason)
        return d

    @property
    def connected(self) -> bool:
        """Whether the handshake is done and requests can be sent."""
        link = self._link
        return (
            link is not None
            and link.handshaken
            and not link.final
            and link.core.state is ClientState.WORKING
        )

    @property
    def heartbeat(self) -> float:
        """The server's heartbeat interval in seconds (0: none or not connected)."""
        return self._link.core.heartbeat if self._link is not None else 0

    # Requests, notifies, pushes

    def request(
        self, route: str, msg: Any = None, *, timeout: float | _Default | None = DEFAULT
    ) -> Deferred[Any]:
        """Send a request; fire with the response body (decoded with the server protos of
        C{route}, or JSON). An application error is a body too, e.g. C{{"code": 500}}.

        @param msg: the body: JSON-able, or a mapping for a protobuf route; C{None} is C{{}}.
        @param timeout: seconds; the client's C{request_timeout} by default, C{None}: none.
        @return: fails with L{NotConnected}, L{RequestTimeout}, L{ConnectionClosed}, or an
            encoding error (C{ProtobufError}, C{EncodeError}, C{TypeError}). Cancelling it
            stops waiting for the response.
        """
        link = self._link
        if link is None or not link.handshaken or link.final:
            return fail(NotConnected(f"request {route!r}: not connected"))
        seconds = self.request_timeout if isinstance(timeout, _Default) else timeout
        return link.request(route, {} if msg is None else msg, seconds)

    def notify(self, route: str, msg: Any = None) -> None:
        """Send a notify (no response).

        @raise NotConnected: no working connection.
        @raise pomelo_twisted.errors.PomeloError: the body cannot be encoded.
        """
        link = self._link
        if link is None or not link.handshaken or link.final:
            raise NotConnected(f"notify {route!r}: not connected")
        link.notify(route, {} if msg is None else msg)

    def on(self, route: str, callback: PushCallback) -> Remove:
        """Call C{callback(body)} for each push on C{route}; return a function removing it."""
        self._routes.setdefault(route, []).append(callback)
        return lambda: self.off(route, callback)

    def off(self, route: str, callback: PushCallback | None = None) -> None:
        """Remove C{callback} from C{route}'s pushes, or every callback of C{route}."""
        callbacks = self._routes.get(route)
        if callbacks is None:
            return
        if callback is None:
            callbacks.clear()
        else:
            with suppress(ValueError):
                callbacks.remove(callback)
        if not callbacks:
            del self._routes[route]

    def next_push(self, route: str) -> Deferred[Any]:
        """A Deferred firing with the body of the next push on C{route}."""
        remove: Remove | None = None

        def cancel(d: Deferred[Any]) -> None:
            if remove is not None:
                remove()

        d: Deferred[Any] = Deferred(cancel)

        def got(body: Any) -> None:
            assert remove is not None
            remove()
            d.callback(body)

        remove = self.on(route, got)
        return d

    # Lifecycle events

    def on_connect(self, callback: Callable[[dict[str, Any]], object]) -> Remove:
        """C{callback(answer)} after every completed handshake."""
        return self._listen("connect", callback)

    def on_kick(self, callback: Callable[[Any], object]) -> Remove:
        """C{callback(reason)} when the server kicks this client."""
        return self._listen("kick", callback)

    def on_disconnect(self, callback: Callable[[Failure], object]) -> Remove:
        """C{callback(reason)} when a handshaken connection is lost."""
        return self._listen("disconnect", callback)

    def on_reconnect(self, callback: Callable[[int, float], object]) -> Remove:
        """C{callback(attempt, delay)} when a reconnection attempt is scheduled."""
        return self._listen("reconnect", callback)

    def on_close(self, callback: Callable[[Failure], object]) -> Remove:
        """C{callback(reason)} when the client becomes idle for good."""
        return self._listen("close", callback)

    def _listen(self, event: str, callback: Callable[..., object]) -> Remove:
        listeners = self._listeners[event]
        listeners.append(callback)

        def remove() -> None:
            with suppress(ValueError):
                listeners.remove(callback)

        return remove

    def _emit(self, event: str, *args: Any) -> None:
        for callback in list(self._listeners[event]):
            try:
                callback(*args)
            except Exception:
                self.log.failure(
                    "{event} listener {callback!r} failed", event=event, callback=callback
                )

    # Internals: attempts

    def _resolve(
        self, endpoint: IStreamClientEndpoint | str, transport: str | None, url: str | None
    ) -> tuple[IStreamClientEndpoint, str, str]:
        if isinstance(endpoint, str):
            if endpoint.startswith(("ws://", "wss://")):
                return _url_endpoint(self.reactor, endpoint), "ws", url or endpoint
            from twisted.internet.endpoints import clientFromString

            return clientFromString(self.reactor, endpoint), _kind(transport), url or _DEFAULT_URL
        return endpoint, _kind(transport), url or _DEFAULT_URL

    def _attempt(self) -> None:
        self._retry = None
        assert self._target is not None
        endpoint, kind, url = self._target
        factory: Factory[Any]
        if kind == "ws":
            from .client_ws import make_client_websocket_factory

            factory = make_client_websocket_factory(self, url)
        else:
            factory = _TCPFactory(self)
        self._connecting = d = endpoint.connect(factory)
        d.addCallbacks(self._attemptConnected, self._attemptFailed)

    def _attemptConnected(self, protocol: Any) -> None:
        self._connecting = None

    def _attemptFailed(self, reason: Failure) -> None:
        """The connection (TCP, or the WebSocket opening handshake) could not be made."""
        self._connecting = None
        if self._closing:
            reason = Failure(ConnectionDone("closed by the client"))
        else:
            self.log.info("connection attempt failed: {error}", error=reason.getErrorMessage())
        self._next(reason, final=False)

    def _linkMade(self, transport: _Transport) -> _Link | None:
        """A transport connected; it gets a new link, or C{None} if the client is closing."""
        if self._closing or not self._active:
            transport.abortConnection()
            return None
        self._link = link = _Link(self, transport)
        return link

    def _openFailed(self, transport: _Transport, reason: Failure) -> None:
        """A WebSocket transport closed before its opening handshake completed."""
        link = self._link
        if link is not None and link.transport is transport:
            self._link = None
            link.lost = True
        self._attemptFailed(reason)

    def _handshaken(self, link: _Link, answer: dict[str, Any]) -> None:
        self._attempts = 0
        self.answer = answer
        self._emit("connect", answer)
        ready, self._ready = self._ready, None
        if ready is not None and self._link is link and not link.lost:
            ready.callback(answer)

    def _kicked(self, reason: Any) -> None:
        self._emit("kick", reason)

    def _push(self, route: str, body: Any) -> None:
        callbacks = self._routes.get(route)
        if not callbacks:
            self.log.debug("push on {route} with no callback", route=route)
            return
        for callback in list(callbacks):
            try:
                callback(body)
            except Exception:
                self.log.failure(
                    "push callback {callback!r} for {route} failed", callback=callback, route=route
                )

    def _linkLost(self, link: _Link, reason: Failure) -> None:
        if self._link is link:
            self._link = None
        if link.handshaken:
            self._emit("disconnect", reason)
        self._next(reason, final=link.final)

    def _next(self, reason: Failure, final: bool) -> None:
        """After a lost connection or a failed attempt: reconnect, or finish."""
        policy = self.reconnect
        if final or self._closing or policy is None or not self._active:
            self._finish(reason)
            return
        self._attempts += 1
        if policy.max_attempts is not None and self._attempts > policy.max_attempts:
            self._finish(reason)
            return
        delay = policy.delay(self._attempts)
        self.log.info("reconnecting in {delay:.2f} s (attempt {n})", delay=delay, n=self._attempts)
        self._retry = self.reactor.callLater(delay, self._attempt)
        self._emit("reconnect", self._attempts, delay)

    def _cancel_connect(self) -> None:
        self._ready = None
        self.close()

    def _finish(self, reason: Failure) -> None:
        if not self._active:
            return
        self._active = False
        self._closing = False
        self._link = None
        ready, self._ready = self._ready, None
        if ready is not None:
            ready.errback(reason)
        self._emit("close", reason)
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)


_DEFAULT_URL = "ws://localhost/"


def _kind(transport: str | None) -> str:
    kind = transport or "tcp"
    if kind not in ("tcp", "ws"):
        raise ValueError(f"transport must be 'tcp' or 'ws', not {kind!r}")
    return kind


def _url_endpoint(reactor: Any, url: str) -> IStreamClientEndpoint:
    """A client endpoint for a C{ws://} or C{wss://} URL."""
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host, port)
    if secure:
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint
