"""The built-in demo app: Pomelo's HelloWorld template plus one route per connector feature.

``twistd -n pomelo-connector`` serves it when no ``--app`` is given, so that any Pomelo client can
try every feature against a fresh install. Its routes (all ``connector.entryHandler.*``) and its
``config/`` directory match the reference Pomelo server's, byte for byte.
"""

from __future__ import annotations

import os
from typing import Any

from ..services.application import Application, HandlerError
from ..services.session import Session, SessionError

__all__ = ["CONFIG_DIR", "EntryHandler", "make_app"]

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")


class EntryHandler:
    """The demo's one handler: every public method is a route."""

    def __init__(self, app: Application) -> None:
        self._app = app

    def entry(self, msg: Any, session: Session) -> dict[str, Any]:
        return {"code": 200, "msg": "game server is ok."}

    def echo(self, msg: Any, session: Session) -> Any:
        return msg

    def bind(self, msg: Any, session: Session) -> dict[str, Any]:
        uid = msg.get("uid") if isinstance(msg, dict) else None
        if uid is None:
            raise HandlerError({"code": 500}, "bind needs a uid")
        try:
            session.bind(str(uid))
        except (SessionError, TypeError) as e:  # TypeError: an empty uid
            raise HandlerError({"code": 500}, str(e)) from e
        return {"code": 200, "uid": uid}

    def push(self, msg: Any, session: Session) -> dict[str, Any]:
        session.push("onPush", msg)
        return {"code": 200}

    def notify(self, msg: Any, session: Session) -> None:
        session.push("onNotify", msg)

    def broadcast(self, msg: Any, session: Session) -> dict[str, Any]:
        self._app.channels.broadcast("onBroadcast", msg)
        return {"code": 200}

    def kick(self, msg: Any, session: Session) -> dict[str, Any]:
        body = msg if isinstance(msg, dict) else {}
        uid, reason = body.get("uid"), body.get("reason")
        if uid is not None:  # not str(None): that would kick a uid bound as "None"
            self._app.sessions.kick(str(uid), reason if isinstance(reason, str) else "kick")
        return {"code": 200}

    def proto(self, msg: Any, session: Session) -> Any:
        return msg


def make_app() -> Application:
    """Build the demo application (server type ``connector``, handler ``entryHandler``)."""
    app = Application("connector", config_dir=CONFIG_DIR)
    app.add_handler_object("entryHandler", EntryHandler(app))
    return app
