from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

pomeloConnector = ServiceMaker(
    "Pomelo connector",
    "pomelo_twisted.ops.tap",
    "A Pomelo hybrid connector: raw TCP and WebSocket clients on one port.",
    "pomelo-connector",
)

pomeloEPoll = Reactor(
    "pomelo-epoll",
    "pomelo_twisted.ops.reactor",
    "epoll without a log context per ready socket (Linux; pomelo-connector's default)",
)
