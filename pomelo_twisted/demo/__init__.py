"""The built-in demo app: Pomelo's HelloWorld template plus one route per connector feature.

``twistd -n pomelo-connector`` serves it when no ``--app`` is given, so that any Pomelo client can
try every feature against a fresh install. Its routes (all ``connector.entryHandler.*``) and its
``config/`` directory match the reference Pomelo server's, byte for byte.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from ..services.application import Application, HandlerError
from ..services.cluster import ClusterError
from ..services.interfaces import ICluster
from ..services.session import Session, SessionError

__all__ = ["CONFIG_DIR", "EntryHandler", "make_app"]

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")


class EntryHandler:
    """The demo's one handler: every public method is a route."""

    def __init__(self, app: Application) -> None:
        self._app = app

    def _cluster(self) -> ICluster:
        assert self._app.cluster is not None  # set by the connector
        return self._app.cluster

    @staticmethod
    def _failed(failure: Failure) -> NoReturn:
        failure.trap(ClusterError)
        raise HandlerError({"code": 500}, failure.getErrorMessage())

    def entry(self, msg: Any, session: Session) -> dict[str, Any]:
        return {"code": 200, "msg": "game server is ok."}

    def echo(self, msg: Any, session: Session) -> Any:
        return msg

    def bind(self, msg: Any, session: Session) -> Deferred[dict[str, Any]]:
        """Bind through C{app.cluster}: under --single-session a uid bound on any live node of
        the cluster is refused."""
        uid = msg.get("uid") if isinstance(msg, dict) else None
        if uid is None:
            raise HandlerError({"code": 500}, "bind needs a uid")

        def refused(failure: Failure) -> NoReturn:
            # SessionError: Pomelo's refusals; TypeError: an empty uid; ClusterError: no Redis
            failure.trap(SessionError, TypeError, ClusterError)
            raise HandlerError({"code": 500}, failure.getErrorMessage())

        d: Deferred[Any] = self._cluster().bind(session, str(uid))
        return d.addCallbacks(lambda _: {"code": 200, "uid": uid}, refused)

    def push(self, msg: Any, session: Session) -> dict[str, Any]:
        session.push_message("onPush", msg)
        return {"code": 200}

    def notify(self, msg: Any, session: Session) -> None:
        session.push_message("onNotify", msg)

    def broadcast(self, msg: Any, session: Session) -> Deferred[dict[str, Any]]:
        """Every session of every node (the local ones even when Redis is unreachable)."""
        d: Deferred[Any] = self._cluster().broadcast("onBroadcast", msg)
        return d.addCallbacks(lambda _: {"code": 200}, self._failed)

    def kick(self, msg: Any, session: Session) -> Deferred[dict[str, Any]]:
        """Kick the uid on every node; answered once every node holding it has acknowledged."""
        body = msg if isinstance(msg, dict) else {}
        uid, reason = body.get("uid"), body.get("reason")
        if uid is None:  # not str(None): that would kick a uid bound as "None"
            return succeed({"code": 200})
        d: Deferred[Any] = self._cluster().kick(
            str(uid), reason if isinstance(reason, str) else "kick"
        )
        return d.addCallbacks(lambda _: {"code": 200}, self._failed)

    def proto(self, msg: Any, session: Session) -> Any:
        return msg


def make_app() -> Application:
    """Build the demo application (server type ``connector``, handler ``entryHandler``)."""
    app = Application("connector", config_dir=CONFIG_DIR)
    app.add_handler_object("entryHandler", EntryHandler(app))
    return app
