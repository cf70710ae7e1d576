"""``twistd pomelo-connector``: options and service construction.

With no options it serves the built-in demo app on ``tcp:3010``, to this machine only, with
heartbeat 3 s, the route dictionary and pomelo-protobuf on, as the Pomelo template does.

Every mistake on the command line ends the process with one line naming the option (or the
file) and what is wrong, and exit status 1: options are checked as they are parsed, and the
rest (the app, the config directory, the endpoints) when the service is built.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeVar

from twisted.application.service import IService
from twisted.logger import LogLevel
from twisted.python import usage

from ..protocol.errors import PomeloError
from ..server.config import ConnectorConfig
from ..server.limits import parse_network, read_blocklist_file
from ..services.application import Application
from .endpoints import split_endpoint

__all__ = ["Options", "load_app", "makeService"]

_DEFAULTS = ConnectorConfig()

#: Where the demo listens when no --app and no --listen are given: it is for trying, so only
#: this machine can reach it until --listen says otherwise.
DEMO_LISTEN = "tcp:3010:interface=127.0.0.1"

#: The values of --connection-log-level: the level of the line logged for every closed
#: connection ("none": not logged).
CONNECTION_LOG_LEVELS: Final = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "none": None,
}


def _whole(option: str, minimum: int = 0, maximum: int | None = None) -> Callable[[str], int]:
    """A coerce function for a whole number in [minimum, maximum]; its error names C{option}."""
    if maximum is not None:
        bounds = f"between {minimum} and {maximum}"
    else:
        bounds = "0 or more" if minimum == 0 else f"{minimum} or more"

    def coerce(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < minimum or (maximum is not None and number > maximum):
            raise usage.UsageError(f"--{option} {value!r}: must be a whole number {bounds}")
        return number

    coerce.coerceDoc = f"A whole number {bounds}."  # type: ignore[attr-defined]
    return coerce


def _number(option: str, what: str) -> Callable[[str], float]:
    """A coerce function for a finite number, 0 or more, of C{what}; its error names C{option}."""

    def coerce(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0:
            raise usage.UsageError(f"--{option} {value!r}: must be a number of {what}, 0 or more")
        return number

    coerce.coerceDoc = f"A number of {what}, 0 or more."  # type: ignore[attr-defined]
    return coerce


def _choice(option: str, choices: Iterable[str]) -> Callable[[str], str]:
    """A coerce function accepting one of C{choices}; its error names C{option}."""
    names = tuple(choices)

    def coerce(value: str) -> str:
        if value not in names:
            raise usage.UsageError(f"--{option} {value!r}: must be one of {', '.join(names)}")
        return value

    coerce.coerceDoc = f"One of: {', '.join(names)}."  # type: ignore[attr-defined]
    return coerce


_F = TypeVar("_F", bound=Callable[..., Any])


def _one_line_help(method: _F) -> _F:
    """twistd prints an C{opt_} method's docstring as its help, line breaks and indents
    included: fold it to one line."""
    method.__doc__ = " ".join((method.__doc__ or "").split())
    return method


class Options(usage.Options):
    """Command-line options of the ``pomelo-connector`` twistd plugin."""

    synopsis = "[options]"
    longdesc = (
        "Serve Pomelo clients (raw TCP and WebSocket on the same port) with a Python app. "
        "Without --app, the built-in demo app is served (routes connector.entryHandler.*), "
        "for this machine only (tcp:3010:interface=127.0.0.1) unless --listen says otherwise. "
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
        [
            "single-session",
            None,
            "Allow at most one session per uid (singleSession): a second bind is refused; "
            "with --redis, on every node of the cluster.",
        ],
        [
            "kick-old",
            None,
            "A second login of a uid kicks the old session(s) instead (with --redis, on every "
            "node); apps bind through app.cluster.bind.",
        ],
        [
            "healthz-requires-redis",
            None,
            "With --redis and --metrics, /healthz answers 503 while Redis is unreachable (by "
            "default 200, with the cluster's state on a second line).",
        ],
        [
            "cluster-mixed-versions",
            None,
            "With --redis, join even if a live node serves other routes, dictionary or protos "
            "(by default such a node is refused at start: the nodes forward each other's "
            "encoded pushes).",
        ],
        [
            "no-disconnect-on-timeout",
            None,
            "Keep a connection whose heartbeat timeout passes, logging it (Pomelo's "
            "disconnectOnTimeout: false); by default it is closed.",
        ],
        [
            "proxy-protocol",
            None,
            "Connections from a --trusted-proxy must start with a PROXY protocol header (v1 or "
            "v2, e.g. HAProxy's send-proxy-v2) naming the client; other peers may connect "
            "directly but not send one. Applies to every --listen port.",
        ],
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
            _whole("rsa-max-modulus-bits", 512),
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
            _whole("heartbeat"),
        ],
        [
            "heartbeat-timeout",
            None,
            None,
            "Seconds without a client heartbeat before a working connection is closed "
            "(default, or 0: twice the heartbeat)",
            _number("heartbeat-timeout", "seconds"),
        ],
        [
            "max-package-size",
            None,
            _DEFAULTS.max_package_size,
            "Largest inbound package body in bytes, checked on the header; a larger one aborts "
            "the connection (WebSocket: close 1009).",
            _whole("max-package-size", 1, 0xFFFFFF),
        ],
        [
            "max-handshake-size",
            None,
            _DEFAULTS.max_handshake_size,
            "Largest handshake body in bytes; a larger one aborts the connection.",
            _whole("max-handshake-size", 1),
        ],
        [
            "max-http-head-size",
            None,
            _DEFAULTS.max_http_head_size,
            "Largest HTTP request head before a WebSocket upgrade, in bytes; a larger one is "
            "answered 431 and closed.",
            _whole("max-http-head-size", 32),
        ],
        [
            "max-outbound-buffer",
            None,
            _DEFAULTS.max_outbound_buffer,
            "Bytes that may queue for a client that has stopped reading (after the transport's "
            "own 64 KiB); past it the connection is aborted (0: no limit).",
            _whole("max-outbound-buffer"),
        ],
        [
            "max-connections",
            None,
            _DEFAULTS.max_connections,
            "Open connections on all ports together; a new one over it is aborted at once "
            "(0: no limit).",
            _whole("max-connections"),
        ],
        [
            "max-connections-per-ip",
            None,
            _DEFAULTS.max_connections_per_ip,
            "Open connections from one IPv4 address or IPv6 /64; a new one over it is aborted "
            "at once (0: no limit).",
            _whole("max-connections-per-ip"),
        ],
        [
            "max-requests-per-second",
            None,
            _DEFAULTS.max_requests_per_second,
            "Sustained requests and notifies per connection; a request over it is answered "
            '{"code":429}, a notify over it dropped, and the connection is not read until its '
            "bucket has refilled; WebSocket pings and pongs have a bucket of their own at this "
            "rate, and a client over it is aborted (0: no limit).",
            _number("max-requests-per-second", "requests per second"),
        ],
        [
            "request-burst",
            None,
            _DEFAULTS.request_burst,
            "Requests a connection may send at once before --max-requests-per-second applies.",
            _whole("request-burst", 1),
        ],
        [
            "max-requests-per-second-per-ip",
            None,
            _DEFAULTS.max_requests_per_second_per_ip,
            "Sustained requests and notifies of all the connections of one IPv4 address or IPv6 "
            "/64 together, in bursts of twice as many; over it, as over "
            "--max-requests-per-second (0: no limit).",
            _number("max-requests-per-second-per-ip", "requests per second"),
        ],
        [
            "rate-limit-close-after",
            None,
            _DEFAULTS.rate_limit_close_after,
            "Seconds a connection may keep going back over a request rate as soon as it is "
            "read again before it is aborted (0: never).",
            _number("rate-limit-close-after", "seconds"),
        ],
        [
            "blocklist-file",
            None,
            None,
            "A file of addresses and CIDR networks to refuse, one per line (# comments); re-read "
            "every 5 s while running, so edits apply to new connections without a restart.",
        ],
        [
            "forwarded-header",
            None,
            "x-forwarded-for",
            "The header a --trusted-proxy (an HTTP proxy) writes a WebSocket client's address "
            "into: x-forwarded-for, forwarded (RFC 7239) or none.",
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
            _number("handshake-timeout", "seconds"),
        ],
        [
            "ack-timeout",
            None,
            _DEFAULTS.ack_timeout,
            "Seconds a client has to acknowledge the handshake (0: no limit).",
            _number("ack-timeout", "seconds"),
        ],
        [
            "first-byte-timeout",
            None,
            _DEFAULTS.first_byte_timeout,
            "Seconds a new connection has to send its first byte (0: no limit).",
            _number("first-byte-timeout", "seconds"),
        ],
        ["server-id", None, _DEFAULTS.server_id, "This frontend server's id."],
        [
            "connection-log-level",
            None,
            "info",
            "The level of the line logged for every closed connection: debug, info, or none "
            "(at thousands of connections, debug or none keeps the log readable).",
            _choice("connection-log-level", CONNECTION_LOG_LEVELS),
        ],
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
            "lingers is cut off). A second SIGTERM or SIGINT stops the wait",
            _number("drain-timeout", "seconds"),
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics and a health check at /healthz on this "
            "endpoint, e.g. tcp:9100:interface=127.0.0.1 (docs/operations.md).",
        ],
        # Cluster mode (docs/cluster.md)
        [
            "redis",
            None,
            None,
            "Cluster mode: act as one server with every connector sharing this Redis, "
            "redis://[user@]host:port/db, rediss:// (TLS) or unix:///path/redis.sock?db=N. "
            "Redis must be private.",
        ],
        [
            "redis-password-file",
            None,
            None,
            "A file whose first line is the Redis password (never put it on the command line).",
        ],
        [
            "redis-ca",
            None,
            None,
            "With rediss://, a PEM file of the certificate authority (or the self-signed "
            "certificate) to trust for Redis, instead of the system's trusted roots.",
        ],
        [
            "redis-prefix",
            None,
            "pomelo",
            "Prefix of every Redis key and channel: clusters sharing a Redis need distinct ones.",
        ],
        [
            "cluster-heartbeat",
            None,
            2.0,
            "Seconds between node liveness refreshes; a node silent 3 times that is reaped.",
            _number("cluster-heartbeat", "seconds"),
        ],
        [
            "cluster-timeout",
            None,
            2.0,
            "Seconds any Redis call or kick acknowledgement may take before it fails.",
            _number("cluster-timeout", "seconds"),
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["block"] = []
        self["trusted-proxy"] = []

    @_one_line_help
    def opt_listen(self, description: str) -> None:
        """Listen on this endpoint (repeatable). Default: tcp:3010, or for the demo app
        tcp:3010:interface=127.0.0.1 (this machine only). An endpoint without backlog= (tcp:,
        tcp6:, ssl:, unix:, reuseport:) gets backlog=511. With
        reuseport:PORT[:interface=IP][:backlog=N], several connector processes share one port,
        the kernel spreading new connections among them (docs/operations.md); TLS sniffing
        (--tls-key) works there as on tcp:."""
        self["listen"].append(_endpoint("listen", description))

    opt_l = opt_listen

    def opt_block(self, entry: str) -> None:
        """Refuse connections from this address or network, e.g. 10.0.0.0/8 (repeatable)."""
        try:
            parse_network(entry)
        except ValueError as e:
            raise usage.UsageError(f"--block {entry!r}: {e}") from None
        self["block"].append(entry)

    @_one_line_help
    def opt_trusted_proxy(self, entry: str) -> None:
        """A load balancer or proxy address or network whose PROXY or forwarded header is
        believed, e.g. 10.0.0.0/8 (repeatable)."""
        try:
            parse_network(entry)
        except ValueError as e:
            raise usage.UsageError(f"--trusted-proxy {entry!r}: {e}") from None
        self["trusted-proxy"].append(entry)

    def parseArgs(self, *args: str) -> None:
        if args:
            raise usage.UsageError(f"unexpected argument {args[0]!r}: options start with --")

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """Parse; on a command line (a twistd subcommand) a mistake exits with one line.

        twistd answers a L{usage.UsageError} with its whole help before the message; a
        program that parses these options itself gets the L{usage.UsageError}.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            raise SystemExit(_one_line(e)) from None

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEMO_LISTEN if self["app"] is None else "tcp:3010"]
        if self["metrics"] is not None:
            self["metrics"] = _endpoint("metrics", self["metrics"])
        if not self["server-id"].strip():
            raise usage.UsageError("--server-id must not be empty")
        if self["proxy-protocol"] and not self["trusted-proxy"]:
            raise usage.UsageError("--proxy-protocol needs --trusted-proxy (the balancers)")
        header = self["forwarded-header"].lower()
        if header not in ("x-forwarded-for", "forwarded", "none"):
            raise usage.UsageError("--forwarded-header must be x-forwarded-for, forwarded or none")
        self["forwarded-header"] = None if header == "none" else header
        if self["config"] is not None and not os.path.isdir(self["config"]):
            raise usage.UsageError(f"--config {self['config']!r}: not a directory")
        path = self["blocklist-file"]
        if path is not None:
            try:
                _, errors = read_blocklist_file(path)
            except OSError as e:
                raise usage.UsageError(f"--blocklist-file {path!r}: {e.strerror or e}") from None
            if errors:
                raise usage.UsageError(f"--blocklist-file {path!r}: " + "; ".join(errors))
        self._check_cluster()
        if (self["tls-key"] is None) != (self["tls-cert"] is None):
            raise usage.UsageError("--tls-key and --tls-cert go together")
        if self["tls-key"] is not None:
            from ..server.hybrid import load_tls_options

            try:
                self["tls"] = load_tls_options(self["tls-key"], self["tls-cert"])
            except (OSError, ValueError) as e:
                raise usage.UsageError(f"--tls-key/--tls-cert: {_os_error(e)}") from None
        else:
            self["tls"] = None

    def _check_cluster(self) -> None:
        """Cluster options: parse the URL, read the password file, pick a unique server id."""
        if self["kick-old"] and self["single-session"]:
            raise usage.UsageError("--kick-old and --single-session are two different policies")
        for name in ("cluster-heartbeat", "cluster-timeout"):
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be more than 0")
        if self["redis"] is None:
            for option in ("redis-password-file", "redis-ca"):
                if self[option] is not None:
                    raise usage.UsageError(f"--{option} needs --redis")
            for flag in ("cluster-mixed-versions", "healthz-requires-redis"):
                if self[flag]:
                    raise usage.UsageError(f"--{flag} needs --redis")
            return
        from ..cluster.url import parse_redis_url

        password = None
        if self["redis-password-file"] is not None:
            try:
                with open(self["redis-password-file"], encoding="utf-8") as f:
                    password = f.readline().rstrip("\r\n")
            except OSError as e:
                raise usage.UsageError(f"--redis-password-file: {e}") from None
        try:
            self["redis-url"] = parse_redis_url(self["redis"], password)
        except ValueError as e:
            raise usage.UsageError(f"--redis: {e}") from None
        ca = self["redis-ca"]
        if ca is not None:
            if not self["redis-url"].tls:
                raise usage.UsageError("--redis-ca needs a rediss:// URL")
            from twisted.internet.ssl import Certificate

            try:
                with open(ca, "rb") as f:
                    Certificate.loadPEM(f.read())
            except OSError as e:
                raise usage.UsageError(f"--redis-ca {ca!r}: {e.strerror or e}") from None
            except Exception:
                raise usage.UsageError(f"--redis-ca {ca!r}: not a PEM certificate") from None
            self["redis-url"] = self["redis-url"]._replace(ca_file=ca)
        prefix = self["redis-prefix"]
        if not prefix or any(c in prefix for c in " |"):
            raise usage.UsageError("--redis-prefix must be non-empty, without spaces or |")
        if self["server-id"] == _DEFAULTS.server_id:
            # every process of a cluster needs its own id
            self["server-id"] = f"{socket.gethostname()}-{os.getpid()}"

    def connector_config(self) -> ConnectorConfig:
        """The L{ConnectorConfig} these options describe."""
        return ConnectorConfig(
            use_crypto=bool(self["use-crypto"]),
            rsa_max_modulus_bits=self["rsa-max-modulus-bits"],
            heartbeat=self["heartbeat"],
            heartbeat_timeout=self["heartbeat-timeout"],
            disconnect_on_timeout=not self["no-disconnect-on-timeout"],
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
            proxy_protocol=bool(self["proxy-protocol"]),
            trusted_proxies=tuple(self["trusted-proxy"]),
            forwarded_header=self["forwarded-header"],
            handshake_timeout=self["handshake-timeout"] or None,
            ack_timeout=self["ack-timeout"] or None,
            first_byte_timeout=self["first-byte-timeout"] or None,
            single_session=bool(self["single-session"]),
            server_id=self["server-id"],
            connection_log_level=CONNECTION_LOG_LEVELS[self["connection-log-level"]],
        )


