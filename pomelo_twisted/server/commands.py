"""The command registry: what happens to each package type (Pomelo's connector commands).

A command handles one inbound package for one L{HybridSocket}. The registry maps package types
to commands; the connector uses L{default_commands}, and an application may replace an entry
(for instance to add metrics around the heartbeat) without touching the socket.

Every line a client's message can cause goes through its socket's log throttle
(L{HybridSocket.may_log}), and a traceback through the connector's per-route one
(L{_log_failure}), so that no client can make the log grow with its message rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from ..protocol import handshake as hs
from ..protocol.codec import AnswerMisfit
from ..protocol.crypto import SESSION_KEY, ClientKeyError, SignatureError, verify_message
from ..protocol.errors import EncodeError, ProtobufError
from ..protocol.message import MessageType, encode_response
from ..protocol.package import Package, PackageType, encode_package
from ..services.application import (
    PLAIN_RESULTS,
    HandlerError,
    RouteNotFound,
    error_response,
    invoke,
)
from .closing import HEARTBEAT_TIMEOUT

if TYPE_CHECKING:
    from ..services.session import Session
    from .socket import HybridSocket

__all__ = [
    "DataCommand",
    "HandshakeAckCommand",
    "HandshakeCommand",
    "HeartbeatCommand",
    "ICommand",
    "default_commands",
]

_log = Logger()

_ERROR = {"code": 500}
_ERROR_BODY = b'{"code":500}'


class ICommand(Interface):
    """Handles one kind of inbound package."""

    def handle(socket: HybridSocket, package: Package) -> None:
        """Act on C{package}, which the socket's state has already accepted."""


@implementer(ICommand)
class HandshakeCommand:
    """Answer a handshake (§5): checks, dictionary and protos, the client key, the user hook.

    With C{use_crypto}, a handshake without a usable C{sys.rsa} is answered C{{"code":500}}
    and closed; the key is kept in the session settings under
    L{pomelo_twisted.protocol.crypto.SESSION_KEY} (C{"pubKey"}, as Pomelo), so it goes with the
    session when the connection closes.
    """

    def handle(self, socket: HybridSocket, package: Package) -> None:
        connector = socket.connector
        config = connector.config
        msg = hs.parse_request(package.body)
        decision = hs.decide(
            msg,
            connector.app.check,
            config.heartbeat,
            connector.dictionary,
            connector.protobuf,
            config.rsa_max_modulus_bits if config.use_crypto else None,
        )
        if decision.code != hs.CODE_OK:
            error = decision.error
            if isinstance(error, ClientKeyError):
                if socket.may_log():
                    _log.warn("refusing {peer}: {e}", peer=socket.getPeer(), e=error)
            elif error is not None:
                _log_failure(
                    socket,
                    "(check_client)",
                    "check_client hook failed",
                    Failure(error, type(error), error.__traceback__),
                )
            self._fail(socket, decision.code, decision.why)
            return
        response = dict(decision.response)
        key = decision.key
        session = connector.session_service.create(socket)
        socket.session = session
        if key is not None:
            # The session lives exactly as long as the connection, so the key goes with it.
            session.set(SESSION_KEY, key)
        hook = connector.app.handshake_hook
        if hook is None:
            self._succeed(socket, response)
            return
        d: Deferred[Any] = maybeDeferred(invoke, hook, msg, session)
        d.addCallbacks(
            self._hooked, self._hookFailed, callbackArgs=(socket, response), errbackArgs=(socket,)
        )

    def _hooked(self, user: Any, socket: HybridSocket, response: dict[str, Any]) -> None:
        if hs.js_truthy(user):
            response["user"] = user
        self._succeed(socket, response)

    def _hookFailed(self, failure: Failure, socket: HybridSocket) -> None:
        _log_failure(socket, "(handshake)", "handshake hook failed", failure)
        self._fail(socket, hs.CODE_BAD_HANDSHAKE, "handshake hook failed")

    def _succeed(self, socket: HybridSocket, response: dict[str, Any]) -> None:
        try:
            data = socket.connection.handshake_response(response)
        except TypeError:
            _log_failure(socket, "(handshake)", "handshake answer is not JSON-serialisable")
            self._fail(socket, hs.CODE_BAD_HANDSHAKE, "handshake answer not serialisable")
            return
        if data is not None:
            socket.send(data)
            socket.arm_timer(socket.connector.config.ack_timeout, "no handshake ack")
            if socket.connector.metrics is not None:
                socket.connector.metrics.handshake(hs.CODE_OK)

    def _fail(self, socket: HybridSocket, code: int, why: str) -> None:
        data = socket.connection.handshake_error(code)
        if data is not None:
            if socket.connector.metrics is not None:
                socket.connector.metrics.handshake(code)
            socket.send(data)
            socket.disconnect(f"handshake failed ({code}): {why}")


