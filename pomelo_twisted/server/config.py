"""Connector settings, with Pomelo's option names noted where they differ.

Every resource limit is here, with a safe default; docs/security.md lists them with what a
client sees when it hits one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from twisted.logger import LogLevel

from .limits import parse_network

__all__ = ["ConnectorConfig"]


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    """Everything a connector needs to know about its protocol behaviour and its limits.

    Durations are in seconds. C{None} or 0 turns a deadline off; C{None} or 0 also turns off
    the limits documented as optional (connections, rate, outbound buffer).

    @ivar heartbeat: the interval advertised in the handshake (Pomelo's ``heartbeat``); 0 turns
        heartbeats off entirely (no heartbeat after the ACK, no timeout).
    @ivar heartbeat_timeout: silence after which a working connection is closed; defaults to
        twice the interval, as Pomelo does.
    @ivar disconnect_on_timeout: close a connection whose heartbeat timeout passes (Pomelo's
        ``disconnectOnTimeout``, which pomelo 2.2.7 forces on when heartbeats are on). Off, the
        timeout is only logged and the connection kept until the client or the network closes
        it; the client's next heartbeat re-arms the timeout.
    @ivar use_dict: route dictionary compression (Pomelo's ``useDict``).
    @ivar use_protobuf: pomelo-protobuf bodies (Pomelo's ``useProtobuf``).
    @ivar max_package_size: the largest inbound package body accepted; checked on the 4-byte
        header, before anything is buffered; a WebSocket message or frame may be this plus 4.
        64 KiB is far above any game message yet small enough that a hostile header pins little
        memory (Pomelo allows 16 MiB per connection).
    @ivar max_handshake_size: the largest handshake body accepted.
    @ivar max_http_head_size: the largest HTTP request head (request line and headers) read
        before a WebSocket upgrade; a bigger one is answered C{431} and closed. Browsers send
        well under 2 KiB; 8 KiB is what most web servers allow.
    @ivar first_byte_timeout: a new connection must send its first byte within this time; for
        HTTP, the whole request head (and for TLS on a plain port, the TLS handshake too).
    @ivar handshake_timeout: a classified connection must send a handshake within this time.
    @ivar ack_timeout: a handshaken connection must send the ACK within this time.
    @ivar kick_close_timeout: after a kick or error response the connection is closed gracefully;
        if the peer has not gone after this long, it is aborted.
    @ivar max_outbound_buffer: bytes that may be written to a connection after its transport has
        reported a full write buffer (64 KiB in Twisted, on top of the kernel's socket buffer)
        and before that buffer drains; past it the client is not reading and the connection is
        aborted. 1 MiB holds 16 maximum-size packages, seconds of any game's push stream.
    @ivar max_connections: open connections per connector (every port together); a new one
        over the limit is closed at once.
    @ivar max_connections_per_ip: open connections from one IPv4 address or one IPv6 /64, so
        that one host cannot take every slot. Generous by default because players behind one
        carrier-grade NAT (common on mobile networks) share an address.
    @ivar max_requests_per_second: the sustained rate of DATA packages (requests and notifies)
        per connection; a request over it is answered C{{"code": 429}} without reaching its
        handler, a notify over it is dropped, and the connection is not read until its bucket
        has refilled (shedding). WebSocket control frames (pings, pongs) have a
        bucket of their own at the same rate and burst; a connection over it is aborted.
    @ivar request_burst: how many requests a connection may send at once before the rate
        applies (the size of its token bucket).
    @ivar max_requests_per_second_per_ip: the sustained rate of DATA packages of all the
        connections of one IPv4 address or IPv6 /64 together (bursts of twice as many), so
        that many connections cannot multiply the per-connection rate; over it, as over the
        per-connection rate. Generous for the same reason as C{max_connections_per_ip}.
    @ivar rate_limit_close_after: a connection that goes back over a request rate as soon as
        it is read again, for this many seconds in a row, is aborted.
    @ivar blocklist: addresses and CIDR networks refused at connection time; the connector's
        L{Blocklist<pomelo_twisted.server.limits.Blocklist>} starts with these and can be
        changed at run time.
    @ivar single_session: at most one session per uid (Pomelo's ``singleSession``).
    @ivar server_id: this frontend's id (Pomelo's ``frontendId``).
    @ivar use_crypto: require RSA-signed messages (Pomelo's ``useCrypto``, protocol.md §14).
    @ivar rsa_max_modulus_bits: the largest client RSA modulus accepted with C{use_crypto}; a
        bigger key makes every signature check expensive.
    @ivar proxy_protocol: connections from C{trusted_proxies} must start with a PROXY protocol
        header (HAProxy's, version 1 or 2) naming the client; other peers may connect directly
        but not send one. It applies to every port of the connector; docs/operations.md.
    @ivar trusted_proxies: addresses and CIDR networks of the load balancers and proxies whose
        word on the client's address is believed (PROXY header, forwarded header); their own
        connections are not counted against C{max_connections_per_ip}.
    @ivar forwarded_header: the request header a trusted HTTP proxy writes the WebSocket
        client's address into: C{"x-forwarded-for"} or C{"forwarded"} (RFC 7239); C{None}
        reads neither. Only one is read: a proxy passes on the other one as the client sent it.
    @ivar connection_log_level: the level of the line logged for every closed connection
        (L{close_line<pomelo_twisted.server.closing.close_line>}), or C{None} for no line: at
        thousands of connections, one line each is a flood.
    """

    heartbeat: int = 3
    heartbeat_timeout: float | None = None
    disconnect_on_timeout: bool = True
    use_dict: bool = True
    use_protobuf: bool = True
    max_package_size: int = 64 * 1024
    max_handshake_size: int = 16 * 1024
    max_http_head_size: int = 8 * 1024
    first_byte_timeout: float | None = 10.0
    handshake_timeout: float | None = 15.0
    ack_timeout: float | None = 15.0
    kick_close_timeout: float = 5.0
    max_outbound_buffer: int | None = 1024 * 1024
    max_connections: int | None = 10000
    max_connections_per_ip: int | None = 500
    max_requests_per_second: float | None = 100.0
    request_burst: int = 200
    max_requests_per_second_per_ip: float | None = 2000.0
    rate_limit_close_after: float | None = 10.0
    blocklist: Iterable[str] = ()
    single_session: bool = False
    server_id: str = "connector-server-1"
    use_crypto: bool = False
    rsa_max_modulus_bits: int = 4096
    proxy_protocol: bool = False
    trusted_proxies: Iterable[str] = ()
    forwarded_header: str | None = "x-forwarded-for"
    connection_log_level: LogLevel | None = LogLevel.info

    def __post_init__(self) -> None:
        if self.heartbeat < 0 or int(self.heartbeat) != self.heartbeat:
            raise ValueError("heartbeat must be a whole number of seconds, 0 for none")
        if self.max_package_size < 1 or self.max_package_size > 0xFFFFFF:
            raise ValueError("max_package_size must be between 1 and 16777215")
        if self.max_http_head_size < 32:
            raise ValueError("max_http_head_size must be at least 32 bytes")
        for name in (
            "max_outbound_buffer",
            "max_connections",
            "max_connections_per_ip",
            "max_requests_per_second",
            "max_requests_per_second_per_ip",
            "rate_limit_close_after",
        ):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative (0 or None: no limit)")
        for name in (
            "heartbeat_timeout",
            "first_byte_timeout",
            "handshake_timeout",
            "ack_timeout",
            "kick_close_timeout",
        ):
            value = getattr(self, name)
            if value is not None and not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be a number of seconds, 0 or more")
        level = self.connection_log_level
        if level is not None and level not in LogLevel.iterconstants():
            raise ValueError("connection_log_level must be a twisted.logger.LogLevel or None")
        if self.request_burst < 1:
            raise ValueError("request_burst must be at least 1")
        for name in ("blocklist", "trusted_proxies"):
            entries = getattr(self, name)
            if isinstance(entries, str):
                raise ValueError(f"{name} must be a list of addresses or networks, not a string")
            entries = tuple(entries)
            for entry in entries:
                parse_network(entry)  # ValueError names the bad entry
            object.__setattr__(self, name, entries)
        if self.proxy_protocol and not self.trusted_proxies:
            raise ValueError("proxy_protocol needs trusted_proxies: the balancers' networks")
        header = self.forwarded_header.lower() if self.forwarded_header else None
        if header not in (None, "x-forwarded-for", "forwarded"):
            raise ValueError("forwarded_header must be 'x-forwarded-for', 'forwarded' or None")
        object.__setattr__(self, "forwarded_header", header)

    @property
    def effective_heartbeat_timeout(self) -> float | None:
        """The heartbeat timeout in force, or None when heartbeats are off."""
        if not self.heartbeat:
            return None
        return self.heartbeat_timeout or 2.0 * self.heartbeat
