"""A Pomelo chat room inside an ordinary Twisted program.

It shows the embedding API of pomelo-twisted (see docs/embedding.md):

  - an Application with two routes, a push to one session and a channel;
  - a Connector and a PomeloConnectorFactory listening on an endpoint of our own
    (raw TCP and WebSocket Pomelo clients on one port);
  - the same connector behind a twisted.web site: WebSocket upgrades at any path (Pomelo's
    browser client opens ws://host:port, with no path), the site's pages for the rest;
  - a clean shutdown: stop listening, kick the clients, wait for them to go.

Run it from the project root (Ctrl-C stops it):

    python examples/embed_app.py                 # Pomelo on tcp:3010, web on tcp:8080
    python examples/embed_app.py tcp:13999 tcp:18080

Routes (server type "chat"):

    chat.roomHandler.enter  {"uid": "alice"}  binds the session to the uid, joins the room;
                            the caller gets an "onWelcome" push, the others an "onJoin" push
    chat.roomHandler.send   {"text": "hi"}    pushes "onChat" {"from", "text"} to the room
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from pomelo_twisted import (
    Application,
    Connector,
    ConnectorConfig,
    HandlerError,
    PomeloConnectorFactory,
    Session,
    SessionError,
    WebSocketAnyPath,
)

ROOM = "lobby"


def make_app() -> Application:
    """The chat application: routes are registered before the Connector is built."""
    app = Application("chat")  # routes are chat.<handler>.<method>

    @app.route("chat.roomHandler.enter")
    def enter(msg: Any, session: Session) -> dict[str, Any]:
        if session.uid is not None:
            return {"code": 200, "uid": session.uid}  # already in the room
        uid = msg.get("uid") if isinstance(msg, dict) else None
        if not isinstance(uid, str) or not uid:
            raise HandlerError({"code": 400, "error": "uid required"})
        try:
            session.bind(uid)  # fails if another session holds uid (single_session below)
        except SessionError as e:
            raise HandlerError({"code": 409, "error": str(e)}) from e

        channel = app.channels.create_channel(ROOM)
        channel.push_message("onJoin", {"uid": uid})  # to those already in the room
        channel.add(uid)
        session.push_message("onWelcome", {"members": channel.get_members()})

        def left(session: Session, reason: Any) -> None:
            channel.leave(uid)
            channel.push_message("onLeave", {"uid": uid})

        session.on("closed", left)
        return {"code": 200, "uid": uid}

    @app.route("chat.roomHandler.send")
    def send(msg: Any, session: Session) -> dict[str, Any]:
        if session.uid is None:
            raise HandlerError({"code": 401, "error": "enter first"})
        text = msg.get("text") if isinstance(msg, dict) else None
        channel = app.channels.get_channel(ROOM)
        if channel is not None:
            channel.push_message("onChat", {"from": session.uid, "text": text})
        return {"code": 200}

    return app


async def main(
    reactor: Any, pomelo_endpoint: str = "tcp:3010", web_endpoint: str = "tcp:8080"
) -> None:
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])

    config = ConnectorConfig(heartbeat=10, use_protobuf=False, single_session=True)
    connector = Connector(make_app(), reactor, config)
    factory = PomeloConnectorFactory(connector)

    # 1. A port of its own: raw TCP and WebSocket Pomelo clients.
    pomelo_port = await serverFromString(reactor, pomelo_endpoint).listen(factory)

    # 2. The same connector behind a web site: a WebSocket upgrade at any path reaches it
    #    (ws://host:8080, ws://host:8080/pomelo, ...); other requests get the site's pages.
    root = Resource()
    root.putChild(b"", Data(b"chat server\n", "text/plain"))
    site = Site(WebSocketAnyPath(factory.wsFactory, root))
    web_port = await serverFromString(reactor, web_endpoint).listen(site)

    # 3. On shutdown (Ctrl-C, SIGTERM): stop listening, kick every client, give them 3 s to go.
    async def drain() -> None:
        await pomelo_port.stopListening()
        await web_port.stopListening()
        connector.kick_all("server shutting down")
        await connector.wait_closed(3.0)

    reactor.addSystemEventTrigger("before", "shutdown", lambda: ensureDeferred(drain()))
    await Deferred()  # serve until the reactor stops


if __name__ == "__main__":
    react(lambda reactor: ensureDeferred(main(reactor, *sys.argv[1:3])))
