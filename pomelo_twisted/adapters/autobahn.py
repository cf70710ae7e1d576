"""Autobahn, made exact and tidy on an injected reactor; shared by the server and the client.

Rule: this layer holds the adapters to Twisted's and Autobahn's behaviour that both sides
need and that are not the Pomelo protocol (that is L{pomelo_twisted.protocol}); it imports
nothing else of this package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketServerFactory
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

__all__ = ["ExactTimersMixin", "ReactorTimer", "use_exact_timers"]


class ReactorTimer:
    """Autobahn's protocol deadlines (opening and closing handshakes) on one reactor, exact.

    Autobahn schedules them through txaio's batched timer, which runs on txaio's global loop
    rather than the reactor the factory was given, and rounds each deadline I{down} to a whole
    second of the clock (txaio 25: C{int(now + delay)}): a 1 s closing-handshake deadline fires
    anywhere from 0 to 1 s after the close frame. A kicked client that had not yet read its
    KICK when the deadline fired got a TCP reset instead, and the kick was lost (found as a
    flaky test). L{use_exact_timers} puts this in its place.
    """

    __slots__ = ("reactor",)

    def __init__(self, reactor: IReactorTime) -> None:
        self.reactor = reactor

    def call_later(self, delay: float, func: Callable[..., object], *args: Any) -> IDelayedCall:
        """Autobahn's call: C{func(*args)} in C{delay} seconds, on this reactor."""
        return self.reactor.callLater(delay, func, *args)


def use_exact_timers(factory: WebSocketServerFactory | WebSocketClientFactory) -> None:
    """Give C{factory}'s protocols exact deadlines on the factory's own reactor."""
    factory._batched_timer = ReactorTimer(factory.reactor)


class ExactTimersMixin:
    """Cancels Autobahn's closing-handshake deadline when the connection is lost first.

    Autobahn's C{_connectionLost} leaves it armed; it would fire later and do nothing, but a
    timer must not outlive its connection.
    """

    closeHandshakeTimeoutCall: IDelayedCall | None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        call, self.closeHandshakeTimeoutCall = self.closeHandshakeTimeoutCall, None
        if call is not None and call.active():
            call.cancel()
        super().connectionLost(reason)  # type: ignore[misc]
