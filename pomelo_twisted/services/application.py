"""The application: handlers by route, filters, error handlers and handshake hooks (§10).

Handlers are registered under full routes ``serverType.handler.method`` and looked up in an
explicit table, never by attribute access, so names such as ``constructor`` or ``__class__`` can
never be reached by a client. A handler takes ``(msg, session)`` and returns a value, a
C{Deferred} or an awaitable.

The chain is Pomelo's: before filters, the handler, then (on an error from either) the error
handler, then the after filters, which see the error. Every hook may be synchronous, return a
C{Deferred} or be a coroutine.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from .channel import ChannelService
    from .interfaces import ICluster
    from .session import Session, SessionService

__all__ = [
    "PLAIN_RESULTS",
    "AfterFilter",
    "Application",
    "ErrorHandler",
    "Handler",
    "HandlerError",
    "RouteNotFound",
    "error_response",
    "invoke",
    "log_failure",
]

Handler = Callable[[Any, "Session"], Any]
BeforeFilter = Callable[[str, Any, "Session"], Any]
#: C{(err, route, msg, session, response) -> response}; C{err} is C{None} after a success.
AfterFilter = Callable[[Exception | None, str, Any, "Session", Any], Any]
#: C{(err, route, msg, session, response) -> response}, Pomelo's ``errorHandler``.
ErrorHandler = Callable[[Exception, Any, Any, "Session | None", Any], Any]
CheckClient = Callable[[str, str], bool]
HandshakeHook = Callable[[dict[str, Any], "Session"], Any]

_F = TypeVar("_F", bound=Callable[..., Any])

_log = Logger()

_NOT_SERVED = (
    "app.{name} is set when a connector serves the app: build the Connector (twistd does) "
    "before using it, e.g. from a handler"
)

#: What most handlers return: types that are never awaitable, so the result is final without
#: asking C{inspect.isawaitable} (an ABC check: the slowest step of a synchronous dispatch).
PLAIN_RESULTS = frozenset({dict, list, str, int, float, bool, type(None)})


class HandlerError(Exception):
    """Raise from a handler or filter to answer with an error response.

    Pomelo's ``next(err, resp)``: the response is C{resp} (or C{{}}) with C{code} 500 unless
    C{resp} already carries a truthy C{code}.
    """

    def __init__(self, response: dict[str, Any] | str | None = None, message: str = "") -> None:
        if isinstance(response, str):  # HandlerError("reason"), as with any exception
            message = message or response
            response = None
        super().__init__(message or repr(response))
        body = dict(response or {})
        if not body.get("code"):
            body["code"] = 500
        self.response = body


class RouteNotFound(HandlerError):
    """No handler is registered for the route (answered with C{{"code": 500}}).

    @ivar route: the route, or C{None} when the client sent a dictionary code the server does
        not know.
    """

    def __init__(self, route: str | None) -> None:
        what = "an unknown route code" if route is None else f"route {route!r}"
        super().__init__(None, f"no handler for {what}")
        self.route = route


def error_response(error: Exception) -> dict[str, Any]:
    """The response an error answers with by default: a L{HandlerError}'s own, else code 500."""
    if isinstance(error, HandlerError):
        return error.response
    return {"code": 500}


