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
    serverFromString(reactor, "tcp:3010").listen(PomeloConnectorFactory(connector))
"""

from ._version import __version__
from .client import Backoff, PomeloClient
from .ops.service import ConnectorService
from .protocol.errors import PomeloError, ProtocolError
from .server.config import ConnectorConfig
from .server.connector import Connector
from .server.hybrid import PomeloConnectorFactory, load_tls_options
from .services.application import Application, HandlerError, RouteNotFound
from .services.channel import Channel, ChannelError, ChannelService
from .services.interfaces import IChannelService, ISessionService
from .services.session import Session, SessionError, SessionService

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
    "__version__",
    "load_tls_options",
]