#: Endpoint types whose first argument (or port=) is a TCP port number.
_PORT_TYPES: Final = frozenset({"tcp", "tcp6", "ssl", "reuseport"})


def _endpoint(option: str, description: str) -> str:
    """Check what can be checked of an endpoint description without a reactor.

    The rest (an unknown type, a bad argument, an unreadable certificate) is found by
    L{makeService}, which parses it.
    """
    if not description.strip():
        raise usage.UsageError(f"--{option} {description!r}: an endpoint description is needed")
    kind, args, kwargs = split_endpoint(description)
    if kind in _PORT_TYPES:
        port = kwargs.get("port", args[0] if args else None)
        if port is None or not port.isdigit() or int(port) > 0xFFFF:
            raise usage.UsageError(
                f"--{option} {description!r}: the port must be a number from 0 to 65535"
            )
    return description


def _one_line(error: BaseException) -> str:
    """The exit message for a mistake on the command line: one line, naming the command."""
    text = " ".join(str(error).split()) or type(error).__name__
    return f"pomelo-connector: {text}"


def _os_error(error: BaseException) -> str:
    """An error's text; an C{OSError} as C{FILE: reason}, without its errno."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror if not error.filename else f"{error.filename}: {error.strerror}"
    return str(error)


def _where(error: BaseException) -> str:
    """C{file:line} where C{error} was raised (its innermost frame), for a one-line report."""
    tb = error.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f" (at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"


def load_app(spec: str | None) -> Application:
    """Import and call an app factory named ``module:callable`` (the demo app for C{None}).

    @raise usage.UsageError: one line naming C{spec} and what went wrong: no such module,
        attribute or callable, an error while importing the module or calling the factory
        (with where it was raised), or a factory that returned something else.
    """
    if spec is None:
        from ..demo import make_app

        return make_app()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise usage.UsageError(f"--app {spec!r}: must look like 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and module_name.startswith(e.name):
            raise usage.UsageError(f"--app {spec!r}: no module named {e.name!r}") from None
        raise usage.UsageError(
            f"--app {spec!r}: importing {module_name} failed: {e}{_where(e)}"
        ) from None
    except Exception as e:  # a SyntaxError, or anything the module raises while importing
        raise usage.UsageError(
            f"--app {spec!r}: importing {module_name} failed: {type(e).__name__}: {e}"
            f"{'' if isinstance(e, SyntaxError) else _where(e)}"
        ) from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise usage.UsageError(f"--app {spec!r}: {module_name} has no {attr!r}")
    if not callable(factory):
        raise usage.UsageError(
            f"--app {spec!r}: {attr} is not callable (its type is {type(factory).__name__})"
        )
    try:
        app = factory()
    except Exception as e:
        raise usage.UsageError(
            f"--app {spec!r}: {attr}() raised {type(e).__name__}: {e}{_where(e)}"
        ) from None
    if not isinstance(app, Application):
        raise usage.UsageError(
            f"--app {spec!r}: {attr}() returned {type(app).__name__}, not an Application"
        )
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
    """Build the connector service (installing pomelo-epoll if no reactor is chosen yet).

    @raise usage.UsageError: a bad C{--app}, C{--config}, C{--listen} or C{--metrics}; on a
        command line (options parsed as a twistd subcommand) it exits with one line instead.
    """
    try:
        return _make_service(options)
    except usage.UsageError as e:
        if options.parent is None:
            raise
        raise SystemExit(_one_line(e)) from None


def _make_service(options: Options) -> IService:
    _install_default_reactor()
    from twisted.internet import reactor

    from ..server.connector import Connector
    from ..server.hybrid import PomeloConnectorFactory
    from .cluster import attach_cluster
    from .service import ConnectorService

    app = load_app(options["app"])
    if options["config"] is not None:
        app.config_dir = options["config"]
    for description in options["listen"]:
        _parse_endpoint(reactor, "listen", description)
    metrics = options["metrics"]
    if metrics is not None:
        _parse_endpoint(reactor, "metrics", metrics)
    try:
        connector = Connector(app, reactor, options.connector_config())
    except (PomeloError, ValueError, OSError) as e:
        where = (
            f"--config {options['config']!r}"
            if options["config"] is not None
            else f"--app {options['app']!r}: its config_dir {app.config_dir!r}"
        )
        raise usage.UsageError(f"{where}: {_os_error(e)}") from None
    factory = PomeloConnectorFactory(connector, tls=options.get("tls"))
    note = ""
    if options["app"] is None and options["listen"] == [DEMO_LISTEN]:
        note = "the demo app, for this machine only: --listen tcp:3010 opens it to the network"
    service = ConnectorService(
        factory,
        options["listen"],
        reactor,
        stop_reason=options["shutdown-reason"],
        drain_timeout=options["drain-timeout"],  # None: the connector's kick_close_timeout
        blocklist_file=options["blocklist-file"],
        metrics_endpoint=metrics,
        startup_note=note,
        shutdown_signals=True,  # SIGTERM/SIGINT without logging in the handler (#7736)
    )
    return attach_cluster(options, connector, reactor, service)


def _parse_endpoint(reactor: Any, option: str, description: str) -> None:
    """Parse an endpoint description as the service will; any error names the option.

    Parsing an C{ssl:} description reads its key and certificate files.
    """
    from OpenSSL import SSL, crypto
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, description)
    except (SSL.Error, crypto.Error) as e:
        text = f"cannot load its key or certificate: {e}"
        raise usage.UsageError(f"--{option} {description!r}: {text}") from None
    except TypeError as e:  # an argument the endpoint type does not take: _parseTCP() got...
        text = re.sub(r"^\w+\(\) ", "", str(e))
        raise usage.UsageError(f"--{option} {description!r}: {text}") from None
    except Exception as e:  # ValueError, OSError, anything a plugin's parser raises
        text = _os_error(e) or type(e).__name__
        raise usage.UsageError(f"--{option} {description!r}: {text}") from None
