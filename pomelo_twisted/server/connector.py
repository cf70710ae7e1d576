"""The connector: what the connections of one server share.

A L{Connector} is built once per application. It derives the route dictionary and the protos
from the application and its Pomelo ``config/`` directory, owns the session and channel services,
the command registry and the clock, and gathers each reactor turn's writes so that every
connection writes at most once per turn.

It also admits connections (docs/security.md): the blocklist, the connection counts and the
per-address request budgets live here, so that they cover every port the connector listens on.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel

from ..protocol.codec import ServerCodec
from ..protocol.dictionary import RouteDictionary
from ..protocol.protobuf import Protobuf
from ..services.application import Application, log_failure
from ..services.channel import ChannelService
from ..services.cluster import LocalCluster
from ..services.session import SessionService
from .commands import default_commands
from .config import ConnectorConfig
from .limits import (
    Blocklist,
    IPAddress,
    IPNetwork,
    SharedBuckets,
    TokenBucket,
    ip_key,
    parse_ip,
    parse_network,
)
from .log_throttle import KeyedThrottle, RateLimitedLog
from .proxy import TrustedProxies
from .socket import HybridSocket

if TYPE_CHECKING:
    from .interfaces import ConnectorMetricsHooks, IPomeloTransport

__all__ = ["TRACEBACK_INTERVAL", "Connector"]

#: A traceback caused by a client's message is logged at most once per route in this many
#: seconds (every connection together); the other failures get a line without it.
TRACEBACK_INTERVAL = 60.0


def _default_sessions(codec: ServerCodec, config: ConnectorConfig) -> SessionService:
    return SessionService(codec, server_id=config.server_id, single_session=config.single_session)


class _Admitted(NamedTuple):
    """An admitted connection: its normalised address and what the per-address limit counts."""

    address: IPAddress | None
    key: IPAddress | IPNetwork | None
    abort: Any


class Connector:
    """Shared state of one connector (every transport, every port).

    @ivar app: the L{Application} served.
    @ivar config: the L{ConnectorConfig}.
    @ivar reactor: the clock used for every timer (a C{task.Clock} in tests).
    @ivar dictionary: the route dictionary, or C{None} when C{use_dict} is off.
    @ivar protobuf: the protos, or C{None} when C{use_protobuf} is off.
    @ivar commands: the command registry, package type -> L{ICommand}.
    @ivar sockets: the open connections that have been classified (TCP or WebSocket).
    @ivar blocklist: the L{Blocklist} checked when a connection arrives; change it at any time.
    @ivar trusted_proxies: the networks whose PROXY or forwarded headers are believed.
    @ivar crowd_log: logs the lines a crowd of clients can repeat (refusals, failed TLS
        handshakes) at most once per kind and interval, then counts the rest in one line.
    @ivar tracebacks: the throttle of tracebacks caused by clients, keyed by route.
    """

    log = Logger()

    def __init__(
        self,
        app: Application,
        reactor: IReactorTime,
        config: ConnectorConfig | None = None,
        *,
        session_service: Callable[[ServerCodec, ConnectorConfig], SessionService] | None = None,
        channel_service: Callable[[SessionService], ChannelService] | None = None,
    ) -> None:
        """Build the shared state of one connector.

        @param session_service: makes this process's session service from the codec (which
            the connector builds from the app's dictionary and protos) and the config, whose
            C{server_id} names this process; the in-memory L{SessionService} by default.
        @param channel_service: makes the channel service over the session service; the
            in-memory L{ChannelService} by default. Both services stay per process and
            synchronous; cluster-wide operations have their own Deferred seam
            (docs/architecture.md).
        """
        self.app = app
        self.reactor = reactor
        self.config = config = config or ConnectorConfig()
        self.dictionary: RouteDictionary | None = None
        self.protobuf: Protobuf | None = None
        if config.use_dict:
            if app.config_dir:
                self.dictionary = RouteDictionary.from_config_dir(app.routes, app.config_dir)
            else:
                self.dictionary = RouteDictionary(app.routes)
        if config.use_protobuf:
            if app.config_dir:
                self.protobuf = Protobuf.from_config_dir(app.config_dir)
            else:
                self.protobuf = Protobuf()
        self.codec = ServerCodec(self.dictionary, self.protobuf)
        self.session_service = (session_service or _default_sessions)(self.codec, config)
        self.channel_service = (channel_service or ChannelService)(self.session_service)
        app.failure_log = self._log_app_failure
        app.session_service = self.session_service
        app.channel_service = self.channel_service
        if app.cluster is None or isinstance(app.cluster, LocalCluster):
            # an app given a RedisCluster (or its own ICluster) keeps it
            app.cluster = LocalCluster(self.session_service, self.channel_service)
        self.commands = default_commands()
        self.sockets: set[HybridSocket] = set()
        self.blocklist = Blocklist(config.blocklist)
        self.trusted_proxies = TrustedProxies(map(parse_network, config.trusted_proxies))
        self.crowd_log = RateLimitedLog(reactor)
        self._admitted: dict[object, _Admitted] = {}
        self._per_key: dict[IPAddress | IPNetwork, int] = {}
        rate = config.max_requests_per_second_per_ip
        self._ip_buckets = None if not rate else SharedBuckets(rate, 2.0 * rate)
        self.tracebacks = KeyedThrottle(TRACEBACK_INTERVAL)
        #: Where shedding draws its jitter from (a float in [0, 1)); tests replace it.
        self.random: Callable[[], float] = random.random
        self._dirty: list[HybridSocket] = []
        self._flush_call: IDelayedCall | None = None
        self._idle_waiters: list[Deferred[None]] = []
        #: The metrics counting this connector's events (L{ConnectorMetricsHooks}, such as
        #: L{pomelo_twisted.ops.metrics.ConnectorMetrics}), or C{None} (off).
        self.metrics: ConnectorMetricsHooks | None = None
        #: Set while the server drains: kicks then close with the cause C{"shutdown"}.
        self.draining = False

    # Admission

    def admit(self, connection: object, peer: Any, abort: Any = None) -> bool:
        """Count a new connection in, or refuse it (blocklist, then the connection limits).

        A refusal is logged here; the caller closes the connection at once. An admitted
        connection must be L{release}d when it closes, and only then is it uncounted: a refused
        one was never counted (Pomelo counts refused ones and never uncounts them, B11).

        @param connection: any object identifying the connection until L{release}.
        @param peer: the remote C{IAddress}; addresses that are not IP (UNIX sockets), and
            those of trusted proxies (they carry many clients), are only counted towards
            C{max_connections}.
        @param abort: a callable closing the connection, for L{close_blocked}.
        """
        address = parse_ip(getattr(peer, "host", None))
        if address is not None and self._blocked(peer, address):
            return False
        limit = self.config.max_connections
        if limit and len(self._admitted) >= limit:
            self.refuse(
                "max_connections",
                "refusing connections over max_connections",
                LogLevel.warn,
                "refusing {peer}: {count} connections open, max_connections is {limit}",
                peer=peer,
                count=len(self._admitted),
                limit=limit,
            )
            return False
        key = self._count_key(address)
        if key is not None:
            if self._over_per_ip(peer, key):
                return False
            self._per_key[key] = self._per_key.get(key, 0) + 1
        self._admitted[connection] = _Admitted(address, key, abort)
        return True

    def readmit(self, connection: object, peer: Any) -> str | None:
        """Count an admitted connection under its real client C{peer}, which a trusted proxy
        named (PROXY header, forwarded header), instead of the address it came from.

        The blocklist and C{max_connections_per_ip} are checked for C{peer} as in L{admit}.
        Return C{None} if it passed, else the refusal (C{"blocklist"} or
        C{"max_connections_per_ip"}, logged here); a refused connection stays counted as it
        was until the caller's close L{release}s it. A connection that was never admitted
        (a WebSocket served by a web site) passes unchecked.
        """
        admitted = self._admitted.get(connection)
        if admitted is None:
            return None
        address = parse_ip(getattr(peer, "host", None))
        if address is not None and self._blocked(peer, address):
            return "blocklist"
        key = self._count_key(address)
        if key != admitted.key:
            if key is not None and self._over_per_ip(peer, key):
                return "max_connections_per_ip"
            self._uncount(admitted.key)
            if key is not None:
                self._per_key[key] = self._per_key.get(key, 0) + 1
        self._admitted[connection] = admitted._replace(address=address, key=key)
        return None

    def proxy_refused(self, peer: Any, problem: str, reason: str) -> None:
        """Log and count a connection refused over its PROXY or forwarded header.

        Logged through L{crowd_log}: a misconfigured balancer refused on every connection
        writes one line per interval and a count, not a line per connection.

        @param problem: what is wrong, for the log line.
        @param reason: the refusal reason metrics count (C{"proxy_header"}, ...).
        """
        self.refuse(
            reason,
            "refusing connections over their PROXY or forwarded header",
            LogLevel.warn,
            "refusing {peer}: {problem}",
            peer=peer,
            problem=problem,
        )

    def refuse(
        self, reason: str, kind: str, level: LogLevel, format: str, /, **fields: Any
    ) -> None:
        """Count a connection refused for C{reason} (a C{REFUSAL_REASONS} value) and log it
        through L{crowd_log} as an event of C{kind}: a crowd refused logs a line per interval.

        Used by the admission here and by the first-byte sniffer (L{HybridProtocol}) for
        connections that never become a Pomelo client (bad first byte, not a WebSocket, ...).
        """
        if self.metrics is not None:
            self.metrics.refused(reason)
        self.crowd_log.emit(self.log, kind, level, format, **fields)

    def is_trusted_proxy(self, peer: Any) -> bool:
        """Whether C{peer} (an C{IAddress}) is in C{trusted_proxies}."""
        return parse_ip(getattr(peer, "host", None)) in self.trusted_proxies

    def _blocked(self, peer: Any, address: IPAddress) -> bool:
        if not self.blocklist.blocks(address):
            return False
        self.refuse(
            "blocklist",
            "refusing connections on the blocklist",
            LogLevel.info,
            "refusing {peer}: {address} is on the blocklist",
            peer=peer,
            address=address,
        )
        return True

    def _count_key(self, address: IPAddress | None) -> IPAddress | IPNetwork | None:
        """What C{max_connections_per_ip} counts C{address} under; C{None}: not counted (not
        IP, or a trusted proxy, which carries many clients)."""
        if address is None or address in self.trusted_proxies:
            return None
        return ip_key(address)

    def _over_per_ip(self, peer: Any, key: IPAddress | IPNetwork) -> bool:
        count = self._per_key.get(key, 0)
        limit = self.config.max_connections_per_ip
        if not limit or count < limit:
            return False
        self.refuse(
            "max_connections_per_ip",
            "refusing connections over max_connections_per_ip",
            LogLevel.warn,
            "refusing {peer}: {count} connections open from {key}, "
            "max_connections_per_ip is {limit}",
            peer=peer,
            count=count,
            key=key,
            limit=limit,
        )
        return True

    def _uncount(self, key: IPAddress | IPNetwork | None) -> None:
        if key is None:
            return
        count = self._per_key[key] - 1
        if count:
            self._per_key[key] = count
        else:
            del self._per_key[key]

    def release(self, connection: object) -> None:
        """Uncount a connection L{admit}ted earlier; any further call for it does nothing."""
        admitted = self._admitted.pop(connection, None)
        if admitted is not None:
            self._uncount(admitted.key)

    @property
    def connection_count(self) -> int:
        """Connections admitted and not yet closed (classified or not), every port together."""
        return len(self._admitted)

    def connections_from(self, host: str) -> int:
        """Open connections counted against C{host}'s per-address limit (its IPv6 /64)."""
        address = parse_ip(host)
        return 0 if address is None else self._per_key.get(ip_key(address), 0)

    def close_blocked(self) -> int:
        """Abort the open connections whose address the blocklist now blocks; return how many.

        Blocklist changes apply to new connections only; call this after one to apply it to
        those already open.
        """
        blocked = [
            (connection, admitted)
            for connection, admitted in self._admitted.items()
            if admitted.address is not None and self.blocklist.blocks(admitted.address)
        ]
        for _, admitted in blocked:
            self.log.info(
                "aborting a connection from {address}: now on the blocklist",
                address=admitted.address,
            )
            if admitted.abort is not None:
                admitted.abort()
        return len(blocked)

    def acquire_ip_bucket(self, peer: Any) -> tuple[object, TokenBucket] | None:
        """The request budget shared by every connection from C{peer}'s address (its IPv6 /64),
        with the key it is counted under; C{None} when off or for a peer that is not IP.

        The socket gives it back through L{socket_closed}.
        """
        buckets = self._ip_buckets
        if buckets is None:
            return None
        address = parse_ip(getattr(peer, "host", None))
        if address is None:
            return None
        key = ip_key(address)
        return key, buckets.acquire(key, self.reactor.seconds())

    def log_suppressed(self, kind: str) -> None:
        """A log line caused by a client was throttled: C{"line"} (not logged at all) or
        C{"traceback"} (logged without its traceback)."""
        if self.metrics is not None:
            self.metrics.log_suppressed(kind)

    def _log_app_failure(self, err: Exception, route: str | None, where: str) -> None:
        """The app's unexpected failures, with a traceback at most once per route per
        L{TRACEBACK_INTERVAL}; the others are counted (a client's messages cause them)."""
        if self.may_trace(route or "(no route)"):
            log_failure(err, route, where)

    def may_trace(self, route: str) -> bool:
        """Whether a client-caused failure on C{route} may be logged with its traceback now
        (at most once per L{TRACEBACK_INTERVAL} per route); if not, it is counted."""
        if self.tracebacks.allow(route, self.reactor.seconds()):
            return True
        self.log_suppressed("traceback")
        return False

    # Connections

    def build_socket(self, transport: IPomeloTransport) -> HybridSocket:
        """A new connection on C{transport} (already classified as TCP or WebSocket)."""
        socket = HybridSocket(self, transport)
        self.sockets.add(socket)
        return socket

    def socket_closed(self, socket: HybridSocket) -> None:
        """Forget a connection whose transport is gone."""
        self.sockets.discard(socket)
        key, socket.ip_key = socket.ip_key, None
        if key is not None and self._ip_buckets is not None:
            self._ip_buckets.release(key)
        if not self.sockets and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def wait_closed(self, timeout: float) -> Deferred[None]:
        """Fire when every connection has closed, or after C{timeout} seconds."""
        if not self.sockets:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)

        def expire() -> None:
            if d in self._idle_waiters:
                self._idle_waiters.remove(d)
                d.callback(None)

        call = self.reactor.callLater(timeout, expire)

        def cancel(result: None) -> None:
            if call.active():
                call.cancel()
            return result

        return d.addBoth(cancel)

    def schedule_flush(self, socket: HybridSocket) -> None:
        """Have C{socket}'s queued packages written at the end of this reactor turn."""
        self._dirty.append(socket)
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """Write every connection's queued packages, one write each."""
        self._flush_call = None
        dirty, self._dirty = self._dirty, []
        for socket in dirty:
            try:
                socket.flush()
            except Exception:
                # One broken transport must not keep every connection after it from writing.
                self.log.failure("writing to {peer} failed", peer=socket.getPeer())
                socket.abort("write failed")

    def kick_all(self, reason: str = "server shutting down") -> int:
        """Kick every open connection (used on shutdown); return how many."""
        sockets = list(self.sockets)
        for socket in sockets:
            socket.kick(reason)
        return len(sockets)
