from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

pomeloConnector = ServiceMaker(
    "Pomelo connector",
    "pomelo_twisted.tap",
    "A Pomelo hybrid connector: raw TCP and WebSocket clients on one port.",
    "pomelo-connector",
)

pomeloEPoll = Reactor(
    "pomelo-epoll",
    "pomelo_twisted.reactor",
    "epoll without a log context per ready socket (Linux; pomelo-connector's default)",
)
