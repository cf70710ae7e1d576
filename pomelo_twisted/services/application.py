"""The application: handlers by route, filters and handshake hooks (protocol.md §10).

Handlers are registered under full routes ``serverType.handler.method`` and looked up in an
explicit table, never by attribute access, so names such as ``constructor`` or ``__class__`` can
never be reached by a client. A handler takes ``(msg, session)`` and returns a value, a
C{Deferred} or an awaitable.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.logger import Logger

if TYPE_CHECKING:
    from .channel import ChannelService
    from .session import Session, SessionService

__all__ = ["PLAIN_RESULTS", "Application", "Handler", "HandlerError", "RouteNotFound", "invoke"]

Handler = Callable[[Any, "Session"], Any]
BeforeFilter = Callable[[str, Any, "Session"], Any]
AfterFilter = Callable[[str, Any, "Session", Any], Any]
CheckClient = Callable[[str, str], bool]
HandshakeHook = Callable[[dict[str, Any], "Session"], Any]

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
    """No handler is registered for the route (answered with C{{"code": 500}})."""

    def __init__(self, route: str) -> None:
        super().__init__(None, f"no handler for route {route!r}")
        self.route = route


class Application:
    """Handlers, filters and hooks of one connector app.

    @ivar server_type: the first part of this server's routes (Pomelo's ``serverType``).
    @ivar config_dir: a Pomelo ``config/`` directory (``dictionary.json``,
        ``clientProtos.json``, ``serverProtos.json``), or C{None}.
    @ivar check_client: C{(type, version) -> bool}; false answers the handshake with 501.
    @ivar handshake_hook: C{(msg, session) -> user data} (plain, Deferred or awaitable); its
        result goes back as the handshake's C{user} field, its failure answers 500.
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
        self.session_service: SessionService | None = None
        self.channel_service: ChannelService | None = None

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

    def after(self, f: AfterFilter) -> AfterFilter:
        """Add an after filter C{(route, msg, session, response) -> response}."""
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
        if self._before or self._after:
            return ensureDeferred(self._filtered(handler, route, msg, session))
        result = handler(msg, session)
        if type(result) in PLAIN_RESULTS:
            return result
        return _deferred_if_awaitable(result)

    async def _filtered(self, handler: Handler, route: str, msg: Any, session: Session) -> Any:
        for f in self._before:
            await maybeDeferred(invoke, f, route, msg, session)
        response = await maybeDeferred(invoke, handler, msg, session)
        for after in self._after:
            response = await maybeDeferred(invoke, after, route, msg, session, response)
        return response

    def check(self, client_type: Any, version: Any) -> bool:
        """Apply the C{check_client} hook (true when there is none)."""
        return self.check_client is None or bool(self.check_client(client_type, version))


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
