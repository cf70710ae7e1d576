"""Dispatch to the application through the connector (protocol.md §10, §20 items 33-34):
handler results, errors and asynchronous answers, and the before/after filters.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from pomelo_twisted.protocol.connection import ConnectionState
from pomelo_twisted.services.application import HandlerError
from tests.support.connector import (
    ConnectorTestCase,
    TemplateApp,
    make_test_app,
    notify,
    request,
    response,
)
from tests.support.vectors import h


class DispatchTests(ConnectorTestCase):
    def setUp(self) -> None:
        self.app = make_test_app()
        self.connector(self.app)
        self.client_ = self.client().connect()

    def ask(self, mid: int, route: str | int, body: bytes = b"{}") -> bytes:
        return self.client_.exchange(request(mid, route, body))

    def test_bad_routes(self) -> None:
        """§10.1 and REC: every route that reaches no handler is answered C{{"code":500}}."""
        routes = [
            "connector.testHandler.nope",
            "connector.nopeHandler.echo",
            "",
            "nodots",
            "connector.testHandler",
            "connector.testHandler.echo.extra",
            "connector..echo",
            ".testHandler.echo",
            "connector.testHandler.constructor",
            "connector.testHandler.__init__",
            "connector.testHandler.__class__",
            "connector.testHandler.__proto__",
            "connector.__class__.__init__",
            "chat.chatHandler.send",
            "area.testHandler.echo",
            "connector.testHandler.ECHO",
        ]
        for i, route in enumerate(routes, 1):
            self.assertEqual(self.ask(i, route), response(i, b'{"code":500}'), route)
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]
        self.assertIs(self.client_.state, ConnectionState.WORKING)

    def test_bad_routes_notify(self) -> None:
        for route in (
            "connector.testHandler.nope",
            "nodots",
            "a.b",
            "connector.testHandler.constructor",
        ):
            self.assertEqual(self.client_.exchange(notify(route)), b"")
        self.assertIs(self.client_.state, ConnectionState.WORKING)

    def test_constructor_is_not_a_kick(self) -> None:
        """Upstream kicks with "attack"; the whitelist just answers 500 (REC)."""
        self.assertEqual(
            self.ask(1, "connector.entryHandler.constructor"), response(1, b'{"code":500}')
        )
        self.assertFalse(self.client_.transport.closed)

    def test_handler_error_keeps_code(self) -> None:
        """§20 item 34: C{next(err, {code: 3})} keeps 3."""
        self.assertEqual(
            self.ask(1, "connector.testHandler.code3"), response(1, b'{"code":3,"msg":"three"}')
        )

    def test_bare_handler_error(self) -> None:
        """C{next(err)} gives C{{"code":500}}."""
        self.assertEqual(self.ask(1, "connector.testHandler.bare"), response(1, b'{"code":500}'))

    def test_handler_error_without_code(self) -> None:
        self.assertEqual(
            self.ask(1, "connector.testHandler.nocode"), response(1, b'{"msg":"x","code":500}')
        )

    def test_exception(self) -> None:
        self.assertEqual(self.ask(1, "connector.testHandler.boom"), response(1, b'{"code":500}'))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertIs(self.client_.state, ConnectionState.WORKING)

    def test_exception_in_notify(self) -> None:
        self.assertEqual(self.client_.exchange(notify("connector.testHandler.boom")), b"")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_none_is_empty_object(self) -> None:
        self.assertEqual(self.ask(1, "connector.testHandler.none"), h("04 00 00 04 04 01 7b 7d"))

    def test_falsy_results_are_empty_object(self) -> None:
        """C{next(null, resp)}: C{resp}, or C{{}} if resp is falsy (JavaScript truthiness)."""
        for i, (body, answer) in enumerate(
            (
                (b"0", b"{}"),
                (b"false", b"{}"),
                (b'""', b"{}"),
                (b"null", b"{}"),
                (b"[]", b"[]"),
                (b"1", b"1"),
            ),
            1,
        ):
            self.assertEqual(
                self.ask(i, "connector.testHandler.echo", body), response(i, answer), body
            )

    def test_notify_never_answered(self) -> None:
        for route in (
            "connector.testHandler.echo",
            "connector.testHandler.none",
            "connector.testHandler.code3",
        ):
            self.assertEqual(self.client_.exchange(notify(route, b'{"n":1}')), b"")
        self.assertEqual(
            self.app.calls,
            [("echo", {"n": 1}), ("none", {"n": 1})],  # type: ignore[attr-defined]
        )

    def test_handler_gets_session(self) -> None:
        seen: list[Any] = []
        self.app.add_handler(
            "connector.testHandler.who",
            lambda msg, session: seen.append(session) or {"id": session.id},
        )
        written = self.ask(1, "connector.testHandler.who")
        self.assertEqual(seen, [self.client_.session])
        self.assertEqual(written, response(1, b'{"id":%d}' % self.client_.session.id))

    def test_deferred_handler(self) -> None:
        pending: list[Deferred[Any]] = []

        def later(msg: Any, session: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            return d

        self.app.add_handler("connector.testHandler.later", later)
        self.assertEqual(self.ask(1, "connector.testHandler.later"), b"")
        self.assertEqual(self.ask(2, "connector.testHandler.later"), b"")
        # Answers may come in any order; each carries its own id (§10.3).
        pending[1].callback({"n": 2})
        self.assertEqual(b"".join(self.client_.turn()), response(2, b'{"n":2}'))
        pending[0].callback(None)
        self.assertEqual(b"".join(self.client_.turn()), response(1, b"{}"))

    def test_deferred_handler_fails(self) -> None:
        pending: list[Deferred[Any]] = []
        self.app.add_handler(
            "connector.testHandler.later",
            lambda msg, session: pending.append(Deferred()) or pending[-1],
        )
        self.ask(1, "connector.testHandler.later")
        self.ask(2, "connector.testHandler.later")
        pending[0].errback(HandlerError({"code": 3}))
        pending[1].errback(ZeroDivisionError())
        self.assertEqual(
            b"".join(self.client_.turn()), response(1, b'{"code":3}') + response(2, b'{"code":500}')
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_coroutine_handler(self) -> None:
        pending: list[Deferred[Any]] = []

        async def later(msg: Any, session: Any) -> Any:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            value = await d
            if value == "fail":
                raise HandlerError({"code": 7})
            return {"v": value}

        self.app.add_handler("connector.testHandler.later", later)
        self.assertEqual(self.ask(1, "connector.testHandler.later"), b"")
        self.assertEqual(self.ask(2, "connector.testHandler.later"), b"")
        pending[0].callback(5)
        pending[1].callback("fail")
        self.assertEqual(
            b"".join(self.client_.turn()), response(1, b'{"v":5}') + response(2, b'{"code":7}')
        )

    def test_coroutine_handler_raises(self) -> None:
        async def bad(msg: Any, session: Any) -> Any:
            raise HandlerError({"code": 7})

        async def worse(msg: Any, session: Any) -> Any:
            raise LookupError()

        self.app.add_handler("connector.testHandler.bad", bad)
        self.app.add_handler("connector.testHandler.worse", worse)
        self.assertEqual(self.ask(1, "connector.testHandler.bad"), response(1, b'{"code":7}'))
        self.assertEqual(self.ask(2, "connector.testHandler.worse"), response(2, b'{"code":500}'))
        self.assertEqual(len(self.flushLoggedErrors(LookupError)), 1)

    def test_async_notify_never_answered(self) -> None:
        d: Deferred[Any] = Deferred()
        self.app.add_handler("connector.testHandler.later", lambda msg, session: d)
        self.assertEqual(self.client_.exchange(notify("connector.testHandler.later")), b"")
        d.callback({"x": 1})
        self.assertEqual(self.client_.turn(), [])

    def test_async_answer_after_close(self) -> None:
        d: Deferred[Any] = Deferred()
        self.app.add_handler("connector.testHandler.later", lambda msg, session: d)
        self.ask(1, "connector.testHandler.later")
        self.client_.lose()
        d.callback({"x": 1})
        self.assertEqual(self.client_.turn(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unserialisable_response(self) -> None:
        self.app.add_handler("connector.testHandler.odd", lambda msg, session: {"x": object()})
        self.assertEqual(self.ask(1, "connector.testHandler.odd"), response(1, b'{"code":500}'))
        self.flushLoggedErrors(TypeError)

    def test_protobuf_response_does_not_fit(self) -> None:
        """§9.3.4 REC: a response that does not fit its proto goes out with an empty body."""
        app = TemplateApp.make(self, entry_answer={"msg": "required code missing"})
        self.connector(app)
        client = self.client().connect()
        self.assertEqual(
            client.exchange(request(5, 1, h("0a 03 62 6f 62"))), h("04 00 00 02 04 05")
        )
        app2 = TemplateApp.make(self, entry_answer={"code": -1})
        self.connector(app2)
        client = self.client().connect()
        self.assertEqual(
            client.exchange(request(6, 1, h("0a 03 62 6f 62"))), h("04 00 00 02 04 06")
        )

    def test_bad_protobuf_request(self) -> None:
        """§15.2: an undecodable protobuf body: the request is refused, nothing crashes."""
        app = TemplateApp.make(self)
        self.connector(app, use_protobuf=True)
        client = self.client().connect()
        # Unknown tag 7; the response for this route is protobuf, and {"code":500} lacks
        # nothing the entry proto requires, so it encodes as code=500.
        written = client.exchange(request(5, 1, h("38 01")))
        self.assertEqual(written, h("04 00 00 05 04 05 08 f4 03"))
        self.assertEqual(app.received, [])  # type: ignore[attr-defined]
        self.assertEqual(client.exchange(notify(1, h("38 01"))), b"")
        self.assertIs(client.state, ConnectionState.WORKING)

    def test_response_too_large(self) -> None:
        """A response body over 16 MiB cannot be framed: the client gets 500, nothing raises."""
        self.app.add_handler(
            "connector.testHandler.huge", lambda msg, session: {"x": "a" * 0xFFFFFF}
        )
        self.assertEqual(self.ask(1, "connector.testHandler.huge"), response(1, b'{"code":500}'))
        self.assertIs(self.client_.state, ConnectionState.WORKING)


class FilterTests(ConnectorTestCase):
    def setUp(self) -> None:
        self.app = make_test_app()
        self.log: list[Any] = []
        self.connector(self.app)
        self.client_ = self.client().connect()

    def ask(self, mid: int, route: str, body: bytes = b"{}") -> bytes:
        return self.client_.exchange(request(mid, route, body))

    def test_sync_before(self) -> None:
        @self.app.before
        def before(route: str, msg: Any, session: Any) -> None:
            self.log.append((route, msg, session))

        self.assertEqual(
            self.ask(1, "connector.testHandler.echo", b'{"a":1}'), response(1, b'{"a":1}')
        )
        self.assertEqual(self.log, [("connector.testHandler.echo", {"a": 1}, self.client_.session)])

    def test_before_rejects(self) -> None:
        @self.app.before
        def before(route: str, msg: Any, session: Any) -> None:
            if msg.get("deny"):
                raise HandlerError({"code": 401})

        self.assertEqual(
            self.ask(1, "connector.testHandler.echo", b'{"deny":1}'), response(1, b'{"code":401}')
        )
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]
        self.assertEqual(
            self.ask(2, "connector.testHandler.echo", b'{"ok":1}'), response(2, b'{"ok":1}')
        )
        self.assertEqual(
            self.client_.exchange(notify("connector.testHandler.echo", b'{"deny":1}')), b""
        )
        self.assertEqual(self.app.calls, [("echo", {"ok": 1})])  # type: ignore[attr-defined]

    def test_before_raises(self) -> None:
        @self.app.before
        def before(route: str, msg: Any, session: Any) -> None:
            raise OSError("filter bug")

        self.assertEqual(self.ask(1, "connector.testHandler.echo"), response(1, b'{"code":500}'))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_async_before(self) -> None:
        d: Deferred[None] = Deferred()

        @self.app.before
        def before(route: str, msg: Any, session: Any) -> Deferred[None]:
            return d

        self.assertEqual(self.ask(1, "connector.testHandler.echo"), b"")
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]
        d.callback(None)
        self.assertEqual(b"".join(self.client_.turn()), response(1, b"{}"))

    def test_async_before_rejects(self) -> None:
        @self.app.before
        async def before(route: str, msg: Any, session: Any) -> None:
            raise HandlerError({"code": 403, "why": "no"})

        self.assertEqual(
            self.ask(1, "connector.testHandler.echo"), response(1, b'{"code":403,"why":"no"}')
        )
        self.assertEqual(self.app.calls, [])  # type: ignore[attr-defined]

    def test_after_changes_response(self) -> None:
        @self.app.after
        def after(route: str, msg: Any, session: Any, resp: Any) -> Any:
            self.log.append((route, msg, resp))
            return {"wrapped": resp}

        self.assertEqual(
            self.ask(1, "connector.testHandler.echo", b"[1]"), response(1, b'{"wrapped":[1]}')
        )
        self.assertEqual(self.log, [("connector.testHandler.echo", [1], [1])])

    def test_async_after(self) -> None:
        @self.app.after
        async def after(route: str, msg: Any, session: Any, resp: Any) -> Any:
            return {"n": 1}

        @self.app.after
        def after2(route: str, msg: Any, session: Any, resp: Any) -> Any:
            return succeed({"n": resp["n"] + 1})

        self.assertEqual(self.ask(1, "connector.testHandler.echo"), response(1, b'{"n":2}'))

    def test_filters_order(self) -> None:
        for name in ("b1", "b2"):
            self.app.before(lambda route, msg, session, name=name: self.log.append(name))
        for name in ("a1", "a2"):
            self.app.after(
                lambda err, route, msg, session, resp, name=name: self.log.append(name) or resp
            )
        self.assertEqual(self.ask(1, "connector.testHandler.echo"), response(1, b"{}"))
        self.assertEqual(self.log, ["b1", "b2", "a1", "a2"])

    def test_filters_skipped_for_unknown_route(self) -> None:
        self.app.before(lambda route, msg, session: self.log.append(route))
        self.assertEqual(self.ask(1, "connector.testHandler.nope"), response(1, b'{"code":500}'))
        self.assertEqual(self.log, [])

    def test_handler_error_with_filters(self) -> None:
        self.app.before(lambda route, msg, session: None)
        self.assertEqual(
            self.ask(1, "connector.testHandler.code3"), response(1, b'{"code":3,"msg":"three"}')
        )
        self.assertEqual(self.ask(2, "connector.testHandler.boom"), response(2, b'{"code":500}'))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
