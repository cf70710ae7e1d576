"""The connector: what the connections of one server share.

A L{Connector} is built once per application. It derives the route dictionary and the protos
from the application and its Pomelo ``config/`` directory, owns the session and channel services,
the command registry and the clock, and gathers each reactor turn's writes so that every
connection writes at most once per turn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .application import Application
from .channel import ChannelService
from .codec import ServerCodec
from .commands import default_commands
from .config import ConnectorConfig
from .dictionary import RouteDictionary
from .protobuf import Protobuf
from .session import SessionService
from .socket import HybridSocket

if TYPE_CHECKING:
    from .interfaces import IPomeloTransport

__all__ = ["Connector"]


class Connector:
    """Shared state of one connector (every transport, every port).

    @ivar app: the L{Application} served.
    @ivar config: the L{ConnectorConfig}.
    @ivar reactor: the clock used for every timer (a C{task.Clock} in tests).
    @ivar dictionary: the route dictionary, or C{None} when C{use_dict} is off.
    @ivar protobuf: the protos, or C{None} when C{use_protobuf} is off.
    @ivar commands: the command registry, package type -> L{ICommand}.
    @ivar sockets: the open connections.
    """

    log = Logger()

    def __init__(
        self,
        app: Application,
        reactor: IReactorTime,
        config: ConnectorConfig | None = None,
    ) -> None:
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
        self.session_service = SessionService(
            self.codec, server_id=config.server_id, single_session=config.single_session
        )
        self.channel_service = ChannelService(self.session_service)
        app.session_service = self.session_service
        app.channel_service = self.channel_service
        self.commands = default_commands()
        self.sockets: set[HybridSocket] = set()
        self._dirty: list[HybridSocket] = []
        self._flush_call: IDelayedCall | None = None
        self._idle_waiters: list[Deferred[None]] = []

    def build_socket(self, transport: IPomeloTransport) -> HybridSocket:
        """A new connection on C{transport} (already classified as TCP or WebSocket)."""
        socket = HybridSocket(self, transport)
        self.sockets.add(socket)
        return socket

    def socket_closed(self, socket: HybridSocket) -> None:
        """Forget a connection whose transport is gone."""
        self.sockets.discard(socket)
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
            socket.flush()

    def kick_all(self, reason: str = "server shutting down") -> int:
        """Kick every open connection (used on shutdown); return how many."""
        sockets = list(self.sockets)
        for socket in sockets:
            socket.kick(reason)
        return len(sockets)
