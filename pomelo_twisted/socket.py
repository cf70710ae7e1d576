"""One client connection, whatever its transport (Pomelo's ``hybridsocket``).

A L{HybridSocket} joins the sans-IO L{PomeloConnection} to a transport (raw TCP or WebSocket),
to the connector's command registry and to a session. It owns the connection's single timer:
the handshake deadline, then the ACK deadline, then the heartbeat timeout, re-armed in place.
Writes made during one reactor turn are gathered and leave as one write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .connection import ConnectionState, PomeloConnection
from .errors import PackageError, ProtocolError
from .interfaces import IPomeloTransport, ISessionConnection
from .package import Package

if TYPE_CHECKING:
    from .connector import Connector
    from .session import Session

__all__ = ["HybridSocket"]


@implementer(ISessionConnection)
class HybridSocket:
    """The server side of one Pomelo connection.

    @ivar connection: the protocol state machine.
    @ivar session: the application session, created when a valid handshake arrives.
    @ivar close_reason: why the connection closed (for logs), once it has.
    """

    log = Logger()

    def __init__(self, connector: Connector, transport: IPomeloTransport) -> None:
        config = connector.config
        self.connector = connector
        self.transport = transport
        self.connection = PomeloConnection(config.max_package_size, config.max_handshake_size)
        self.session: Session | None = None
        self.close_reason: str | None = None
        self._pending: list[bytes] = []
        self._timer: IDelayedCall | None = None
        self._abort_timer: IDelayedCall | None = None
        self._timer_reason = ""
        self.arm_timer(config.handshake_timeout, "handshake timeout")

    # Inbound

    def dataReceived(self, data: bytes) -> None:
        """Bytes from a raw TCP stream."""
        self._receive(self.connection.receive_data, data)

    def messageReceived(self, data: bytes) -> None:
        """One whole WebSocket message (one or more packages)."""
        self._receive(self.connection.receive_message, data)

    def _receive(self, decode: Callable[[bytes], list[Package]], data: bytes) -> None:
        if self.connection.state is ConnectionState.CLOSED:
            return
        try:
            packages = decode(data)
        except PackageError as e:
            self._handle(list(e.packages))
            self.protocol_error(e)
            return
        self._handle(packages)

    def _handle(self, packages: list[Package]) -> None:
        commands = self.connector.commands
        connection = self.connection
        for package in packages:
            if connection.state is ConnectionState.CLOSED:
                return
            try:
                if connection.accept(package):
                    commands[package.type].handle(self, package)
            except ProtocolError as e:
                self.protocol_error(e)
                return

    def connectionLost(self, reason: Failure | None = None) -> None:
        """The transport is gone (either side closed it)."""
        self._closed("connection lost" if self.close_reason is None else self.close_reason)
        self.connector.socket_closed(self)
        if self._abort_timer is not None and self._abort_timer.active():
            self._abort_timer.cancel()
        self._abort_timer = None

    # Outbound

    def send(self, data: bytes) -> None:
        """Queue encoded packages; they leave with this reactor turn's single write."""
        if not self._pending:
            self.connector.schedule_flush(self)
        self._pending.append(data)

    def flush(self) -> None:
        """Write everything queued as one write (called once per reactor turn)."""
        pending = self._pending
        if pending:
            self._pending = []
            if self.connection.state is ConnectionState.CLOSED:
                return  # aborted, or the peer is gone: nothing may be written any more
            self.transport.writePackages(pending[0] if len(pending) == 1 else b"".join(pending))

    def sendPackage(self, package: bytes) -> bool:
        """Queue a DATA package; dropped (C{False}) unless the connection is working."""
        if self.connection.state is not ConnectionState.WORKING:
            return False
        self.send(package)
        return True

    def getPeer(self) -> Any:
        """The remote address."""
        return self.transport.getPeer()

    # Timers

    def arm_timer(self, delay: float | None, why: str) -> None:
        """(Re)arm the connection's one deadline; C{None} or 0 disarms it."""
        timer = self._timer
        if not delay:
            if timer is not None and timer.active():
                timer.cancel()
            self._timer = None
            return
        if timer is not None and timer.active():
            timer.reset(delay)
            self._timer_reason = why
            return
        self._timer_reason = why
        self._timer = self.connector.reactor.callLater(delay, self._expired)

    def _expired(self) -> None:
        self._timer = None
        self.log.info(
            "closing {peer}: {why}", peer=self.transport.getPeer(), why=self._timer_reason
        )
        self.disconnect(self._timer_reason)

    # Closing

    def kick(self, reason: str | None = "kick") -> None:
        """Send a KICK (when working and C{reason} is a string), then close gracefully."""
        if isinstance(reason, str):
            package = self.connection.kick(reason)
            if package is not None:
                self.send(package)
        self.disconnect(f"kicked: {reason}")

    def disconnect(self, why: str = "closed by server") -> None:
        """Close gracefully: flush what is queued, close, abort if the peer lingers."""
        if self.connection.state is ConnectionState.CLOSED:
            return
        self.flush()
        self._closed(why)
        timeout = self.connector.config.kick_close_timeout
        if timeout:
            # Armed before the close: a transport may report connectionLost from inside
            # loseConnection, and connectionLost must find the timer to cancel it.
            self._abort_timer = self.connector.reactor.callLater(
                timeout, self.transport.abortConnection
            )
        self.transport.loseConnection()

    def protocol_error(self, error: Exception) -> None:
        """The client broke the protocol: log it and abort the connection."""
        self.log.warn(
            "protocol error from {peer}: {error}", peer=self.transport.getPeer(), error=error
        )
        if self._closed(f"protocol error: {error}"):
            self.transport.abortConnection()

    def _closed(self, why: str) -> bool:
        """Enter CLOSED once: cancel the timer and close the session. Return whether it did."""
        if not self.connection.close():
            return False
        self.close_reason = why
        self.arm_timer(None, why)
        session, self.session = self.session, None
        if session is not None:
            self.connector.session_service.remove(session.id, why)
        return True