class Application:
    """Handlers, filters and hooks of one connector app.

    @ivar server_type: the first part of this server's routes (Pomelo's ``serverType``).
    @ivar config_dir: a Pomelo ``config/`` directory (``dictionary.json``,
        ``clientProtos.json``, ``serverProtos.json``), or C{None}.
    @ivar check_client: C{(type, version) -> bool}; false answers the handshake with 501.
    @ivar handshake_hook: C{(msg, session) -> user data} (plain, Deferred or awaitable); its
        result goes back as the handshake's C{user} field, its failure answers 500.
    @ivar error_handler: C{(err, route, msg, session, response) -> response} (Pomelo's
        ``errorHandler``): called when a before filter or the handler fails, like an
        C{except} block. What it returns is the response and the error is handled; what it
        raises becomes the error. C{response} is the error's default answer.
    @ivar global_error_handler: the same for errors before any handler is found (Pomelo's
        ``globalErrorHandler``): an unknown route (L{RouteNotFound}) or a body that does not
        decode; C{msg} is then the decoded body or C{None}, C{route} C{None} for an unknown
        route code. After filters do not run for these.
    @ivar session_service: set by the connector that serves this app (C{None} before); typed
        code reads L{sessions}, which is never C{None}.
    @ivar channel_service: set by the connector that serves this app (C{None} before); typed
        code reads L{channels}.
    """

    def __init__(self, server_type: str = "connector", config_dir: str | None = None) -> None:
        self.server_type = server_type
        self.config_dir = config_dir
        self._handlers: dict[str, Handler] = {}
        self._before: list[BeforeFilter] = []
        self._after: list[AfterFilter] = []
        self.check_client: CheckClient | None = None
        self.handshake_hook: HandshakeHook | None = None
        self.error_handler: ErrorHandler | None = None
        self.global_error_handler: ErrorHandler | None = None
        #: Where unexpected exceptions of filters, handlers and error hooks are logged: the
        #: connector serving the app puts a per-route traceback throttle in front of it, since
        #: a client's messages cause them.
        self.failure_log: Callable[[Exception, str | None, str], None] = log_failure
        self.session_service: SessionService | None = None
        self.channel_service: ChannelService | None = None
        self._cluster: ICluster | None = None
        self._resync_listeners: list[Callable[[str], Any]] = []

    @property
    def cluster(self) -> ICluster | None:
        """What this app shares with the other connector processes (an L{ICluster}): a
        L{pomelo_twisted.services.cluster.LocalCluster} set by the connector, or a
        C{RedisCluster} with ``--redis``. Setting it moves the L{on_cluster_resync} listeners
        to the new cluster."""
        return self._cluster

    @cluster.setter
    def cluster(self, cluster: ICluster | None) -> None:
        old, self._cluster = self._cluster, cluster
        for callback in self._resync_listeners:
            if old is not None:
                old.off("resync", callback)
            if cluster is not None:
                cluster.on("resync", callback)

    def on_cluster_resync(self, callback: _F) -> _F:
        """Call C{callback(reason)} whenever the cluster rebuilt its state in Redis (usable as
        a decorator, and before the app is served): C{"redis-empty"} when Redis lost its data,
        C{"reconnected"} or C{"stalled"} otherwise (docs/cluster.md, "When Redis lost its
        data"). It is C{app.cluster.on("resync", callback)}, kept across a change of
        C{app.cluster}; without C{--redis} it is never called.
        """
        self._resync_listeners.append(callback)
        if self._cluster is not None:
            self._cluster.on("resync", callback)
        return callback

    @property
    def sessions(self) -> SessionService:
        """The session service, for handlers: set once a connector serves this app.

        @raise RuntimeError: the app is not served yet (no L{Connector} built for it).
        """
        service = self.session_service
        if service is None:
            raise RuntimeError(_NOT_SERVED.format(name="sessions"))
        return service

    @property
    def channels(self) -> ChannelService:
        """The channel service, for handlers: set once a connector serves this app.

        @raise RuntimeError: the app is not served yet (no L{Connector} built for it).
        """
        service = self.channel_service
        if service is None:
            raise RuntimeError(_NOT_SERVED.format(name="channels"))
        return service

    # Registration

    @property
    def routes(self) -> list[str]:
        """Every registered handler route (the dictionary is built from these)."""
        return list(self._handlers)

    def add_handler(self, route: str, handler: Handler) -> None:
        """Register C{handler} for C{route} (``serverType.handler.method``)."""
        parts = route.split(".")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"route {route!r} is not serverType.handler.method")
        if route in self._handlers:
            raise ValueError(f"route {route!r} already has a handler")
        self._handlers[route] = handler

    def route(self, route: str) -> Callable[[Handler], Handler]:
        """Decorator form of L{add_handler}."""

        def register(handler: Handler) -> Handler:
            self.add_handler(route, handler)
            return handler

        return register

    def add_handler_object(self, name: str, obj: object, server_type: str | None = None) -> None:
        """Register every public method of C{obj} as ``serverType.name.method``.

        Like a Pomelo handler file, but only public callables defined on the object's own class
        are exposed (never inherited or underscored names).
        """
        stype = server_type or self.server_type
        for attr, value in vars(type(obj)).items():
            if attr.startswith("_") or not callable(value):
                continue
            self.add_handler(f"{stype}.{name}.{attr}", getattr(obj, attr))

    def before(self, f: BeforeFilter) -> BeforeFilter:
        """Add a before filter C{(route, msg, session)}; raising L{HandlerError} rejects."""
        self._before.append(f)
        return f

    def after(self, f: _F) -> _F:
        """Add an after filter C{(err, route, msg, session, response) -> response}.

        It runs after the handler and the error handler, whether the request succeeded
        (C{err} is C{None}) or failed (C{err} is the exception, C{response} its answer).

        A filter of the old form C{(route, msg, session, response)} (four required arguments)
        still works, runs only after a success, and gives a C{DeprecationWarning}.
        """
        if _required_positionals(f) == 4:
            warnings.warn(
                f"after filter {f!r} takes (route, msg, session, response); after filters now "
                "take (err, route, msg, session, response) and also run after errors",
                DeprecationWarning,
                stacklevel=2,
            )
            self._after.append(_success_only(f))
        else:
            self._after.append(f)
        return f

    # Dispatch

    def dispatch(self, route: str, msg: Any, session: Session) -> Any:
        """Run filters and the handler for C{route}.

        @return: the handler's plain result when everything ran synchronously (the fast path),
            else a C{Deferred} firing with it.
        @raise HandlerError: synchronously, for an unknown route or a synchronous rejection.
        """
        handler = self._handlers.get(route)
        if handler is None:
            raise RouteNotFound(route)
        if self._before or self._after or self.error_handler is not None:
            return ensureDeferred(self._filtered(handler, route, msg, session))
        result = handler(msg, session)
        if type(result) in PLAIN_RESULTS:
            return result
        return _deferred_if_awaitable(result)

    async def _filtered(self, handler: Handler, route: str, msg: Any, session: Session) -> Any:
        """The whole chain; fails with a L{HandlerError} carrying the answer of a failure."""
        err: Exception | None = None
        try:
            for f in self._before:
                await maybeDeferred(invoke, f, route, msg, session)
            response = await maybeDeferred(invoke, handler, msg, session)
        except Exception as e:
            err, response = await self._handle_error(self.error_handler, e, route, msg, session)
        for after in self._after:
            try:
                response = await maybeDeferred(invoke, after, err, route, msg, session, response)
            except Exception as e:
                self.failure_log(e, route, "an after filter")
                err, response = e, error_response(e)
        if err is None:
            return response
        if isinstance(err, HandlerError) and response is err.response:
            raise err
        # Pomelo's rule for a failed request: the response gets code 500 unless it has a code.
        raise HandlerError(response if isinstance(response, dict) else None, str(err)) from err

    def handle_global_error(
        self, err: Exception, route: str | None, msg: Any, session: Session | None
    ) -> Deferred[Any]:
        """Give an error from outside any handler to L{global_error_handler}, which must be set.

        @return: a C{Deferred} firing with the response to send (never failing): the hook's
            result, or the default answer of the error it raised.
        """
        return ensureDeferred(self._global_error(err, route, msg, session))

    async def _global_error(
        self, err: Exception, route: str | None, msg: Any, session: Session | None
    ) -> Any:
        _, response = await self._handle_error(self.global_error_handler, err, route, msg, session)
        return response

    async def _handle_error(
        self,
        hook: ErrorHandler | None,
        err: Exception,
        route: str | None,
        msg: Any,
        session: Session | None,
    ) -> tuple[Exception | None, Any]:
        """Give C{err} to C{hook} (an error handler, or C{None}): C{(error, response)} after it.

        The error is C{None} when the hook returned, the one it raised otherwise. An unexpected
        exception (not a L{HandlerError}) that stays the error goes to L{failure_log}.
        """
        response = error_response(err)
        if hook is None:
            self.failure_log(err, route, "the handler or a before filter")
            return err, response
        try:
            return None, await maybeDeferred(invoke, hook, err, route, msg, session, response)
        except Exception as e:
            self.failure_log(e, route, "the error handler")
            return e, error_response(e)

    def check(self, client_type: Any, version: Any) -> bool:
        """Apply the C{check_client} hook (true when there is none)."""
        return self.check_client is None or bool(self.check_client(client_type, version))


