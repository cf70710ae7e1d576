"""pomelo-twisted: a NetEase Pomelo hybrid connector (TCP + WebSocket on one port) for Twisted.

The sans-IO protocol core (L{package}, L{message}, L{dictionary}, L{protobuf}, L{codec},
L{connection}, L{handshake}) knows nothing of sockets or reactors; the Twisted layer
(L{socket}, L{commands}, L{connector}, L{tcp}, L{websocket}, L{hybrid}, L{service}, L{tap}) is
thin. Typical use::

    app = Application("connector", config_dir="config")

    @app.route("connector.entryHandler.entry")
    def entry(msg, session):
        return {"code": 200}

    connector = Connector(app, reactor, ConnectorConfig(heartbeat=3))
    serverFromString(reactor, "tcp:3010").listen(PomeloConnectorFactory(connector))
"""

from ._version import __version__
from .application import Application, HandlerError
from .config import ConnectorConfig

__all__ = ["Application", "ConnectorConfig", "HandlerError", "__version__"]