@implementer(ICommand)
class HeartbeatCommand:
    """Answer a heartbeat at once and re-arm the timeout (§6.1); see
    L{ConnectorConfig.disconnect_on_timeout} for what the timeout does."""

    def handle(self, socket: HybridSocket, package: Package) -> None:
        config = socket.connector.config
        if not config.heartbeat:
            return
        socket.arm_timer(config.effective_heartbeat_timeout, HEARTBEAT_TIMEOUT)
        data = socket.connection.heartbeat()
        if data is not None:
            socket.send(data)


@implementer(ICommand)
class HandshakeAckCommand:
    """The ACK: start working, then take the heartbeat step (§5.7)."""

    def __init__(self, heartbeat: HeartbeatCommand) -> None:
        self._heartbeat = heartbeat

    def handle(self, socket: HybridSocket, package: Package) -> None:
        socket.connection.ack()
        socket.arm_timer(None, "working")
        self._heartbeat.handle(socket, package)


@implementer(ICommand)
class DataCommand:
    """Decode a request or notify and dispatch it to its handler (§7, §10).

    With C{use_crypto} (§14) every body must carry a valid C{__crypto__} signature by the key
    the client sent in its handshake; the field is removed before the handler sees the body.
    A message whose signature is missing, malformed or wrong is dropped, request or notify,
    with a warning in the log and no response, exactly as Pomelo does; the connection stays
    open. Protobuf bodies cannot carry the field, so with C{use_crypto} only JSON routes work
    (as upstream). A request whose route code is unknown is still answered C{{"code":500}}
    before any body is looked at.
    """

    def handle(self, socket: HybridSocket, package: Package) -> None:
        connector = socket.connector
        codec = connector.codec
        metrics = connector.metrics
        started = 0.0 if metrics is None else connector.reactor.seconds()
        msg = codec.decode(package.body)  # MessageError propagates: a protocol error
        mtype = msg.type
        if mtype is not MessageType.REQUEST and mtype is not MessageType.NOTIFY:
            if socket.may_log():
                _log.warn(
                    "dropping a {type} message from {peer}", type=mtype.name, peer=socket.getPeer()
                )
            return
        mid = msg.id if mtype is MessageType.REQUEST else 0
        route = msg.route
        session = socket.session
        assert session is not None
        if route is None:
            if socket.may_log():
                _log.warn("unknown route code from {peer}", peer=socket.getPeer())
            if metrics is not None:
                metrics.request_done(None, started, False)
            _outside_handlers(RouteNotFound(None), socket, mid, None, None, session)
            return
        try:
            body = codec.decode_body(route, msg.body)
        except ProtobufError as e:
            if socket.may_log():
                _log.warn("bad protobuf body for {route}: {e}", route=route, e=e)
            if metrics is not None:
                metrics.request_done(route, started, False)
            _outside_handlers(e, socket, mid, route, None, session)
            return
        try:
            if connector.config.use_crypto:
                try:
                    body = verify_message(_client_key(session), body)
                except SignatureError as e:
                    if socket.may_log():
                        _log.warn(
                            "dropping {kind} for {route} from {peer}: {e} (use_crypto)",
                            kind=f"request {mid}" if mid else "notify",
                            route=route,
                            peer=socket.getPeer(),
                            e=e,
                        )
                    if metrics is not None:
                        metrics.rejected(route)
                    return
            result = connector.app.dispatch(route, body, session)
        except RouteNotFound as e:
            if not mid and socket.may_log():
                _log.info("notify {route} failed: {e}", route=route, e=e)
            if metrics is not None:
                metrics.request_done(route, started, False)
            _outside_handlers(e, socket, mid, route, body, session)
            return
        except HandlerError as e:
            if mid:
                _answer(e.response, socket, mid, route)
            elif socket.may_log():
                _log.info("notify {route} failed: {e}", route=route, e=e)
            if metrics is not None:
                metrics.request_done(route, started, False)
            return
        except Exception:
            _log_failure(socket, route, "handler for {route} failed", route=route)
            if mid:
                _answer(_ERROR, socket, mid, route)
            if metrics is not None:
                metrics.request_done(route, started, False)
            return
        # A plain result first: Deferred's metaclass is ABCMeta, a slow isinstance.
        if type(result) not in PLAIN_RESULTS and isinstance(result, Deferred):
            if metrics is not None:  # before the answer, so that it sees the handler's result
                result.addBoth(metrics.settled, route, started)
            result.addCallbacks(
                _answer,
                _answerFailed,
                callbackArgs=(socket, mid, route),
                errbackArgs=(socket, mid, route),
            )
            return
        if mid:
            _answer(result, socket, mid, route)
        elif result is not None:
            _log.debug("notify handler for {route} returned a value; ignored", route=route)
        if metrics is not None:
            metrics.request_done(route, started, True)


