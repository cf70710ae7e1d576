from twisted.application.service import ServiceMaker

pomeloConnector = ServiceMaker(
    "Pomelo connector",
    "pomelo_twisted.tap",
    "A Pomelo hybrid connector: raw TCP and WebSocket clients on one port.",
    "pomelo-connector",
)
