# The chat app of embed_app.py as a twistd application, with the same shutdown behaviour as
# "twistd pomelo-connector": stop listening, kick every client with stop_reason, wait for them.
#
#     cd examples && PYTHONPATH=. twistd -ny embed_app.tac
#
from twisted.application import service
from twisted.internet import reactor

from embed_app import make_app
from pomelo_twisted import Connector, ConnectorConfig, ConnectorService, PomeloConnectorFactory

connector = Connector(make_app(), reactor, ConnectorConfig(heartbeat=10, single_session=True))
factory = PomeloConnectorFactory(connector)

application = service.Application("chat")
ConnectorService(
    factory, ["tcp:3010"], reactor, stop_reason="maintenance", drain_timeout=3.0
).setServiceParent(application)
