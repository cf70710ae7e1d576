"""Pomelo's error handlers (``errorHandler``, ``globalErrorHandler``) and after filters that see
errors: L{Application.error_handler}, L{Application.global_error_handler}, L{Application.after}.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.demo import make_app
from pomelo_twisted.protocol.errors import ProtobufError
from pomelo_twisted.protocol.message import MessageType, encode_message
from pomelo_twisted.protocol.package import PackageType, encode_package
from pomelo_twisted.services.application import Application, HandlerError, RouteNotFound
from tests.support.parity import CONFIG, TCPClient, serve

SESSION: Any = object()
ROUTE = "connector.h.m"


class Boom(Exception):
    pass


class ErrorHandlerTests(SynchronousTestCase):
    """C{error_handler}: an C{except} block around the before filters and the handler."""

    def setUp(self) -> None:
        self.app = Application()
        self.seen: list[Any] = []
        self.fails: Exception | None = Boom("handler")

        @self.app.route(ROUTE)
        def handler(msg: Any, session: Any) -> Any:
            self.seen.append(("handler", msg))
            if self.fails is not None:
                raise self.fails
            return {"ok": msg}

    def dispatch(self, msg: Any = 1) -> Deferred[Any]:
        result = self.app.dispatch(ROUTE, msg, SESSION)
        self.assertIsInstance(result, Deferred)
        return result

    def test_returnShapesResponse(self) -> None:
        """What the hook returns is the response, sent as it is; the handler's error is not
        logged: the hook owns it."""

        def hook(err: Exception, route: str, msg: Any, session: Any, response: Any) -> Any:
            self.seen.append((err, route, msg, session, response))
            return {"code": 42, "why": str(err)}

        self.app.error_handler = hook
        self.assertEqual(self.successResultOf(self.dispatch()), {"code": 42, "why": "handler"})
        self.assertEqual(
            self.seen, [("handler", 1), (self.fails, ROUTE, 1, SESSION, {"code": 500})]
        )
        self.assertEqual(self.flushLoggedErrors(Boom), [])

    def test_seesHandlerErrorResponse(self) -> None:
        """A L{HandlerError}'s own response is the default the hook gets."""
        self.fails = HandlerError({"code": 401, "e": "x"})
        self.app.error_handler = lambda err, route, msg, session, response: {"got": response}
        self.assertEqual(self.successResultOf(self.dispatch()), {"got": {"code": 401, "e": "x"}})

    def test_raiseHandlerError(self) -> None:
        """Raising from the hook keeps the request failed, with the raised error's answer."""

        def hook(err: Exception, route: str, msg: Any, session: Any, response: Any) -> Any:
            raise HandlerError({"code": 7}) from err

        self.app.error_handler = hook
        failure = self.failureResultOf(self.dispatch(), HandlerError)
        self.assertEqual(failure.value.response, {"code": 7})
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_hookFailsUnexpectedly(self) -> None:
        """A hook that raises anything else: logged with its traceback, answered code 500."""

        def hook(err: Exception, route: str, msg: Any, session: Any, response: Any) -> Any:
            raise ZeroDivisionError()

        self.app.error_handler = hook
        failure = self.failureResultOf(self.dispatch(), HandlerError)
        self.assertEqual(failure.value.response, {"code": 500})
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.flushLoggedErrors(Boom), [])

    def test_asyncHooks(self) -> None:
        """The hook may return a Deferred or be a coroutine, like a handler."""
        d: Deferred[Any] = Deferred()
        self.app.error_handler = lambda err, route, msg, session, response: d
        result = self.dispatch()
        self.assertNoResult(result)
        d.callback({"later": True})
        self.assertEqual(self.successResultOf(result), {"later": True})

        async def coro(err: Exception, route: str, msg: Any, session: Any, response: Any) -> Any:
            return {"coro": await succeed(str(err))}

        self.app.error_handler = coro
        self.assertEqual(self.successResultOf(self.dispatch()), {"coro": "handler"})

        self.app.error_handler = lambda err, route, msg, session, response: fail(
            HandlerError({"code": 9})
        )
        self.assertEqual(
            self.failureResultOf(self.dispatch(), HandlerError).value.response, {"code": 9}
        )

    def test_beforeFilterError(self) -> None:
        """A before filter's error goes to the hook too, and the handler is not called."""
        self.fails = None

        @self.app.before
        def before(route: str, msg: Any, session: Any) -> None:
            raise HandlerError({"code": 401})

        self.app.error_handler = lambda err, route, msg, session, response: {"seen": response}
        self.assertEqual(self.successResultOf(self.dispatch()), {"seen": {"code": 401}})
        self.assertEqual(self.seen, [])

    def test_successSkipsHook(self) -> None:
        self.fails = None
        self.app.error_handler = lambda *args: self.fail("called on success")
        self.assertEqual(self.successResultOf(self.dispatch(2)), {"ok": 2})

    def test_noHookUnchanged(self) -> None:
        """Without any hook or filter, dispatch stays synchronous and raises as before."""
        self.assertRaises(Boom, self.app.dispatch, ROUTE, 1, SESSION)
        self.fails = None
        self.assertEqual(self.app.dispatch(ROUTE, 3, SESSION), {"ok": 3})