def _client_key(session: Session) -> RSAPublicKey:
    """The key the client sent in its handshake (stored there by L{HandshakeCommand})."""
    key = session.get(SESSION_KEY)
    if not isinstance(key, RSAPublicKey):
        raise SignatureError("the session holds no client key")
    return key


def _outside_handlers(
    error: Exception,
    socket: HybridSocket,
    mid: int,
    route: str | None,
    body: Any,
    session: Session,
) -> None:
    """Answer an error that came before any handler: the app's C{global_error_handler} shapes
    the response when it has one (it is called for notifies too, which get no answer)."""
    app = socket.connector.app
    if app.global_error_handler is None:
        if mid:
            _answer(error_response(error), socket, mid, route)
        return
    d = app.handle_global_error(error, route, body, session)
    if mid:
        d.addCallback(_answer, socket, mid, route)


def _log_failure(
    socket: HybridSocket,
    key: str,
    format: str,
    failure: Failure | None = None,
    **kwargs: Any,
) -> None:
    """Log a failure a client's message caused (C{None}: the exception being handled).

    Within the socket's log throttle; with its traceback at most once per C{key} (a route) per
    L{TRACEBACK_INTERVAL<pomelo_twisted.server.connector.TRACEBACK_INTERVAL>}, and otherwise
    as one line naming the exception.
    """
    if not socket.may_log():
        return
    if failure is None:
        failure = Failure()
    if socket.connector.may_trace(key):
        _log.failure(format, failure, **kwargs)
    else:
        _log.error(
            format + ": {error} (traceback logged once a minute for {key})",
            error=f"{type(failure.value).__name__}: {failure.getErrorMessage()}",
            key=key,
            **kwargs,
        )


def _answer(response: Any, socket: HybridSocket, mid: int, route: str | None) -> None:
    """Send C{response} to request C{mid}, encoded for C{route} (JSON for an unknown code)."""
    if not mid:
        return
    if type(response) is not dict and not hs.js_truthy(response):  # a dict: the usual answer
        response = {}
    try:
        package = socket.connector.codec.answer(mid, route, response)
    except AnswerMisfit as e:
        package = e.package
        if response != _ERROR and socket.may_log():  # an error answer of ours: said already
            _log.error("response for {route} does not fit its proto: {e}", route=route, e=e)
    except TypeError:
        _log_failure(
            socket,
            route or "(no route)",
            "response for {route} is not JSON-serialisable",
            route=route,
        )
        package = _error_package(mid)
    except EncodeError as e:
        # A body over 16 MiB cannot be framed; answer, rather than raise into the transport.
        if socket.may_log():
            _log.error("response for {route} cannot be sent: {e}", route=route, e=e)
        package = _error_package(mid)
    socket.sendPackage(package)


def _error_package(mid: int) -> bytes:
    return encode_package(PackageType.DATA, encode_response(mid, _ERROR_BODY))


def _answerFailed(failure: Failure, socket: HybridSocket, mid: int, route: str) -> None:
    error = failure.value
    if isinstance(error, HandlerError):
        if mid:
            _answer(error.response, socket, mid, route)
        return
    _log_failure(socket, route, "handler for {route} failed", failure, route=route)
    if mid:
        _answer(_ERROR, socket, mid, route)


def default_commands() -> dict[PackageType, ICommand]:
    """A fresh registry with Pomelo's commands (a client KICK never reaches one: §4)."""
    heartbeat = HeartbeatCommand()
    return {
        PackageType.HANDSHAKE: HandshakeCommand(),
        PackageType.HANDSHAKE_ACK: HandshakeAckCommand(heartbeat),
        PackageType.HEARTBEAT: heartbeat,
        PackageType.DATA: DataCommand(),
    }
