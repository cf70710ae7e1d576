# -*- test-case-name: tests.client -*-
"""One transport connection of a client: the sans-IO core, its timers and its pending requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..protocol.client import (
    ClientEvent,
    ClientState,
    ConnectionClosed,
    HandshakeCompleted,
    HandshakeFailed,
    HandshakeRefused,
    HandshakeTimeout,
    HeartbeatReceived,
    HeartbeatTimeout,
    Kicked,
    KickReceived,
    MessageUndecodable,
    PomeloClientConnection,
    ProtocolViolated,
    PushReceived,
    RequestTimeout,
    ResponseReceived,
)
from ..protocol.message import MessageType


class _Transport(TypingProtocol):
    """What a link needs from its transport protocol (TCP or WebSocket)."""

    def writePackages(self, packages: list[bytes]) -> None: ...

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...


class LinkOwner(TypingProtocol):
    """What a link and its transports need from the client that owns them."""

    reactor: Any
    log: Logger
    user: Any
    cache: dict[str, Any]
    client_type: str
    version: str
    heartbeat_grace: float
    handshake_timeout: float | None
    reconnect: Any
    max_package_size: int

    def _linkMade(self, transport: _Transport) -> _Link | None: ...

    def _openFailed(self, transport: _Transport, reason: Failure) -> None: ...

    def _handshaken(self, link: _Link, answer: dict[str, Any]) -> None: ...

    def _kicked(self, reason: Any) -> None: ...

    def _push(self, route: str, body: Any) -> None: ...

    def _linkLost(self, link: _Link, reason: Failure) -> None: ...


class _Link:
    """One transport connection of a L{PomeloClient}: a sans-IO core, its timers and its
    pending requests. A reconnect makes a new link; a late event of an old one finds it
    detached and does nothing.

    @ivar handshaken: the handshake completed on this link.
    @ivar final: the client must not reconnect after this link (kicked, refused, closed).
    @ivar reason: why this side closed the link, when it did.
    """

    def __init__(self, client: LinkOwner, transport: _Transport) -> None:
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


__all__ = [
    "LinkOwner",
]
