# -*- test-case-name: tests.server.test_closing -*-
"""Why a connection closed, as a bounded cause and one log line.

The server layer owns these names: the connection code logs them and the operator's metrics
(L{pomelo_twisted.ops.metrics}) count them, so they live below both.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["CLOSE_CAUSES", "HEARTBEAT_TIMEOUT", "close_cause", "close_line", "peer_text"]

#: The C{why} of a heartbeat timeout (the heartbeat command arms it, the socket acts on it).
HEARTBEAT_TIMEOUT: Final = "heartbeat timeout"

#: Why connections close, the C{cause} label of C{pomelo_closes_total}:
#:  - C{peer}: the client closed, or the connection was lost;
#:  - C{kick}: kicked (by the app, a kick API call, or C{kick_all});
#:  - C{shutdown}: kicked while the server drains (SIGTERM or C{ConnectorService.drain});
#:  - C{heartbeat_timeout}, C{handshake_timeout}, C{ack_timeout}: a deadline passed;
#:  - C{handshake_failed}: the handshake was answered 500 or 501;
#:  - C{protocol_error}: a malformed package or message, an oversized one, a text WebSocket
#:    message;
#:  - C{limit}: a resource limit cut the client off (the slow-reader cap, a request rate it
#:    stayed over, a WebSocket control frame flood);
#:  - C{error}: writing to the connection failed;
#:  - C{server}: any other server-side close (C{HybridSocket.disconnect()} by the app).
CLOSE_CAUSES: Final = (
    "peer",
    "kick",
    "shutdown",
    "heartbeat_timeout",
    "handshake_timeout",
    "ack_timeout",
    "handshake_failed",
    "protocol_error",
    "limit",
    "error",
    "server",
)

#: The C{why} texts of L{HybridSocket<pomelo_twisted.server.socket.HybridSocket>} closes, by prefix.
_CAUSE_PREFIXES: Final = (
    ("connection lost", "peer"),
    ("kicked: ", "kick"),
    (HEARTBEAT_TIMEOUT, "heartbeat_timeout"),
    ("handshake timeout", "handshake_timeout"),
    ("no handshake ack", "ack_timeout"),
    ("handshake failed", "handshake_failed"),
    ("protocol error", "protocol_error"),
    ("text WebSocket message", "protocol_error"),
    ("slow reader", "limit"),
    ("rate limit", "limit"),
    ("write failed", "error"),
)


def close_cause(why: str, draining: bool = False) -> str:
    """The L{CLOSE_CAUSES} value for a connection's C{close_reason} text.

    @param draining: whether the server drains; a kick then counts as C{"shutdown"}.
    """
    for prefix, cause in _CAUSE_PREFIXES:
        if why.startswith(prefix):
            return "shutdown" if draining and cause == "kick" else cause
    return "server"


_CLOSE_LINE: Final = (
    "connection closed: peer={peer} transport={transport} session={session_id} uid={uid} "
    "cause={cause}"
)
#: Causes whose details a line logged just before gave already (a warning naming the limit or
#: the protocol error): their close line does not repeat them.
_DETAILED_BEFORE: Final = frozenset({"protocol_error", "limit"})


def close_line(cause: str) -> str:
    """The log format of the line for one close; its event also carries C{why}.

    The fields are C{peer} (L{peer_text}), C{transport}, C{session_id} and C{uid} (C{None}
    before the handshake), C{cause} (L{CLOSE_CAUSES}) and C{why} (the socket's close reason).
    """
    if cause in _DETAILED_BEFORE:
        return _CLOSE_LINE + " (details logged above)"
    return _CLOSE_LINE + " why={why!r}"


def peer_text(address: Any) -> str:
    """An C{IAddress} as log text: C{host:port} (C{[host]:port} for IPv6), or a UNIX path."""
    host = getattr(address, "host", None)
    if host is not None:
        port = getattr(address, "port", None)
        if port is None:
            return str(host)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = getattr(address, "name", None)
    if name is not None:
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    return str(address)
