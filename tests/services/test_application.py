"""Tests for L{pomelo_twisted.services.application}: routes, handler lookup, filters and hooks
(protocol.md §10.1, §20 items 33-34), without a connector.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.services.application import Application, HandlerError, RouteNotFound, invoke

SESSION = object()  # dispatch only passes the session through


class Handlers:
    """A handler object: public methods are routes, the rest are not."""

    def __init__(self) -> None:
        self.state = "x"

    def entry(self, msg: Any, session: Any) -> Any:
        return {"code": 200, "msg": msg}

    def other(self, msg: Any, session: Any) -> Any:
        return "other"

    def _private(self, msg: Any, session: Any) -> Any:
        return "private"

    def __call__(self, msg: Any, session: Any) -> Any:
        return "call"

    attribute = 5


class MoreHandlers(Handlers):
    def extra(self, msg: Any, session: Any) -> Any:
        return "extra"


class HandlerErrorTests(SynchronousTestCase):
    """Pomelo's C{next(err, resp)} merge rule (§10.1, §20 item 34)."""

    def test_no_response(self) -> None:
        self.assertEqual(HandlerError().response, {"code": 500})
        self.assertEqual(HandlerError(None).response, {"code": 500})

    def test_code_kept(self) -> None:
        self.assertEqual(HandlerError({"code": 3}).response, {"code": 3})
        self.assertEqual(HandlerError({"code": 3, "msg": "m"}).response, {"code": 3, "msg": "m"})
        self.assertEqual(HandlerError({"code": "E_X"}).response, {"code": "E_X"})

    def test_falsy_code_becomes_500(self) -> None:
        for response in ({}, {"code": 0}, {"code": None}, {"code": ""}, {"msg": "m"}):
            self.assertEqual(HandlerError(response).response["code"], 500, response)
        self.assertEqual(HandlerError({"msg": "m"}).response, {"msg": "m", "code": 500})

    def test_caller_dict_untouched(self) -> None:
        original = {"msg": "m"}
        HandlerError(original)
        self.assertEqual(original, {"msg": "m"})

    def test_message(self) -> None:
        self.assertEqual(str(HandlerError({"code": 3}, "why")), "why")
        self.assertIn("3", str(HandlerError({"code": 3})))

    def test_route_not_found(self) -> None:
        e = RouteNotFound("a.b.c")
        self.assertIsInstance(e, HandlerError)
        self.assertEqual(e.response, {"code": 500})
        self.assertEqual(e.route, "a.b.c")


class RegistrationTests(SynchronousTestCase):
    def test_add_handler(self) -> None:
        app = Application()
        self.assertEqual(app.server_type, "connector")
        self.assertIsNone(app.config_dir)
        app.add_handler("connector.h.m", lambda msg, session: 1)
        self.assertEqual(app.routes, ["connector.h.m"])

    def test_bad_routes(self) -> None:
        app = Application()
        for route in ("", "a", "a.b", "a.b.c.d", "a..c", ".b.c", "a.b."):
            self.assertRaises(ValueError, app.add_handler, route, lambda msg, session: 1)
        self.assertEqual(app.routes, [])

    def test_duplicate(self) -> None:
        app = Application()
        app.add_handler("a.b.c", lambda msg, session: 1)
        self.assertRaises(ValueError, app.add_handler, "a.b.c", lambda msg, session: 2)

    def test_decorator(self) -> None:
        app = Application()

        @app.route("connector.h.m")
        def handler(msg: Any, session: Any) -> Any:
            return msg

        self.assertTrue(callable(handler))
        self.assertEqual(app.dispatch("connector.h.m", 5, SESSION), 5)

    def test_handler_object(self) -> None:
        """Only public methods of the object's own class become routes."""
        app = Application()
        app.add_handler_object("entryHandler", Handlers())
        self.assertEqual(
            sorted(app.routes), ["connector.entryHandler.entry", "connector.entryHandler.other"]
        )
        self.assertEqual(
            app.dispatch("connector.entryHandler.entry", 1, SESSION), {"code": 200, "msg": 1}
        )

    def test_handler_object_not_inherited(self) -> None:
        app = Application()
        app.add_handler_object("h", MoreHandlers())
        self.assertEqual(app.routes, ["connector.h.extra"])

    def test_handler_object_server_type(self) -> None:
        app = Application("area")
        app.add_handler_object("h", Handlers())
        app.add_handler_object("h", Handlers(), server_type="chat")
        self.assertEqual(
            sorted(app.routes), ["area.h.entry", "area.h.other", "chat.h.entry", "chat.h.other"]
        )


class DispatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Application()
        self.app.add_handler_object("entryHandler", Handlers())

    def test_sync(self) -> None:
        self.assertEqual(self.app.dispatch("connector.entryHandler.other", {}, SESSION), "other")

    def test_session_passed(self) -> None:
        seen: list[Any] = []
        self.app.add_handler("connector.x.y", lambda msg, session: seen.append((msg, session)))
        self.assertIsNone(self.app.dispatch("connector.x.y", {"a": 1}, SESSION))
        self.assertEqual(seen, [({"a": 1}, SESSION)])

    def test_unreachable_names(self) -> None:
        """REC §10.1, B17: lookup is a whitelist; no attribute is ever reached."""
        for route in (
            "connector.entryHandler.constructor",
            "connector.entryHandler.__init__",
            "connector.entryHandler.__class__",
            "connector.entryHandler.__call__",
            "connector.entryHandler._private",
            "connector.entryHandler.attribute",
            "connector.entryHandler.state",
            "connector.entryHandler.__proto__",
            "connector.entryHandler.__dict__",
            "connector.entryHandler",
            "connector.entryHandler.entry.x",
            "entry",
            "",
            "chat.entryHandler.entry",
            "connector.EntryHandler.entry",
        ):
            e = self.assertRaises(RouteNotFound, self.app.dispatch, route, {}, SESSION)
            self.assertEqual(e.response, {"code": 500})
            self.assertEqual(e.route, route)

    def test_handler_error_propagates(self) -> None:
        def h(msg: Any, session: Any) -> Any:
            raise HandlerError({"code": 3})

        self.app.add_handler("connector.x.y", h)
        e = self.assertRaises(HandlerError, self.app.dispatch, "connector.x.y", {}, SESSION)
        self.assertEqual(e.response, {"code": 3})

    def test_deferred_returned_as_is(self) -> None:
        d: Deferred[Any] = Deferred()
        self.app.add_handler("connector.x.y", lambda msg, session: d)
        self.assertIs(self.app.dispatch("connector.x.y", {}, SESSION), d)

    def test_coroutine(self) -> None:
        d: Deferred[Any] = Deferred()

        async def h(msg: Any, session: Any) -> Any:
            return {"got": await d}

        self.app.add_handler("connector.x.y", h)
        result = self.app.dispatch("connector.x.y", {}, SESSION)
        self.assertIsInstance(result, Deferred)
        self.assertNoResult(result)
        d.callback(1)
        self.assertEqual(self.successResultOf(result), {"got": 1})

    def test_coroutine_raises(self) -> None:
        async def h(msg: Any, session: Any) -> Any:
            raise HandlerError({"code": 9})

        self.app.add_handler("connector.x.y", h)
        failure = self.failureResultOf(
            self.app.dispatch("connector.x.y", {}, SESSION), HandlerError
        )
        self.assertEqual(failure.value.response, {"code": 9})


class FilterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Application()
        self.log: list[Any] = []

        @self.app.route("connector.h.m")
        def handler(msg: Any, session: Any) -> Any:
            self.log.append(("handler", msg))
            return {"r": msg}

    def dispatch(self, msg: Any = 1) -> Deferred[Any]:
        result = self.app.dispatch("connector.h.m", msg, SESSION)
        self.assertIsInstance(result, Deferred)
        return result

    def test_before_and_after_arguments(self) -> None:
        @self.app.before
        def before(route: str, msg: Any, session: Any) -> None:
            self.log.append(("before", route, msg, session))

        @self.app.after
        def after(route: str, msg: Any, session: Any, response: Any) -> Any:
            self.log.append(("after", route, msg, session, response))
            return response

        self.assertEqual(self.successResultOf(self.dispatch()), {"r": 1})
        self.assertEqual(
            self.log,
            [
                ("before", "connector.h.m", 1, SESSION),
                ("handler", 1),
                ("after", "connector.h.m", 1, SESSION, {"r": 1}),
            ],
        )

    def test_decorators_return_filter(self) -> None:
        f = self.app.before(lambda route, msg, session: None)
        self.assertTrue(callable(f))

    def test_before_rejects_sync(self) -> None:
        @self.app.before
        def before(route: str, msg: Any, session: Any) -> None:
            raise HandlerError({"code": 401})

        @self.app.after
        def after(route: str, msg: Any, session: Any, response: Any) -> Any:
            self.log.append("after")
            return response

        failure = self.failureResultOf(self.dispatch(), HandlerError)
        self.assertEqual(failure.value.response, {"code": 401})
        self.assertEqual(self.log, [])

    def test_before_rejects_async(self) -> None:
        d: Deferred[None] = Deferred()
        self.app.before(lambda route, msg, session: d)
        result = self.dispatch()
        self.assertNoResult(result)
        self.assertEqual(self.log, [])
        d.errback(HandlerError({"code": 402}))
        self.assertEqual(self.failureResultOf(result, HandlerError).value.response, {"code": 402})
        self.assertEqual(self.log, [])

    def test_before_coroutine(self) -> None:
        async def before(route: str, msg: Any, session: Any) -> None:
            self.log.append("before")

        self.app.before(before)
        self.assertEqual(self.successResultOf(self.dispatch()), {"r": 1})
        self.assertEqual(self.log, ["before", ("handler", 1)])

    def test_after_replaces(self) -> None:
        self.app.after(lambda err, route, msg, session, response: {"wrapped": response})
        self.app.after(lambda err, route, msg, session, response: succeed([response]))
        self.assertEqual(self.successResultOf(self.dispatch()), [{"wrapped": {"r": 1}}])

    def test_after_fails(self) -> None:
        self.app.after(lambda err, route, msg, session, response: fail(HandlerError({"code": 4})))
        self.assertEqual(
            self.failureResultOf(self.dispatch(), HandlerError).value.response, {"code": 4}
        )

    def test_order(self) -> None:
        for name in ("b1", "b2"):
            self.app.before(lambda route, msg, session, name=name: self.log.append(name))
        for name in ("a1", "a2"):
            self.app.after(
                lambda err, route, msg, session, response, name=name: (
                    self.log.append(name) or response
                )
            )
        self.successResultOf(self.dispatch())
        self.assertEqual(self.log, ["b1", "b2", ("handler", 1), "a1", "a2"])

    def test_unknown_route_before_filters(self) -> None:
        self.app.before(lambda route, msg, session: self.log.append("before"))
        self.assertRaises(RouteNotFound, self.app.dispatch, "connector.h.nope", 1, SESSION)
        self.assertEqual(self.log, [])

    def test_async_handler_with_filters(self) -> None:
        d: Deferred[Any] = Deferred()
        self.app.add_handler("connector.h.later", lambda msg, session: d)
        self.app.before(lambda route, msg, session: None)
        result = self.app.dispatch("connector.h.later", 1, SESSION)
        self.assertNoResult(result)
        d.callback("done")
        self.assertEqual(self.successResultOf(result), "done")


class HookTests(SynchronousTestCase):
    def test_check_default(self) -> None:
        self.assertTrue(Application().check("t", "v"))

    def test_check_hook(self) -> None:
        app = Application()
        seen: list[Any] = []
        app.check_client = lambda t, v: seen.append((t, v)) or v == "ok"
        self.assertTrue(app.check("js", "ok"))
        self.assertFalse(app.check("js", "old"))
        self.assertEqual(seen, [("js", "ok"), ("js", "old")])

    def test_check_truthiness(self) -> None:
        app = Application()
        app.check_client = lambda t, v: v  # type: ignore[assignment,return-value]
        self.assertFalse(app.check(None, 0))
        self.assertFalse(app.check(None, ""))
        self.assertTrue(app.check(None, "x"))

    def test_check_raises(self) -> None:
        app = Application()

        def check(t: Any, v: Any) -> bool:
            raise ValueError()

        app.check_client = check
        self.assertRaises(ValueError, app.check, "t", "v")

    def test_invoke(self) -> None:
        self.assertEqual(invoke(lambda a, b: a + b, 1, 2), 3)
        d: Deferred[int] = Deferred()
        self.assertIs(invoke(lambda: d), d)

        async def coro(x: int) -> int:
            return x * 2

        result = invoke(coro, 4)
        self.assertIsInstance(result, Deferred)
        self.assertEqual(self.successResultOf(result), 8)


class HandlerErrorMessageTests(SynchronousTestCase):
    def test_string_is_a_message(self) -> None:
        """HandlerError("text") works like any exception: the answer is {"code": 500}."""
        error = HandlerError("no such player")
        self.assertEqual(error.response, {"code": 500})
        self.assertEqual(str(error), "no such player")
