"""A Pomelo client for Twisted, over raw TCP or WebSocket (bots, load scripts, tools, tests).

The sans-IO core and its events live in L{pomelo_twisted.protocol.client}; this package adds
transports, timers, Deferreds and reconnection. It imports the protocol and adapters layers
only, never the server.
"""

from ..protocol.client import (
    CLIENT_TYPE,
    ClientError,
    ClientEvent,
    ClientState,
    ConnectionClosed,
    HandshakeCompleted,
    HandshakeFailed,
    HandshakeRefused,
    HandshakeTimeout,
    HeartbeatReceived,
    HeartbeatTimeout,
    Kicked,
    KickReceived,
    MessageUndecodable,
    NotConnected,
    PomeloClientConnection,
    ProtocolViolated,
    PushReceived,
    RequestTimeout,
    ResponseReceived,
)
from .backoff import Backoff
from .client import DEFAULT, PomeloClient
from .tcp import PomeloClientProtocol
from .websocket import PomeloClientWebSocketFactory, PomeloClientWebSocketProtocol

__all__ = [
    "CLIENT_TYPE",
    "DEFAULT",
    "Backoff",
    "ClientError",
    "ClientEvent",
    "ClientState",
    "ConnectionClosed",
    "HandshakeCompleted",
    "HandshakeFailed",
    "HandshakeRefused",
    "HandshakeTimeout",
    "HeartbeatReceived",
    "HeartbeatTimeout",
    "KickReceived",
    "Kicked",
    "MessageUndecodable",
    "NotConnected",
    "PomeloClient",
    "PomeloClientConnection",
    "PomeloClientProtocol",
    "PomeloClientWebSocketFactory",
    "PomeloClientWebSocketProtocol",
    "ProtocolViolated",
    "PushReceived",
    "RequestTimeout",
    "ResponseReceived",
]
