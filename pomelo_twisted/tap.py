"""``twistd pomelo-connector``: options and service construction.

With no options it serves the built-in demo app on ``tcp:3010`` with heartbeat 3 s, the route
dictionary and pomelo-protobuf on, as the Pomelo template does.
"""

from __future__ import annotations

import importlib
import os

from twisted.application.service import IService
from twisted.python import usage

from .application import Application
from .config import ConnectorConfig

__all__ = ["Options", "load_app", "makeService"]

_DEFAULTS = ConnectorConfig()


def _seconds(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


class Options(usage.Options):
    """Command-line options of the ``pomelo-connector`` twistd plugin."""

    synopsis = "[options]"
    longdesc = (
        "Serve Pomelo clients (raw TCP and WebSocket on the same port) with a Python app. "
        "Without --app, the built-in demo app is served (routes connector.entryHandler.*). "
        "Listening addresses are Twisted endpoint strings, e.g. tcp:3010, "
        "tcp:3010:interface=127.0.0.1, ssl:3011:privateKey=key.pem:certKey=cert.pem."
    )
    optFlags = [
        ["no-dict", None, "Turn the route dictionary off (Pomelo's useDict: false)."],
        ["no-protobuf", None, "Turn pomelo-protobuf bodies off (Pomelo's useProtobuf: false)."],
        ["single-session", None, "Allow at most one session per uid (singleSession)."],
    ]
    optParameters = [
        ["app", "a", None,
         "The app to serve, as 'package.module:factory'; factory() returns an "
         "pomelo_twisted.Application. Default: the built-in demo app."],
        ["config", "c", None,
         "A Pomelo config/ directory (dictionary.json, clientProtos.json, serverProtos.json); "
         "overrides the app's own."],
        ["heartbeat", None, _DEFAULTS.heartbeat,
         "Heartbeat interval in whole seconds advertised to clients; 0 turns heartbeats off.",
         int],
        ["heartbeat-timeout", None, None,
         "Seconds without a client heartbeat before a working connection is closed "
         "(default, or 0: twice the heartbeat).", _seconds],
        ["max-package-size", None, _DEFAULTS.max_package_size,
         "Largest inbound package body in bytes; a larger header closes the connection.", int],
        ["handshake-timeout", None, _DEFAULTS.handshake_timeout,
         "Seconds a new connection has to send its handshake (0: no limit).", _seconds],
        ["ack-timeout", None, _DEFAULTS.ack_timeout,
         "Seconds a client has to acknowledge the handshake (0: no limit).", _seconds],
        ["first-byte-timeout", None, _DEFAULTS.first_byte_timeout,
         "Seconds a new connection has to send its first byte (0: no limit).", _seconds],
        ["server-id", None, _DEFAULTS.server_id, "This frontend server's id."],
        ["shutdown-reason", None, "server shutting down",
         "Kick reason sent to every client when the server stops (SIGTERM)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """Listen on this endpoint (repeatable; default tcp:3010)."""
        self["listen"].append(description)

    opt_l = opt_listen

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = ["tcp:3010"]
        if self["heartbeat"] < 0:
            raise usage.UsageError("--heartbeat must be 0 or more whole seconds")
        if not 1 <= self["max-package-size"] <= 0xFFFFFF:
            raise usage.UsageError("--max-package-size must be between 1 and 16777215")
        if self["config"] is not None and not os.path.isdir(self["config"]):
            raise usage.UsageError(f"--config {self['config']!r} is not a directory")

    def connector_config(self) -> ConnectorConfig:
        """The L{ConnectorConfig} these options describe."""
        return ConnectorConfig(
            heartbeat=self["heartbeat"],
            heartbeat_timeout=self["heartbeat-timeout"],
            use_dict=not self["no-dict"],
            use_protobuf=not self["no-protobuf"],
            max_package_size=self["max-package-size"],
            handshake_timeout=self["handshake-timeout"] or None,
            ack_timeout=self["ack-timeout"] or None,
            first_byte_timeout=self["first-byte-timeout"] or None,
            single_session=bool(self["single-session"]),
            server_id=self["server-id"],
        )


def load_app(spec: str | None) -> Application:
    """Import and call an app factory named ``module:callable`` (the demo app for C{None})."""
    if spec is None:
        from .demo import make_app

        return make_app()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise usage.UsageError(f"--app {spec!r} must look like 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise usage.UsageError(f"--app {spec!r} cannot be loaded: {e}") from e
    app = factory()
    if not isinstance(app, Application):
        raise usage.UsageError(f"--app {spec!r} returned {type(app).__name__}, not Application")
    return app


def makeService(options: Options) -> IService:
    """Build the connector service; twistd has installed the reactor by now."""
    from twisted.internet import reactor

    from .connector import Connector
    from .hybrid import PomeloConnectorFactory
    from .service import ConnectorService

    app = load_app(options["app"])
    if options["config"] is not None:
        app.config_dir = options["config"]
    connector = Connector(app, reactor, options.connector_config())
    factory = PomeloConnectorFactory(connector)
    try:
        return ConnectorService(
            factory, options["listen"], reactor, stop_reason=options["shutdown-reason"]
        )
    except ValueError as e:
        raise usage.UsageError(f"bad --listen description: {e}") from e


