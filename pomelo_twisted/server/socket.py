"""One client connection, whatever its transport (Pomelo's ``hybridsocket``).

A L{HybridSocket} joins the sans-IO L{PomeloConnection} to a transport (raw TCP or WebSocket),
to the connector's command registry and to a session. It owns the connection's single timer:
the handshake deadline, then the ACK deadline, then the heartbeat timeout, re-armed in place.
Writes made during one reactor turn are gathered and leave as one write.

It also applies the per-connection limits (docs/security.md): the request rates (a token
bucket of its own and one shared by the connections of its address, checked before a DATA
package reaches its command; a request over either is answered C{{"code": 429}}, a notify
dropped, and the connection is not read for a while: shedding), through its transport the
slow-reader cap, and a throttle on the log lines its client can cause.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..protocol.codec import AnswerMisfit
from ..protocol.connection import ConnectionState, PomeloConnection
from ..protocol.errors import PackageError, PackageTooLarge, ProtocolError
from ..protocol.message import MessageType
from ..protocol.package import Package, PackageType
from ..services.interfaces import ISessionConnection
from .closing import HEARTBEAT_TIMEOUT, close_cause, close_line, peer_text
from .interfaces import IPomeloTransport
from .limits import RATE_LIMITED_CODE, TokenBucket
from .log_throttle import Throttle

if TYPE_CHECKING:
    from ..services.session import Session
    from .connector import Connector

__all__ = ["HybridSocket"]

_DATA: Final = PackageType.DATA
_RATE_LIMITED: Final = {"code": RATE_LIMITED_CODE}
#: The flag bytes of a PUSH message (route compressed or not, Pomelo's gzip bit or not).
_PUSH_FLAGS: Final = frozenset(bytes([MessageType.PUSH << 1 | bits]) for bits in (0, 1, 16, 17))
#: At most one "over the request rate" log line per connection in this many seconds.
RATE_LOG_INTERVAL = 10.0
#: At most this many other lines caused by a client's messages (an unknown route, a bad body,
#: a failing handler) per connection in each L{CLIENT_LOG_INTERVAL}; the rest are counted.
CLIENT_LOG_LINES = 5
CLIENT_LOG_INTERVAL = 10.0
#: A shed connection that is over a rate again within this many seconds of being read again
#: is still "over the rate" for C{rate_limit_close_after}.
SHED_GRACE = 1.0
#: A shed connection is read again after its bucket's wait and up to this fraction more.
SHED_JITTER = 0.5


@implementer(ISessionConnection)
class HybridSocket:
    """The server side of one Pomelo connection.

    @ivar connection: the protocol state machine.
    @ivar session: the application session, created when a valid handshake arrives.
    @ivar close_reason: why the connection closed (for logs), once it has.
    @ivar rate_limited: how many DATA packages were refused for being over the request rate.
    @ivar ip_key: what the per-address request budget counts this connection under (see
        L{Connector.acquire_ip_bucket}), or C{None}.
    @ivar shedding: whether reading is paused because the connection went over a rate.
    """

    # One per connection: no instance dict (about a tenth of an idle connection's memory).
    __slots__ = (
        "_abort_timer",
        "_bucket",
        "_ip_bucket",
        "_log_throttle",
        "_meter",
        "_over_since",
        "_pending",
        "_rate_log",
        "_resume_call",
        "_resumed_at",
        "_timer",
        "_timer_reason",
        "close_reason",
        "connection",
        "connector",
        "ip_key",
        "rate_limited",
        "session",
        "transport",
    )

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
        self._bucket: TokenBucket | None = None
        if config.max_requests_per_second:
            self._bucket = TokenBucket(
                config.max_requests_per_second, config.request_burst, connector.reactor.seconds()
            )
        self.ip_key: object | None = None
        self._ip_bucket: TokenBucket | None = None
        budget = connector.acquire_ip_bucket(transport.getPeer())
        if budget is not None:
            self.ip_key, self._ip_bucket = budget
        self.rate_limited = 0
        self._rate_log: Throttle | None = None
        self._log_throttle: Throttle | None = None
        self._resume_call: IDelayedCall | None = None
        self._over_since: float | None = None
        self._resumed_at = 0.0
        metrics = connector.metrics  # counted in its transport's meter, unless metrics are off
        self._meter = None if metrics is None else metrics.opened(transport.name)
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
        if self._meter is not None:
            self._meter.received += len(data)
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
        bucket = self._bucket
        ip_bucket = self._ip_bucket
        for package in packages:
            if connection.state is ConnectionState.CLOSED:
                return
            try:
                if connection.accept(package):
                    if package.type is _DATA and (bucket is not None or ip_bucket is not None):
                        now = self.connector.reactor.seconds()
                        if bucket is not None and not bucket.take(now):
                            self._over_rate(package, bucket, now)
                            continue
                        if ip_bucket is not None and not ip_bucket.take(now):
                            self._over_rate(package, ip_bucket, now)
                            continue
                    commands[package.type].handle(self, package)
            except ProtocolError as e:
                self.protocol_error(e)
                return

    def _over_rate(self, package: Package, bucket: TokenBucket, now: float) -> None:
        """A DATA package over a rate (C{bucket} is empty): answer a request with 429, drop a
        notify, then shed the connection.

        @raise MessageError: the message is malformed (a protocol error, as it would have been
            for the data command).
        """
        codec = self.connector.codec
        msg = codec.decode(package.body)
        self.rate_limited += 1
        if self._meter is not None:
            self._meter.metrics.rate_limited(msg.route)
        mid = msg.id if msg.type is MessageType.REQUEST else 0
        throttle = self._rate_log
        if throttle is None:
            throttle = self._rate_log = Throttle(RATE_LOG_INTERVAL)
        if throttle.allow(now):
            config = self.connector.config
            if bucket is self._bucket:
                limit = (
                    f"max_requests_per_second {config.max_requests_per_second} "
                    f"(request_burst {config.request_burst})"
                )
            else:
                limit = (
                    f"max_requests_per_second_per_ip {config.max_requests_per_second_per_ip}, "
                    f"shared by every connection from {self.ip_key}"
                )
            self.log.warn(
                "{action} from {peer}: over {limit}; {count} refused on this connection so far",
                action=f"answering request {mid} with code {RATE_LIMITED_CODE}"
                if mid
                else "dropping a notify",
                peer=self.transport.getPeer(),
                limit=limit,
                count=self.rate_limited,
            )
        if mid:
            # Encoded as the route's answers are: the client decodes it with its proto, if any.
            try:
                answer = codec.answer(mid, msg.route, _RATE_LIMITED)
            except AnswerMisfit as e:
                answer = e.package
            self.sendPackage(answer)
        self._shed(bucket, now)

    def _shed(self, bucket: TokenBucket, now: float) -> None:
        """Stop reading until C{bucket} is full again (and up to half as long again, see
        L{SHED_JITTER}); abort a connection that has gone straight back over a rate for
        C{rate_limit_close_after}.

        What was read already is still handled (and answered 429 while over the rate); what the
        client sends meanwhile waits in the kernel, so a flood costs no CPU while shed. A
        transport that cannot pause (no C{pauseReading}) is only answered 429.
        """
        if self._resume_call is not None:
            return  # already shed: this is the rest of the read that went over
        pause = getattr(self.transport, "pauseReading", None)
        if pause is None:
            return
        since = self._over_since
        if since is None or now - self._resumed_at > SHED_GRACE:
            self._over_since = now
        else:
            close_after = self.connector.config.rate_limit_close_after
            if close_after and now - since >= close_after:
                self.log.warn(
                    "aborting {peer}: over the request rate for {seconds:.1f} s, "
                    "rate_limit_close_after is {limit} s",
                    peer=self.transport.getPeer(),
                    seconds=now - since,
                    limit=close_after,
                )
                self.flush()  # the 429s of what was read still leave
                self.abort(f"rate limit: over the request rate for {close_after:g} s")
                return
        pause()
        wait = bucket.wait(bucket.burst, now)
        # Up to half as long again, at random: the connections of a flooding address go over
        # its shared budget together, and must not all be read again in the same turn.
        wait *= 1.0 + SHED_JITTER * self.connector.random()
        self._resume_call = self.connector.reactor.callLater(wait, self._resume)

    def _resume(self) -> None:
        """The shed connection's bucket has refilled: read it again."""
        self._resume_call = None
        self._resumed_at = self.connector.reactor.seconds()
        # Also once closed: a WebSocket closing handshake needs the client's close frame.
        resume = getattr(self.transport, "resumeReading", None)
        if resume is not None:
            resume()

    @property
    def shedding(self) -> bool:
        return self._resume_call is not None

    def may_log(self) -> bool:
        """Whether a line caused by this client's messages may be logged now.

        At most L{CLIENT_LOG_LINES} per L{CLIENT_LOG_INTERVAL}; a refused line is counted in
        the metrics (C{pomelo_log_lines_suppressed_total{kind="line"}}).
        """
        throttle = self._log_throttle
        if throttle is None:
            throttle = self._log_throttle = Throttle(CLIENT_LOG_INTERVAL, CLIENT_LOG_LINES)
        if throttle.allow(self.connector.reactor.seconds()):
            return True
        self.connector.log_suppressed("line")
        return False

    def connectionLost(self, reason: Failure | None = None) -> None:
        """The transport is gone (either side closed it)."""
        self._closed("connection lost" if self.close_reason is None else self.close_reason)
        self.connector.socket_closed(self)
        if self._resume_call is not None and self._resume_call.active():
            self._resume_call.cancel()
        self._resume_call = None
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
            meter = self._meter
            if meter is not None:
                meter.sent += len(pending[0]) if len(pending) == 1 else sum(map(len, pending))
            if len(pending) == 1:
                self.transport.writePackages(pending[0])
            else:
                self.transport.writePackageSequence(pending)

    def sendPackage(self, package: bytes) -> bool:
        """Queue a DATA package; dropped (C{False}) unless the connection is working."""
        if self.connection.state is not ConnectionState.WORKING:
            return False
        self.send(package)
        meter = self._meter
        if meter is not None and package[4:5] in _PUSH_FLAGS:
            meter.pushes += 1
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
        why = self._timer_reason
        if why == HEARTBEAT_TIMEOUT and not self.connector.config.disconnect_on_timeout:
            session = self.session
            self.log.warn(
                "heartbeat timeout: peer={peer} session={session_id} uid={uid}; the connection "
                "is kept (disconnect_on_timeout is off)",
                peer=peer_text(self.transport.getPeer()),
                session_id=None if session is None else session.id,
                uid=None if session is None else session.uid,
            )
            return  # the client's next heartbeat re-arms the timeout
        self.disconnect(why)  # the close line in the log says why

    # Closing

    def kick(self, reason: str | None = "kick") -> None:
        """Send a KICK (when working and C{reason} is a string), then close gracefully."""
        if self._meter is not None and self.connection.state is not ConnectionState.CLOSED:
            self._meter.metrics.kicked(reason)
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
        if isinstance(error, PackageTooLarge):
            limit = (
                "max_handshake_size"
                if error.maximum == self.connection.max_handshake_size
                and error.maximum != self.connector.config.max_package_size
                else "max_package_size"
            )
            self.log.warn(
                "aborting {peer}: a package header announced a body of {length} bytes, over "
                "{limit} ({maximum} bytes)",
                peer=self.transport.getPeer(),
                length=error.length,
                limit=limit,
                maximum=error.maximum,
            )
        else:
            self.log.warn(
                "protocol error from {peer}: {error}", peer=self.transport.getPeer(), error=error
            )
        if self._closed(f"protocol error: {error}"):
            self.transport.abortConnection()

    def slow_reader(self, queued: int) -> None:
        """The transport reports C{queued} bytes unread, over C{max_outbound_buffer}: abort."""
        self.log.warn(
            "aborting {peer}: {queued} bytes written while its write buffer stayed full, over "
            "max_outbound_buffer ({limit} bytes); the client is not reading",
            peer=self.transport.getPeer(),
            queued=queued,
            limit=self.connector.config.max_outbound_buffer,
        )
        self.abort("slow reader: outbound buffer over max_outbound_buffer")

    def abort(self, why: str) -> None:
        """Close at once, dropping anything unsent (the caller has logged why)."""
        self._closed(why)
        self.transport.abortConnection()

    def _closed(self, why: str) -> bool:
        """Enter CLOSED once: cancel the timer, log and count why, close the session.

        Return whether it did.
        """
        if not self.connection.close():
            return False
        self.close_reason = why
        self.arm_timer(None, why)
        session, self.session = self.session, None
        cause = close_cause(why, self.connector.draining)
        if self._meter is not None:
            self._meter.closed(cause)
        level = self.connector.config.connection_log_level
        if level is not None:
            self.log.emit(
                level,
                close_line(cause),
                peer=peer_text(self.transport.getPeer()),
                transport=self.transport.name,
                session_id=None if session is None else session.id,
                uid=None if session is None else session.uid,
                cause=cause,
                why=why,
            )
        if session is not None:
            self.connector.session_service.remove(session.id, why)
        return True