class AfterFilterErrorTests(SynchronousTestCase):
    """After filters run after errors too, and see them (Pomelo's ``after(err, ...)``)."""

    def setUp(self) -> None:
        self.app = Application()
        self.seen: list[Any] = []
        self.fails: Exception | None = HandlerError({"code": 3})

        @self.app.route(ROUTE)
        def handler(msg: Any, session: Any) -> Any:
            if self.fails is not None:
                raise self.fails
            return {"ok": msg}

    def record(
        self, err: Exception | None, route: str, msg: Any, session: Any, response: Any
    ) -> Any:
        self.seen.append((err, route, msg, session, response))
        return response

    def dispatch(self) -> Deferred[Any]:
        return self.app.dispatch(ROUTE, 1, SESSION)  # type: ignore[no-any-return]

    def test_seesSuccess(self) -> None:
        self.fails = None
        self.app.after(self.record)
        self.assertEqual(self.successResultOf(self.dispatch()), {"ok": 1})
        self.assertEqual(self.seen, [(None, ROUTE, 1, SESSION, {"ok": 1})])

    def test_seesError(self) -> None:
        error = self.fails
        self.app.after(self.record)
        failure = self.failureResultOf(self.dispatch(), HandlerError)
        self.assertIs(failure.value, error)
        self.assertEqual(self.seen, [(error, ROUTE, 1, SESSION, {"code": 3})])

    def test_seesUnexpectedError(self) -> None:
        """Any exception: the filters see it with C{{"code": 500}}; it is logged once."""
        self.fails = Boom()
        self.app.after(self.record)
        failure = self.failureResultOf(self.dispatch(), HandlerError)
        self.assertEqual(failure.value.response, {"code": 500})
        self.assertIs(failure.value.__cause__, self.fails)
        self.assertEqual(self.seen, [(self.fails, ROUTE, 1, SESSION, {"code": 500})])
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)

    def test_reshapesErrorResponse(self) -> None:
        """After an error, the filter's response is sent with Pomelo's rule: code 500 unless
        it carries a true code."""
        self.app.after(lambda err, route, msg, session, response: {"note": "x"})
        failure = self.failureResultOf(self.dispatch(), HandlerError)
        self.assertEqual(failure.value.response, {"note": "x", "code": 500})

        self.app = Application()
        self.app.add_handler(ROUTE, lambda msg, session: (_ for _ in ()).throw(Boom()))
        self.app.after(lambda err, route, msg, session, response: {"code": 503})
        failure = self.failureResultOf(self.dispatch(), HandlerError)
        self.assertEqual(failure.value.response, {"code": 503})
        self.flushLoggedErrors(Boom)

    def test_seesHookOutcome(self) -> None:
        """A hook that returns handles the error (filters see none); one that raises passes
        its error on."""
        self.app.after(self.record)
        self.app.error_handler = lambda err, route, msg, session, response: {"handled": True}
        self.assertEqual(self.successResultOf(self.dispatch()), {"handled": True})
        self.assertEqual(self.seen, [(None, ROUTE, 1, SESSION, {"handled": True})])

        replaced = HandlerError({"code": 8})

        def hook(err: Exception, route: str, msg: Any, session: Any, response: Any) -> Any:
            raise replaced

        self.app.error_handler = hook
        self.seen.clear()
        self.assertIs(self.failureResultOf(self.dispatch(), HandlerError).value, replaced)
        self.assertEqual(self.seen, [(replaced, ROUTE, 1, SESSION, {"code": 8})])

    def test_filterErrorPassedOn(self) -> None:
        """A filter that raises replaces the error; the next filters see the new one."""
        self.fails = None
        late = HandlerError({"code": 6})

        def failing(
            err: Exception | None, route: str, msg: Any, session: Any, response: Any
        ) -> Any:
            raise late

        self.app.after(failing)
        self.app.after(self.record)
        self.assertIs(self.failureResultOf(self.dispatch(), HandlerError).value, late)
        self.assertEqual(self.seen, [(late, ROUTE, 1, SESSION, {"code": 6})])

    def test_oldFormDeprecated(self) -> None:
        """A four-argument filter still works, after successes only, with a warning."""
        calls: list[Any] = []

        def old(route: str, msg: Any, session: Any, response: Any) -> Any:
            calls.append(response)
            return {"wrapped": response}

        self.assertIs(self.app.after(old), old)
        [warning] = self.flushWarnings([self.test_oldFormDeprecated])
        self.assertIs(warning["category"], DeprecationWarning)
        self.assertIn("(err, route, msg, session, response)", warning["message"])

        self.assertEqual(
            self.failureResultOf(self.dispatch(), HandlerError).value.response, {"code": 3}
        )
        self.assertEqual(calls, [])
        self.fails = None
        self.assertEqual(self.successResultOf(self.dispatch()), {"wrapped": {"ok": 1}})
        self.assertEqual(calls, [{"ok": 1}])

    def test_newFormWithDefaults(self) -> None:
        """Extra arguments with defaults do not make a filter old-form."""

        def new(err: Any, route: str, msg: Any, session: Any, response: Any, extra: int = 1) -> Any:
            self.seen.append(err)
            return response

        self.app.after(new)
        self.assertEqual(self.flushWarnings([self.test_newFormWithDefaults]), [])
        self.failureResultOf(self.dispatch(), HandlerError)
        self.assertEqual(self.seen, [self.fails])


class GlobalErrorHandlerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Application()
        self.seen: list[Any] = []

    def test_returns(self) -> None:
        def hook(err: Exception, route: Any, msg: Any, session: Any, response: Any) -> Any:
            self.seen.append((err, route, msg, session, response))
            return {"code": 404}

        self.app.global_error_handler = hook
        error = RouteNotFound("connector.x.y")
        d = self.app.handle_global_error(error, "connector.x.y", {"a": 1}, SESSION)
        self.assertEqual(self.successResultOf(d), {"code": 404})
        self.assertEqual(self.seen, [(error, "connector.x.y", {"a": 1}, SESSION, {"code": 500})])

    def test_raises(self) -> None:
        """The Deferred never fails: a raised error gives its own answer."""

        def hook(err: Exception, route: Any, msg: Any, session: Any, response: Any) -> Any:
            raise HandlerError({"code": 410})

        self.app.global_error_handler = hook
        d = self.app.handle_global_error(RouteNotFound(None), None, None, SESSION)
        self.assertEqual(self.successResultOf(d), {"code": 410})

        self.app.global_error_handler = lambda *args: 1 / 0
        d = self.app.handle_global_error(RouteNotFound(None), None, None, SESSION)
        self.assertEqual(self.successResultOf(d), {"code": 500})
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_routeNotFoundNone(self) -> None:
        error = RouteNotFound(None)
        self.assertIsNone(error.route)
        self.assertIn("unknown route code", str(error))
        self.assertEqual(error.response, {"code": 500})


