"""``twistd pomelo-connector``: options and service construction.

With no options it serves the built-in demo app on ``tcp:3010`` with heartbeat 3 s, the route
dictionary and pomelo-protobuf on, as the Pomelo template does.
"""

from __future__ import annotations

import importlib
import os
import sys

from twisted.application.service import IService
from twisted.python import usage

from ..server.config import ConnectorConfig
from ..server.limits import parse_network, read_blocklist_file
from ..services.application import Application

__all__ = ["Options", "load_app", "makeService"]

_DEFAULTS = ConnectorConfig()


def _seconds(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _rate(value: str) -> float:
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
        "tcp:3010:interface=127.0.0.1, ssl:3011:privateKey=key.pem:certKey=cert.pem. "
        "Every limit is described in docs/security.md; a limit of 0 turns it off. "
        "Unless twistd was given a reactor (twistd -r NAME), it runs on pomelo-epoll, "
        "Twisted's epoll reactor without a log context per ready socket (Linux; "
        "docs/performance.md says why)."
    )
    optFlags = [
        ["no-dict", None, "Turn the route dictionary off (Pomelo's useDict: false)."],
        ["no-protobuf", None, "Turn pomelo-protobuf bodies off (Pomelo's useProtobuf: false)."],
        ["single-session", None, "Allow at most one session per uid (singleSession)."],
        [
            "use-crypto",
            None,
            "Require RSA-signed client messages (Pomelo's useCrypto); a handshake without a "
            "usable sys.rsa is refused with code 500, a badly signed message is dropped.",
        ],
    ]
    optParameters = [
        [
            "rsa-max-modulus-bits",
            None,
            _DEFAULTS.rsa_max_modulus_bits,
            "Largest client RSA modulus accepted with --use-crypto, in bits.",
            int,
        ],
        [
            "app",
            "a",
            None,
            "The app to serve, as 'package.module:factory'; factory() returns an "
            "pomelo_twisted.Application. Default: the built-in demo app.",
        ],
        [
            "config",
            "c",
            None,
            "A Pomelo config/ directory (dictionary.json, clientProtos.json, serverProtos.json); "
            "overrides the app's own.",
        ],
        [
            "heartbeat",
            None,
            _DEFAULTS.heartbeat,
            "Heartbeat interval in whole seconds advertised to clients; 0 turns heartbeats off.",
            int,
        ],
        [
            "heartbeat-timeout",
            None,
            None,
            "Seconds without a client heartbeat before a working connection is closed "
            "(default, or 0: twice the heartbeat).",
            _seconds,
        ],
        [
            "max-package-size",
            None,
            _DEFAULTS.max_package_size,
            "Largest inbound package body in bytes, checked on the header; a larger one aborts "
            "the connection (WebSocket: close 1009).",
            int,
        ],
        [
            "max-handshake-size",
            None,
            _DEFAULTS.max_handshake_size,
            "Largest handshake body in bytes; a larger one aborts the connection.",
            int,
        ],
        [
            "max-http-head-size",
            None,
            _DEFAULTS.max_http_head_size,
            "Largest HTTP request head before a WebSocket upgrade, in bytes; a larger one is "
            "answered 431 and closed.",
            int,
        ],
        [
            "max-outbound-buffer",
            None,
            _DEFAULTS.max_outbound_buffer,
            "Bytes that may queue for a client that has stopped reading (after the transport's "
            "own 64 KiB); past it the connection is aborted (0: no limit).",
            _count,
        ],
        [
            "max-connections",
            None,
            _DEFAULTS.max_connections,
            "Open connections on all ports together; a new one over it is closed at once "
            "(0: no limit).",
            _count,
        ],
        [
            "max-connections-per-ip",
            None,
            _DEFAULTS.max_connections_per_ip,
            "Open connections from one IPv4 address or IPv6 /64; a new one over it is closed at "
            "once (0: no limit).",
            _count,
        ],
        [
            "max-requests-per-second",
            None,
            _DEFAULTS.max_requests_per_second,
            "Sustained requests and notifies per connection; a request over it is answered "
            '{"code":429}, a notify over it dropped, and the connection is not read until its '
            "bucket has refilled; WebSocket pings and pongs have a bucket of their own at this "
            "rate, and a client over it is aborted (0: no limit).",
            _rate,
        ],
        [
            "request-burst",
            None,
            _DEFAULTS.request_burst,
            "Requests a connection may send at once before --max-requests-per-second applies.",
            int,
        ],
        [
            "max-requests-per-second-per-ip",
            None,
            _DEFAULTS.max_requests_per_second_per_ip,
            "Sustained requests and notifies of all the connections of one IPv4 address or IPv6 "
            "/64 together, in bursts of twice as many; over it, as over "
            "--max-requests-per-second (0: no limit).",
            _rate,
        ],
        [
            "rate-limit-close-after",
            None,
            _DEFAULTS.rate_limit_close_after,
            "Seconds a connection may keep going back over a request rate as soon as it is "
            "read again before it is aborted (0: never).",
            _seconds,
        ],
        [
            "blocklist-file",
            None,
            None,
            "A file of addresses and CIDR networks to refuse, one per line (# comments); re-read "
            "every 5 s while running, so edits apply to new connections without a restart.",
        ],
        [
            "tls-key",
            None,
            None,
            "With --tls-cert: a PEM private key; every tcp: listener then takes TLS clients "
            "(raw TCP over TLS, wss://) as well as plain ones, told apart by the first byte.",
        ],
        [
            "tls-cert",
            None,
            None,
            "With --tls-key: the PEM certificate, optionally followed by its chain.",
        ],
        [
            "handshake-timeout",
            None,
            _DEFAULTS.handshake_timeout,
            "Seconds a new connection has to send its handshake (0: no limit).",
            _seconds,
        ],
        [
            "ack-timeout",
            None,
            _DEFAULTS.ack_timeout,
            "Seconds a client has to acknowledge the handshake (0: no limit).",
            _seconds,
        ],
        [
            "first-byte-timeout",
            None,
            _DEFAULTS.first_byte_timeout,
            "Seconds a new connection has to send its first byte (0: no limit).",
            _seconds,
        ],
        ["server-id", None, _DEFAULTS.server_id, "This frontend server's id."],
        [
            "shutdown-reason",
            None,
            "server shutting down",
            "Kick reason sent to every client when the server stops (SIGTERM).",
        ],
        [
            "drain-timeout",
            None,
            None,
            "Seconds to wait on shutdown for kicked clients to go before exiting (default: "
            f"{_DEFAULTS.kick_close_timeout:g}, the time after which a kicked client that "
            "lingers is cut off).",
            _seconds,
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics and a health check at /healthz on this "
            "endpoint, e.g. tcp:9100:interface=127.0.0.1 (docs/operations.md).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["block"] = []

    def opt_listen(self, description: str) -> None:
        """Listen on this endpoint (repeatable; default tcp:3010)."""
        self["listen"].append(description)

    opt_l = opt_listen

    def opt_block(self, entry: str) -> None:
        """Refuse connections from this address or network, e.g. 10.0.0.0/8 (repeatable)."""
        try:
            parse_network(entry)
        except ValueError as e:
            raise usage.UsageError(f"--block {entry!r}: {e}") from None
        self["block"].append(entry)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = ["tcp:3010"]
        if self["rsa-max-modulus-bits"] < 512:
            raise usage.UsageError("--rsa-max-modulus-bits must be at least 512")
        if self["heartbeat"] < 0:
            raise usage.UsageError("--heartbeat must be 0 or more whole seconds")
        if not 1 <= self["max-package-size"] <= 0xFFFFFF:
            raise usage.UsageError("--max-package-size must be between 1 and 16777215")
        if self["max-handshake-size"] < 1:
            raise usage.UsageError("--max-handshake-size must be at least 1")
        if self["max-http-head-size"] < 32:
            raise usage.UsageError("--max-http-head-size must be at least 32")
        if self["request-burst"] < 1:
            raise usage.UsageError("--request-burst must be at least 1")
        if self["config"] is not None and not os.path.isdir(self["config"]):
            raise usage.UsageError(f"--config {self['config']!r} is not a directory")
        path = self["blocklist-file"]
        if path is not None:
            try:
                _, errors = read_blocklist_file(path)
            except OSError as e:
                raise usage.UsageError(f"--blocklist-file: {e}") from None
            if errors:
                raise usage.UsageError("--blocklist-file: " + "; ".join(errors))
        if (self["tls-key"] is None) != (self["tls-cert"] is None):
            raise usage.UsageError("--tls-key and --tls-cert go together")
        if self["tls-key"] is not None:
            from ..server.hybrid import load_tls_options

            try:
                self["tls"] = load_tls_options(self["tls-key"], self["tls-cert"])
            except (OSError, ValueError) as e:
                raise usage.UsageError(f"--tls-key/--tls-cert: {e}") from None
        else:
            self["tls"] = None

    def connector_config(self) -> ConnectorConfig:
        """The L{ConnectorConfig} these options describe."""
        return ConnectorConfig(
            use_crypto=bool(self["use-crypto"]),
            rsa_max_modulus_bits=self["rsa-max-modulus-bits"],
            heartbeat=self["heartbeat"],
            heartbeat_timeout=self["heartbeat-timeout"],
            use_dict=not self["no-dict"],
            use_protobuf=not self["no-protobuf"],
            max_package_size=self["max-package-size"],
            max_handshake_size=self["max-handshake-size"],
            max_http_head_size=self["max-http-head-size"],
            max_outbound_buffer=self["max-outbound-buffer"] or None,
            max_connections=self["max-connections"] or None,
            max_connections_per_ip=self["max-connections-per-ip"] or None,
            max_requests_per_second=self["max-requests-per-second"] or None,
            request_burst=self["request-burst"],
            max_requests_per_second_per_ip=self["max-requests-per-second-per-ip"] or None,
            rate_limit_close_after=self["rate-limit-close-after"] or None,
            blocklist=tuple(self["block"]),
            handshake_timeout=self["handshake-timeout"] or None,
            ack_timeout=self["ack-timeout"] or None,
            first_byte_timeout=self["first-byte-timeout"] or None,
            single_session=bool(self["single-session"]),
            server_id=self["server-id"],
        )


def load_app(spec: str | None) -> Application:
    """Import and call an app factory named ``module:callable`` (the demo app for C{None})."""
    if spec is None:
        from ..demo import make_app

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


def _install_default_reactor() -> None:
    """Install pomelo-epoll unless a reactor is installed already (twistd -r, trial, a host).

    twistd imports the reactor only after building the service, so an explicit choice
    (C{twistd -r NAME}) has been installed by now and is kept; so is any reactor of a program
    that calls L{makeService} itself.
    """
    if "twisted.internet.reactor" in sys.modules:
        return
    try:
        from .reactor import install
    except ImportError:  # no epoll here: twistd's default reactor it is
        return
    install()


def makeService(options: Options) -> IService:
    """Build the connector service (installing pomelo-epoll if no reactor is chosen yet)."""
    _install_default_reactor()
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from ..server.connector import Connector
    from ..server.hybrid import PomeloConnectorFactory
    from .service import ConnectorService

    app = load_app(options["app"])
    if options["config"] is not None:
        app.config_dir = options["config"]
    metrics = options["metrics"]
    if metrics is not None:
        try:
            serverFromString(reactor, metrics)
        except ValueError as e:
            raise usage.UsageError(f"bad --metrics description: {e}") from e
    connector = Connector(app, reactor, options.connector_config())
    factory = PomeloConnectorFactory(connector, tls=options.get("tls"))
    try:
        return ConnectorService(
            factory,
            options["listen"],
            reactor,
            stop_reason=options["shutdown-reason"],
            drain_timeout=options["drain-timeout"],  # None: the connector's kick_close_timeout
            blocklist_file=options["blocklist-file"],
            metrics_endpoint=metrics,
        )
    except ValueError as e:
        raise usage.UsageError(f"bad --listen description: {e}") from e
