# -*- test-case-name: tests.client -*-
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
     WebSocket protocol (L{pomelo_twisted.client.websocket}), heartbeat and deadline timers on an
     injected reactor, one Deferred per request, push callbacks, and optional reconnection
     with back-off.

The route dictionary and the protos are kept in L{PomeloClient.cache}, a plain JSON-able dict
keyed by their versions: the next handshake (a reconnect, or another client sharing the cache)
sends the cached versions, and the server then leaves the dictionary and protos out of its answer
(§5.4). Persist it with C{json.dump} to keep it across runs, one cache per server cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from enum import Enum
from typing import Any, Literal
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._version import __version__
from ..protocol.client import (
    CLIENT_TYPE,
    ClientState,
    NotConnected,
)
from ..protocol.package import (
    MAX_BODY,
)
from .backoff import Backoff
from .link import _Link, _Transport
from .tcp import _TCPFactory
from .websocket import make_client_websocket_factory


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
        @raise pomelo_twisted.protocol.errors.PomeloError: the body cannot be encoded.
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
        factory = make_client_websocket_factory(self, url) if kind == "ws" else _TCPFactory(self)
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


__all__ = [
    "DEFAULT",
    "PomeloClient",
]