def log_failure(err: Exception, route: str | None, where: str) -> None:
    """Log an unexpected exception (not a L{HandlerError}) of a handler, filter or hook."""
    if not isinstance(err, HandlerError):
        _log.failure(
            "{where} for {route} failed",
            Failure(err, type(err), err.__traceback__),
            where=where,
            route=route,
        )


def _required_positionals(f: Callable[..., Any]) -> int | None:
    """How many positional arguments C{f} requires; C{None} if unknown or if it takes C{*args}."""
    try:
        parameters = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        return None
    required = 0
    for p in parameters:
        if p.kind is p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
            required += 1
    return required


def _success_only(f: Callable[..., Any]) -> AfterFilter:
    """An old-form after filter as a new one: called after successes only, as it used to be."""

    def after(err: Exception | None, route: str, msg: Any, session: Session, response: Any) -> Any:
        return response if err is not None else f(route, msg, session, response)

    return after


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def invoke(f: Callable[..., Any], *args: Any) -> Any:
    """Call C{f}; turn an awaitable result into a C{Deferred}, so handlers may be coroutines."""
    return _deferred_if_awaitable(f(*args))


def _deferred_if_awaitable(result: Any) -> Any:
    """C{result}, or a C{Deferred} of it when it is an awaitable other than a C{Deferred}."""
    if inspect.isawaitable(result) and not isinstance(result, Deferred):
        return ensureDeferred(_await(result))
    return result