class ThroughTheConnectorTests(SynchronousTestCase):
    """The hooks as a client sees them, over raw TCP in memory."""

    def setUp(self) -> None:
        self.app = Application()
        self.seen: list[Any] = []

        @self.app.route("connector.h.boom")
        def boom(msg: Any, session: Any) -> Any:
            raise Boom("boom")

        @self.app.route("connector.h.ok")
        def ok(msg: Any, session: Any) -> Any:
            return {"code": 200}

        connector, clock = serve(self.app)
        self.client = TCPClient(connector, clock)
        self.session = self.client.start()

    def test_defaultUnchanged(self) -> None:
        self.assertEqual(self.client.request(1, "connector.h.boom", {}), {"code": 500})
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        self.assertEqual(self.client.request(2, "connector.h.nope", {}), {"code": 500})

    def test_errorHandlerAndAfterFilter(self) -> None:
        def hook(err: Exception, route: str, msg: Any, session: Any, response: Any) -> Any:
            self.seen.append(("hook", type(err), route, msg, session))
            return {"code": 501, "error": str(err)}

        def after(err: Any, route: str, msg: Any, session: Any, response: Any) -> Any:
            self.seen.append(("after", err, response))
            return dict(response, after=True)

        self.app.error_handler = hook
        self.app.after(after)
        self.assertEqual(
            self.client.request(1, "connector.h.boom", {"a": 1}),
            {"code": 501, "error": "boom", "after": True},
        )
        self.assertEqual(
            self.seen,
            [
                ("hook", Boom, "connector.h.boom", {"a": 1}, self.session),
                ("after", None, {"code": 501, "error": "boom"}),
            ],
        )
        self.assertEqual(self.flushLoggedErrors(Boom), [])

    def test_afterFilterSeesError(self) -> None:
        self.app.after(lambda err, route, msg, session, response: {"seen": type(err).__name__})
        self.assertEqual(
            self.client.request(1, "connector.h.boom", {}), {"seen": "Boom", "code": 500}
        )
        self.flushLoggedErrors(Boom)

    def test_globalErrorHandler(self) -> None:
        """Unknown routes (by name or by code) and undecodable bodies reach the global hook,
        notifies included; handlers' errors do not."""

        def hook(err: Exception, route: Any, msg: Any, session: Any, response: Any) -> Any:
            self.seen.append((type(err), route, msg, session is self.session))
            return {"code": 404, "route": route}

        self.app.global_error_handler = hook
        self.assertEqual(
            self.client.request(1, "connector.h.nope", {"a": 1}),
            {"code": 404, "route": "connector.h.nope"},
        )
        # A compressed route code the server never gave out (it has no dictionary).
        unknown_code = encode_package(
            PackageType.DATA, encode_message(MessageType.REQUEST, 2, 7, b"{}")
        )
        [answer] = self.client.send(unknown_code)
        self.assertIn(b'"route":null', answer.body)
        self.assertEqual(self.client.notify("connector.h.nope", {}), [])
        self.assertEqual(
            self.seen,
            [
                (RouteNotFound, "connector.h.nope", {"a": 1}, True),
                (RouteNotFound, None, None, True),
                (RouteNotFound, "connector.h.nope", {}, True),
            ],
        )
        self.assertEqual(self.client.request(3, "connector.h.boom", {}), {"code": 500})
        self.assertEqual(len(self.seen), 3)
        self.flushLoggedErrors(Boom)

    def test_handlerProtobufErrorIsTheHandlers(self) -> None:
        """A codec error raised inside a handler (a push that does not fit its proto) is the
        handler's error, not a bad request body: the global hook never sees it."""

        @self.app.route("connector.h.codec")
        def codec(msg: Any, session: Any) -> Any:
            raise ProtobufError("push does not fit")

        self.app.global_error_handler = lambda *args: self.seen.append(args)
        self.assertEqual(self.client.request(1, "connector.h.codec", {}), {"code": 500})
        self.assertEqual(self.seen, [])
        self.assertEqual(len(self.flushLoggedErrors(ProtobufError)), 1)

    def test_globalErrorHandlerBadBody(self) -> None:
        """A protobuf body that does not decode: the hook gets the codec's error, no message."""
        app = make_app()
        app.global_error_handler = lambda err, route, msg, session, response: self.seen.append(
            (type(err), route, msg)
        )
        connector, clock = serve(app, replace(CONFIG, use_protobuf=True))
        client = TCPClient(connector, clock)
        client.start()
        route = "connector.entryHandler.proto"
        bad = encode_package(
            PackageType.DATA, encode_message(MessageType.REQUEST, 1, route, b"\x08")
        )
        [answer] = client.send(bad)  # answered, with the proto's empty body for a misfit
        self.assertEqual(answer.body, b"\x04\x01")
        self.assertEqual(self.seen, [(ProtobufError, route, None)])
