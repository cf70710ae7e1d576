"""The server's own seams: what a connection needs from its transport, what it reports to metrics.

Rule: transports are Twisted protocols, so their seam is a zope interface (L{IPomeloTransport});
the metrics hooks are called on the request path by this layer only, so they are a typing
protocol (L{ConnectorMetricsHooks}) that the operator's layer (L{pomelo_twisted.ops.metrics})
satisfies without the server importing it.
"""

from __future__ import annotations

from typing import Any, Protocol

from zope.interface import Attribute, Interface

__all__ = ["ConnectorMetricsHooks", "IPomeloTransport", "TransportMeterHooks"]


class IPomeloTransport(Interface):
    """What a Pomelo connection needs from its transport (raw TCP framer or WebSocket)."""

    name = Attribute("'tcp' or 'ws', for logs and metrics.")

    def writePackages(data: bytes) -> None:
        """Send one or more whole packages: one TCP write, or one binary WebSocket message."""

    def writePackageSequence(packages: list[bytes]) -> None:
        """Send the packages of one reactor turn in one write, without joining them (a
        broadcast package stays one shared bytes object); the same bytes as
        C{writePackages(b"".join(packages))}."""

    def loseConnection() -> None:
        """Close after flushing what was written (FIN, or a WebSocket close handshake)."""

    def abortConnection() -> None:
        """Close at once, dropping anything unsent."""

    def getPeer() -> Any:
        """The remote address (an C{IAddress})."""


class TransportMeterHooks(Protocol):
    """The per-transport counters a connection holds (C{None} when metrics are off)."""

    received: int
    sent: int
    pushes: int

    @property
    def metrics(self) -> ConnectorMetricsHooks:
        """The connector's metrics this meter belongs to."""

    def closed(self, cause: str) -> None:
        """One of these connections closed, for C{cause} (a C{CLOSE_CAUSES} value)."""


class ConnectorMetricsHooks(Protocol):
    """The counting sites the server calls; each call is cheap (plain increments)."""

    def add_kick_reason(self, reason: str) -> None:
        """Count kicks with C{reason} under their own label (the drain's reason)."""

    def opened(self, transport: str) -> TransportMeterHooks:
        """A connection of C{transport} opened; return its transport's meter."""

    def handshake(self, code: int) -> None:
        """A handshake was answered with C{code}."""

    def request_done(self, route: str | None, started: float, ok: bool) -> None:
        """A request or notify finished (C{started}: the reactor's time when it came in)."""

    def settled(self, result: Any, route: str, started: float) -> Any:
        """A Deferred handler result settled; passes C{result} through."""

    def rejected(self, route: str | None) -> None:
        """A message was refused before its handler (unknown route, bad signature)."""

    def rate_limited(self, route: str | int | None) -> None:
        """A request or notify went over its connection's rate."""

    def log_suppressed(self, kind: str) -> None:
        """A log line caused by a client was throttled (C{kind}: C{"line"}, C{"traceback"})."""

    def kicked(self, reason: str | None) -> None:
        """A session was kicked with C{reason}."""

    def refused(self, reason: str) -> None:
        """A connection was refused before it spoke Pomelo (a C{REFUSAL_REASONS} value)."""
