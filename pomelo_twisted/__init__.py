"""pomelo-twisted: a NetEase Pomelo hybrid connector (TCP + WebSocket on one port) for Twisted.

Everything an embedder or a client user needs is importable from here; the layers behind it
(L{pomelo_twisted.protocol}, L{pomelo_twisted.services}, L{pomelo_twisted.server},
L{pomelo_twisted.ops}, L{pomelo_twisted.client}) are documented in docs/architecture.md.
Typical use::

    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from pomelo_twisted import Application, Connector, ConnectorConfig, PomeloConnectorFactory

    app = Application("connector")

    @app.route("connector.entryHandler.entry")
    def entry(msg, session):
        return {"code": 200}

    connector = Connector(app, reactor, ConnectorConfig(heartbeat=3))
    listening = serverFromString(reactor, "tcp:3010").listen(PomeloConnectorFactory(connector))
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .client import Backoff, PomeloClient
    from .ops.service import ConnectorService
    from .ops.signals import install_shutdown_signals, stop_on_signal
    from .protocol.errors import PomeloError, ProtocolError
    from .server.config import ConnectorConfig
    from .server.connector import Connector
    from .server.hybrid import PomeloConnectorFactory, load_tls_options
    from .server.web import WebSocketAnyPath
    from .services.application import Application, HandlerError, RouteNotFound
    from .services.channel import Channel, ChannelError, ChannelService
    from .services.interfaces import IChannelService, ISessionService
    from .services.session import Session, SessionError, SessionService

#: Where each public name lives. They load on first use, so that importing one layer (say the
#: sans-IO L{pomelo_twisted.protocol}) does not load Twisted through this page.
_WHERE = {
    "Application": ".services.application",
    "Backoff": ".client",
    "Channel": ".services.channel",
    "ChannelError": ".services.channel",
    "ChannelService": ".services.channel",
    "Connector": ".server.connector",
    "ConnectorConfig": ".server.config",
    "ConnectorService": ".ops.service",
    "HandlerError": ".services.application",
    "IChannelService": ".services.interfaces",
    "ISessionService": ".services.interfaces",
    "PomeloClient": ".client",
    "PomeloConnectorFactory": ".server.hybrid",
    "PomeloError": ".protocol.errors",
    "ProtocolError": ".protocol.errors",
    "RouteNotFound": ".services.application",
    "Session": ".services.session",
    "SessionError": ".services.session",
    "SessionService": ".services.session",
    "install_shutdown_signals": ".ops.signals",
    "stop_on_signal": ".ops.signals",
    "WebSocketAnyPath": ".server.web",
    "load_tls_options": ".server.hybrid",
}

__all__ = [
    "Application",
    "Backoff",
    "Channel",
    "ChannelError",
    "ChannelService",
    "Connector",
    "ConnectorConfig",
    "ConnectorService",
    "HandlerError",
    "IChannelService",
    "ISessionService",
    "PomeloClient",
    "PomeloConnectorFactory",
    "PomeloError",
    "ProtocolError",
    "RouteNotFound",
    "Session",
    "SessionError",
    "SessionService",
    "WebSocketAnyPath",
    "__version__",
    "install_shutdown_signals",
    "load_tls_options",
    "stop_on_signal",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
