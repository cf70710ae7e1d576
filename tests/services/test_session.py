"""Tests for L{pomelo_twisted.services.session}: the session service (protocol.md §12, §13,
§18 B15/B16, §20 items 38-40)."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from pomelo_twisted.protocol.errors import EncodeError, PomeloError
from pomelo_twisted.services.interfaces import ISessionConnection, ISessionService
from pomelo_twisted.services.session import Session, SessionError, SessionService
from tests.support.sessions import (
    PUSH_HI_DICT,
    PUSH_HI_PLAIN,
    BrokenConnection,
    FakeConnection,
    connect,
    make_codec,
)
from tests.support.vectors import h


def assert_empty(case: SynchronousTestCase, service: SessionService) -> None:
    """Nothing of any session remains in the service's maps."""
    case.assertEqual(service._sessions, {})
    case.assertEqual(service._uid_map, {})
    case.assertEqual(service.sessions_count, 0)


class InterfaceTests(SynchronousTestCase):
    def test_service_provides(self) -> None:
        """L{SessionService} provides L{ISessionService} with the declared signatures."""
        self.assertTrue(verifyClass(ISessionService, SessionService))
        self.assertTrue(verifyObject(ISessionService, SessionService(make_codec())))

    def test_fake_provides(self) -> None:
        """The fake used in these tests is a faithful L{ISessionConnection}."""
        self.assertTrue(verifyObject(ISessionConnection, FakeConnection()))

    def test_session_error_is_pomelo_error(self) -> None:
        """Transports and handlers catch L{PomeloError}; L{SessionError} is one."""
        self.assertTrue(issubclass(SessionError, PomeloError))


class CreateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = SessionService(make_codec(), server_id="connector-7")

    def test_fields(self) -> None:
        """A new session is unbound, open, empty, and on this frontend."""
        session, conn = connect(self.service)
        self.assertEqual(session.id, 1)
        self.assertEqual(session.frontend_id, "connector-7")
        self.assertIsNone(session.uid)
        self.assertEqual(session.settings, {})
        self.assertIs(session.connection, conn)
        self.assertFalse(session.closed)

    def test_ids_count_from_one_per_service(self) -> None:
        """Session ids are 1, 2, 3... in each service independently, never reused."""
        ids = [connect(self.service)[0].id for _ in range(3)]
        self.assertEqual(ids, [1, 2, 3])
        self.service.remove(3, "gone")
        self.assertEqual(connect(self.service)[0].id, 4)
        self.assertEqual(connect(SessionService(make_codec()))[0].id, 1)

    def test_default_server_id(self) -> None:
        """The frontend id defaults to Pomelo's conventional first connector id."""
        session, _ = connect(SessionService(make_codec()))
        self.assertEqual(session.frontend_id, "connector-server-1")

    def test_get_and_count(self) -> None:
        """get() finds open sessions by id and None otherwise; the count follows."""
        a, _ = connect(self.service)
        b, _ = connect(self.service)
        self.assertIs(self.service.get(a.id), a)
        self.assertIs(self.service.get(b.id), b)
        self.assertIsNone(self.service.get(99))
        self.assertEqual(self.service.sessions_count, 2)

    def test_address(self) -> None:
        """The address is the connection's peer, also by session id; None for unknown ids."""
        session, conn = connect(self.service, port=5555)
        self.assertIs(session.address, conn.peer)
        self.assertIs(self.service.get_client_address_by_session_id(session.id), conn.peer)
        self.assertIsNone(self.service.get_client_address_by_session_id(99))

    def test_settings(self) -> None:
        """set/get/remove act on the settings; absent keys give the default."""
        session, _ = connect(self.service)
        session.set("room", "lobby")
        self.assertEqual(session.get("room"), "lobby")
        self.assertEqual(session.settings, {"room": "lobby"})
        session.remove("room")
        session.remove("never-set")
        self.assertIsNone(session.get("room"))
        self.assertEqual(session.get("room", 3), 3)
        self.assertEqual(session.settings, {})

    def test_slots(self) -> None:
        """Sessions have no per-instance dict (one per connection adds up)."""
        session, _ = connect(self.service)
        self.assertFalse(hasattr(session, "__dict__"))
        self.assertRaises(AttributeError, setattr, session, "nickname", "x")

    def test_repr(self) -> None:
        session, _ = connect(self.service)
        session.bind("alice")
        self.assertEqual(repr(session), "<Session id=1 uid='alice' frontend='connector-7'>")


class BindTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = SessionService(make_codec())

    def test_bind(self) -> None:
        """bind() sets the uid and lists the session under it."""
        session, _ = connect(self.service)
        self.service.bind(session.id, "alice")
        self.assertEqual(session.uid, "alice")
        self.assertEqual(self.service.get_by_uid("alice"), [session])

    def test_session_bind_delegates(self) -> None:
        """Session.bind/unbind go through the service (and its checks)."""
        session, _ = connect(self.service)
        session.bind("alice")
        self.assertEqual(self.service.get_by_uid("alice"), [session])
        session.unbind("alice")
        self.assertIsNone(session.uid)
        self.assertEqual(self.service._uid_map, {})
        self.assertRaises(SessionError, session.unbind, "alice")

    def test_get_by_uid_new_list(self) -> None:
        """get_by_uid returns a fresh list: changing it does not change the service."""
        session, _ = connect(self.service)
        session.bind("alice")
        listed = self.service.get_by_uid("alice")
        listed.clear()
        self.assertEqual(self.service.get_by_uid("alice"), [session])
        self.assertIsNot(self.service.get_by_uid("alice"), self.service.get_by_uid("alice"))

    def test_get_by_unknown_uid(self) -> None:
        """An unknown uid has an empty list, not None (and no entry is created)."""
        self.assertEqual(self.service.get_by_uid("nobody"), [])
        self.assertEqual(self.service._uid_map, {})

    def test_bind_missing_session(self) -> None:
        """Binding an unknown sid fails with Pomelo's message."""
        e = self.assertRaises(SessionError, self.service.bind, 42, "alice")
        self.assertEqual(str(e), "session does not exist, sid: 42")
        self.assertEqual((e.sid, e.uid), (42, "alice"))
        self.assertEqual(self.service._uid_map, {})

    def test_bind_same_uid_again(self) -> None:
        """Binding again to the same uid succeeds without listing the session twice."""
        session, _ = connect(self.service)
        events: list[str] = []
        session.on("bind", events.append)
        session.bind("alice")
        session.bind("alice")
        self.assertEqual(self.service.get_by_uid("alice"), [session])
        self.assertEqual(events, ["alice"])

    def test_bind_other_uid(self) -> None:
        """A bound session cannot be bound to another uid; it stays as it was."""
        session, _ = connect(self.service)
        session.bind("alice")
        e = self.assertRaises(SessionError, self.service.bind, session.id, "bob")
        self.assertEqual(str(e), "session has already bound with alice")
        self.assertEqual(session.uid, "alice")
        self.assertEqual(self.service.get_by_uid("bob"), [])

    def test_bind_bad_uid(self) -> None:
        """Uids are non-empty strings; 42 and "42" would otherwise be two different users."""
        session, _ = connect(self.service)
        self.assertRaises(TypeError, self.service.bind, session.id, 42)
        self.assertRaises(TypeError, self.service.bind, session.id, "")
        self.assertRaises(TypeError, self.service.bind, session.id, None)
        self.assertIsNone(session.uid)

    def test_multiple_sessions_by_default(self) -> None:
        """Without singleSession a uid may have several sessions (Pomelo's default)."""
        a, _ = connect(self.service)
        b, _ = connect(self.service)
        a.bind("alice")
        b.bind("alice")
        self.assertEqual(self.service.get_by_uid("alice"), [a, b])

    def test_single_session(self) -> None:
        """With singleSession the new bind fails and the old session is left alone."""
        service = SessionService(make_codec(), single_session=True)
        a, conn_a = connect(service)
        b, _ = connect(service)
        a.bind("alice")
        e = self.assertRaises(SessionError, b.bind, "alice")
        self.assertEqual(
            str(e), "singleSession is enabled, and session has already bound with uid: alice"
        )
        self.assertIsNone(b.uid)
        self.assertEqual(service.get_by_uid("alice"), [a])
        self.assertEqual(conn_a.kicks, [])
        self.assertFalse(a.closed)
        # Re-binding the first session to the same uid is still fine, and once it is gone
        # the uid is free for another session.
        a.bind("alice")
        service.remove(a.id, "gone")
        b.bind("alice")
        self.assertEqual(service.get_by_uid("alice"), [b])

    def test_single_session_after_unbind(self) -> None:
        """singleSession looks at current bindings: after an unbind the uid is free again."""
        service = SessionService(make_codec(), single_session=True)
        a, _ = connect(service)
        b, _ = connect(service)
        a.bind("alice")
        a.unbind("alice")
        b.bind("alice")
        self.assertEqual(service.get_by_uid("alice"), [b])

    def test_unbind(self) -> None:
        """unbind() clears the uid and deletes the uid entry when it empties."""
        session, _ = connect(self.service)
        session.bind("alice")
        self.service.unbind(session.id, "alice")
        self.assertIsNone(session.uid)
        self.assertEqual(self.service.get_by_uid("alice"), [])
        self.assertEqual(self.service._uid_map, {})

    def test_unbind_keeps_other_sessions(self) -> None:
        """Unbinding one of a uid's sessions leaves the others bound."""
        a, _ = connect(self.service)
        b, _ = connect(self.service)
        a.bind("alice")
        b.bind("alice")
        a.unbind("alice")
        self.assertEqual(self.service.get_by_uid("alice"), [b])

    def test_unbind_missing_session(self) -> None:
        e = self.assertRaises(SessionError, self.service.unbind, 7, "alice")
        self.assertEqual(str(e), "session does not exist, sid: 7")

    def test_unbind_unbound_session(self) -> None:
        """An unbound session cannot be unbound."""
        session, _ = connect(self.service)
        e = self.assertRaises(SessionError, self.service.unbind, session.id, "alice")
        self.assertEqual(str(e), "session has not bind with alice")

    def test_unbind_other_uid(self) -> None:
        """A session bound to one uid cannot be unbound from another; it stays bound."""
        session, _ = connect(self.service)
        session.bind("alice")
        e = self.assertRaises(SessionError, self.service.unbind, session.id, "bob")
        self.assertEqual(str(e), "session has not bind with bob")
        self.assertEqual(session.uid, "alice")
        self.assertEqual(self.service.get_by_uid("alice"), [session])

    def test_rebind_after_unbind(self) -> None:
        """After an unbind the session may bind to a different uid."""
        session, _ = connect(self.service)
        session.bind("alice")
        session.unbind("alice")
        session.bind("bob")
        self.assertEqual(self.service.get_by_uid("bob"), [session])
        self.assertEqual(self.service.get_by_uid("alice"), [])

    def test_for_each(self) -> None:
        """for_each_session sees every session; for_each_bound_session only bound ones."""
        a, _ = connect(self.service)
        b, _ = connect(self.service)
        c, _ = connect(self.service)
        a.bind("alice")
        c.bind("alice")
        seen: list[Session] = []
        self.service.for_each_session(seen.append)
        self.assertEqual(seen, [a, b, c])
        seen.clear()
        self.service.for_each_bound_session(seen.append)
        self.assertEqual(seen, [a, c])

    def test_for_each_may_close(self) -> None:
        """Closing sessions from inside for_each_* does not disturb the walk."""
        sessions = [connect(self.service)[0] for _ in range(4)]
        for s in sessions:
            s.bind("alice")
        seen: list[int] = []

        def kick(session: Session) -> None:
            seen.append(session.id)
            session.kick()

        self.service.for_each_bound_session(kick)
        self.assertEqual(seen, [1, 2, 3, 4])
        assert_empty(self, self.service)


class EventTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = SessionService(make_codec())
        self.session, self.conn = connect(self.service)

    def test_bind_unbind_events(self) -> None:
        """bind and unbind fire once each with the uid; so do the service-level events."""
        calls: list[tuple[str, object]] = []
        self.session.on("bind", lambda uid: calls.append(("bind", uid)))
        self.session.on("unbind", lambda uid: calls.append(("unbind", uid)))
        self.service.on("bind_session", lambda s: calls.append(("bind_session", s)))
        self.service.on("unbind_session", lambda s: calls.append(("unbind_session", s)))
        self.session.bind("alice")
        self.session.bind("alice")
        self.session.unbind("alice")
        self.assertEqual(
            calls,
            [
                ("bind_session", self.session),
                ("bind", "alice"),
                ("unbind_session", self.session),
                ("unbind", "alice"),
            ],
        )

    def test_failed_bind_emits_nothing(self) -> None:
        calls: list[object] = []
        self.session.on("bind", calls.append)
        self.service.on("bind_session", calls.append)
        self.session.bind("alice")
        calls.clear()
        self.assertRaises(SessionError, self.session.bind, "bob")
        self.assertRaises(SessionError, self.session.unbind, "bob")
        self.assertEqual(calls, [])

    def test_closed_once(self) -> None:
        """closed and close_session fire exactly once, with the session and the reason,
        after the session has left the service."""
        calls: list[tuple[Any, ...]] = []

        def on_closed(session: Session, reason: Any) -> None:
            calls.append(("closed", session, reason, self.service.get(session.id)))

        self.session.on("closed", on_closed)
        self.service.on("close_session", lambda s, r: calls.append(("close_session", s, r)))
        self.session.bind("alice")
        self.service.remove(self.session.id, "connection lost")
        self.service.remove(self.session.id, "again")
        self.conn.close("and again")
        self.assertEqual(
            calls,
            [
                ("close_session", self.session, "connection lost"),
                ("closed", self.session, "connection lost", None),
            ],
        )
        self.assertTrue(self.session.closed)
        # The uid stays readable, so a close listener can log the user out.
        self.assertEqual(self.session.uid, "alice")

    def test_closed_by_kick_once(self) -> None:
        """A kick closes through the connection, which removes the session once."""
        calls: list[Any] = []
        self.session.on("closed", lambda s, r: calls.append(r))
        self.service.on("close_session", lambda s, r: calls.append(r))
        self.session.bind("alice")
        self.assertEqual(self.service.kick("alice"), 1)
        self.assertFalse(self.session.kick())
        self.assertEqual(calls, ["kick", "kick"])

    def test_raising_session_listener_isolated(self) -> None:
        """A listener that raises is logged; the others still run and the bind stands."""
        calls: list[str] = []
        self.session.on("bind", lambda uid: calls.append("first"))
        self.session.on("bind", lambda uid: 1 // 0)
        self.session.on("bind", lambda uid: calls.append("third"))
        self.session.bind("alice")
        self.assertEqual(calls, ["first", "third"])
        self.assertEqual(self.service.get_by_uid("alice"), [self.session])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_raising_closed_listener_isolated(self) -> None:
        """A raising closed or close_session listener does not stop the removal."""
        calls: list[str] = []
        self.service.on("close_session", lambda s, r: 1 // 0)
        self.service.on("close_session", lambda s, r: calls.append("service"))
        self.session.on("closed", lambda s, r: [][0])
        self.session.on("closed", lambda s, r: calls.append("session"))
        self.session.bind("alice")
        self.service.remove(self.session.id, "bye")
        self.assertEqual(calls, ["service", "session"])
        assert_empty(self, self.service)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(IndexError)), 1)

    def test_raising_service_bind_listener_isolated(self) -> None:
        calls: list[str] = []
        self.service.on("bind_session", lambda s: 1 // 0)
        self.service.on("unbind_session", lambda s: 1 // 0)
        self.session.on("bind", calls.append)
        self.session.on("unbind", calls.append)
        self.session.bind("alice")
        self.session.unbind("alice")
        self.assertEqual(calls, ["alice", "alice"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_unknown_event(self) -> None:
        """A misspelt event name is an error, not a listener that never fires."""
        self.assertRaises(ValueError, self.session.on, "close", print)
        self.assertRaises(ValueError, self.service.on, "closed", print)

    def test_off(self) -> None:
        """off() removes one registration and says whether it found one."""
        calls: list[str] = []
        self.session.on("bind", calls.append)
        self.service.on("bind_session", calls.append)
        self.assertTrue(self.session.off("bind", calls.append))
        self.assertFalse(self.session.off("bind", calls.append))
        self.assertTrue(self.service.off("bind_session", calls.append))
        self.assertFalse(self.service.off("bind_session", calls.append))
        self.session.bind("alice")
        self.assertEqual(calls, [])
        self.assertEqual(self.session._listeners, {})
        self.assertEqual(self.service._listeners, {})

    def test_listener_removing_itself(self) -> None:
        """A listener may unregister itself (or others) while the event is being emitted."""
        calls: list[str] = []

        def once(uid: str) -> None:
            calls.append("once")
            self.session.off("bind", once)

        self.session.on("bind", once)
        self.session.on("bind", lambda uid: calls.append("other"))
        self.session.bind("alice")
        self.session.unbind("alice")
        self.session.bind("alice")
        self.assertEqual(calls, ["once", "other", "other"])


class RemoveTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = SessionService(make_codec())

    def test_nothing_left_behind(self) -> None:
        """After remove() no session, uid entry or listener remains anywhere."""
        a, _ = connect(self.service)
        b, _ = connect(self.service)
        c, _ = connect(self.service)
        a.bind("alice")
        b.bind("alice")
        for s in (a, b, c):
            s.on("bind", print)
            s.on("unbind", print)
            s.on("closed", print)
        for s in (a, b, c):
            self.service.remove(s.id, "connection lost")
            self.assertEqual(s._listeners, {})
            self.assertTrue(s.closed)
        assert_empty(self, self.service)

    def test_remove_one_of_two(self) -> None:
        a, _ = connect(self.service)
        b, _ = connect(self.service)
        a.bind("alice")
        b.bind("alice")
        self.service.remove(a.id, None)
        self.assertEqual(self.service.get_by_uid("alice"), [b])
        self.assertEqual(list(self.service._sessions), [b.id])

    def test_remove_unknown(self) -> None:
        """Removing an unknown sid does nothing (the connection may race a kick)."""
        self.service.remove(12345, "nothing")
        assert_empty(self, self.service)

    def test_closed_session_is_inert(self) -> None:
        """A removed session cannot be found, bound, pushed to, kicked or listened on."""
        session, conn = connect(self.service)
        session.bind("alice")
        self.service.remove(session.id, "gone")
        self.assertIsNone(self.service.get(session.id))
        self.assertEqual(self.service.get_by_uid("alice"), [])
        self.assertRaises(SessionError, session.bind, "bob")
        self.assertRaises(SessionError, session.unbind, "alice")
        self.assertFalse(session.push_message("onChat", {"msg": "hi"}))
        self.assertFalse(session.kick())
        self.assertEqual(self.service.kick("alice"), 0)
        self.assertEqual(conn.packages, [])
        self.assertEqual(conn.kicks, [])
        session.on("closed", print)
        self.assertEqual(session._listeners, {})

    def test_listener_cycle_released(self) -> None:
        """A session's listeners may close over the session; remove() breaks the cycle."""
        session, _ = connect(self.service)
        session.on("closed", lambda s, r: session.get("x"))
        self.service.remove(session.id, "gone")
        self.assertEqual(session._listeners, {})

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["create", "bind", "unbind", "remove", "kick"]),
                st.integers(1, 6),
                st.sampled_from(["u1", "u2", "u3"]),
            ),
            max_size=40,
        ),
        st.booleans(),
    )
    def test_maps_stay_consistent(self, ops: list[tuple[str, int, str]], single: bool) -> None:
        """Whatever the sequence, the uid map holds exactly the open bound sessions, each
        once under its own uid; closing everything leaves the service empty."""
        service = SessionService(make_codec(), single_session=single)
        closed: list[int] = []
        service.on("close_session", lambda s, r: closed.append(s.id))
        for op, sid, uid in ops:
            if op == "create":
                connect(service)
            elif op == "bind":
                with contextlib.suppress(SessionError):
                    service.bind(sid, uid)
            elif op == "unbind":
                with contextlib.suppress(SessionError):
                    service.unbind(sid, uid)
            elif op == "remove":
                service.remove(sid, "gone")
            else:
                service.kick(uid)
            bound = [s for s in service._sessions.values() if s.uid is not None]
            listed = [s for sessions in service._uid_map.values() for s in sessions]
            self.assertEqual(sorted(s.id for s in bound), sorted(s.id for s in listed))
            for u, sessions in service._uid_map.items():
                self.assertTrue(sessions)
                self.assertTrue(all(s.uid == u and not s.closed for s in sessions))
                if single:
                    self.assertEqual(len(sessions), 1)
        self.assertEqual(len(closed), len(set(closed)))
        for sid in list(service._sessions):
            service.remove(sid, "shutdown")
        assert_empty(self, service)


class KickTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = SessionService(make_codec())

    def test_kick_every_session_of_uid(self) -> None:
        """kick(uid) closes all the uid's sessions with the default reason "kick" (B16)."""
        a, conn_a = connect(self.service)
        b, conn_b = connect(self.service)
        c, conn_c = connect(self.service)
        a.bind("alice")
        b.bind("alice")
        c.bind("bob")
        self.assertEqual(self.service.kick("alice"), 2)
        self.assertEqual(conn_a.kicks, ["kick"])
        self.assertEqual(conn_b.kicks, ["kick"])
        self.assertEqual(conn_c.kicks, [])
        self.assertTrue(a.closed and b.closed)
        self.assertFalse(c.closed)
        self.assertEqual(self.service.get_by_uid("alice"), [])
        self.assertEqual(list(self.service._uid_map), ["bob"])
        self.assertEqual(list(self.service._sessions), [c.id])

    def test_kick_reason(self) -> None:
        a, conn_a = connect(self.service)
        b, conn_b = connect(self.service)
        a.bind("alice")
        b.bind("alice")
        self.assertEqual(self.service.kick("alice", "relogin"), 2)
        self.assertEqual(conn_a.kicks + conn_b.kicks, ["relogin", "relogin"])

    def test_kick_none_reason(self) -> None:
        """A None reason is passed on: the connection closes without a KICK package."""
        session, conn = connect(self.service)
        session.bind("alice")
        self.service.kick("alice", None)
        self.assertEqual(conn.kicks, [None])

    def test_kick_unknown_uid(self) -> None:
        """Kicking a uid with no session is not an error."""
        _, conn = connect(self.service)
        self.assertEqual(self.service.kick("nobody"), 0)
        self.assertEqual(self.service.kick("nobody", "why"), 0)
        self.assertEqual(conn.kicks, [])
        self.assertEqual(self.service._uid_map, {})

    def test_kick_slow_close(self) -> None:
        """With a connection that closes later, kick() still asks each session once and the
        sessions remain until their connections report the close."""
        a, conn_a = connect(self.service, remove_on_kick=False)
        b, conn_b = connect(self.service, remove_on_kick=False)
        a.bind("alice")
        b.bind("alice")
        self.assertEqual(self.service.kick("alice"), 2)
        self.assertEqual(conn_a.kicks + conn_b.kicks, ["kick", "kick"])
        self.assertEqual(self.service.get_by_uid("alice"), [a, b])
        conn_a.close("kicked")
        conn_b.close("kicked")
        assert_empty(self, self.service)

    def test_kick_by_session_id(self) -> None:
        a, conn_a = connect(self.service)
        b, conn_b = connect(self.service)
        self.assertTrue(self.service.kick_by_session_id(a.id))
        self.assertTrue(self.service.kick_by_session_id(b.id, "attack"))
        self.assertFalse(self.service.kick_by_session_id(a.id))
        self.assertFalse(self.service.kick_by_session_id(99))
        self.assertEqual(conn_a.kicks, ["kick"])
        self.assertEqual(conn_b.kicks, ["attack"])
        assert_empty(self, self.service)

    def test_session_kick(self) -> None:
        """Session.kick() defaults to "kick" too."""
        a, conn_a = connect(self.service)
        b, conn_b = connect(self.service)
        self.assertTrue(a.kick())
        self.assertTrue(b.kick("maintenance"))
        self.assertEqual(conn_a.kicks, ["kick"])
        self.assertEqual(conn_b.kicks, ["maintenance"])

    def test_broken_connection_does_not_stop_kick(self) -> None:
        """A connection whose kick raises is logged; the other sessions are still kicked."""
        broken = BrokenConnection()
        bad = self.service.create(broken)
        good, conn = connect(self.service)
        bad.bind("alice")
        good.bind("alice")
        self.assertEqual(self.service.kick("alice"), 2)
        self.assertEqual(conn.kicks, ["kick"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class PushTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = SessionService(make_codec())

    def test_push_bytes_with_dictionary(self) -> None:
        """A push of a dictionary route carries its 2-byte code."""
        session, conn = connect(self.service)
        self.assertTrue(session.push_message("onChat", {"msg": "hi"}))
        self.assertEqual(conn.packages, [PUSH_HI_DICT])

    def test_push_bytes_without_dictionary(self) -> None:
        """Without a dictionary the route is written out."""
        service = SessionService(make_codec(use_dict=False))
        session, conn = connect(service)
        self.assertTrue(session.push_message("onChat", {"msg": "hi"}))
        self.assertEqual(conn.packages, [PUSH_HI_PLAIN])

    def test_push_route_not_in_dictionary(self) -> None:
        """A route missing from the dictionary is written out even when it is on."""
        session, conn = connect(self.service)
        session.push_message("onAdd", {})
        self.assertEqual(conn.packages, [h("04 00 00 09 06 05") + b"onAdd{}"])

    def test_push_refused(self) -> None:
        """A connection that is not working refuses the package: push() says False."""
        session, conn = connect(self.service, working=False)
        self.assertFalse(session.push_message("onChat", {"msg": "hi"}))
        self.assertEqual(conn.packages, [])

    def test_push_by_uids(self) -> None:
        """Every session of each uid gets the very same bytes; offline uids are returned."""
        a, conn_a = connect(self.service)
        b, conn_b = connect(self.service)
        c, conn_c = connect(self.service)
        d, conn_d = connect(self.service)
        a.bind("alice")
        b.bind("alice")
        c.bind("bob")
        d.bind("carol")
        failed = self.service.push_by_uids("onChat", {"msg": "hi"}, ["alice", "dave", "bob"])
        self.assertEqual(failed, ["dave"])
        self.assertEqual(conn_a.packages, [PUSH_HI_DICT])
        package = conn_a.packages[0]
        self.assertIs(conn_b.packages[0], package)
        self.assertIs(conn_c.packages[0], package)
        self.assertEqual(conn_d.packages, [])

    def test_push_by_uids_duplicates(self) -> None:
        """A uid listed twice is served (and reported) once."""
        a, conn_a = connect(self.service)
        a.bind("alice")
        failed = self.service.push_by_uids("onChat", {}, ["alice", "x", "alice", "x"])
        self.assertEqual(failed, ["x"])
        self.assertEqual(len(conn_a.packages), 1)

    def test_push_by_uids_refused_is_not_failed(self) -> None:
        """A uid whose sessions refuse the package is not 'without session' (as Pomelo)."""
        a, conn_a = connect(self.service, working=False)
        a.bind("alice")
        self.assertEqual(self.service.push_by_uids("onChat", {}, ["alice"]), [])
        self.assertEqual(conn_a.packages, [])

    def test_push_by_uids_empty(self) -> None:
        e = self.assertRaises(ValueError, self.service.push_by_uids, "onChat", {}, [])
        self.assertEqual(str(e), "uids should not be empty")

    def test_push_by_session_ids(self) -> None:
        a, conn_a = connect(self.service)
        b, conn_b = connect(self.service)
        _, conn_c = connect(self.service)
        missing = self.service.push_by_session_ids("onChat", {"msg": "hi"}, [b.id, 99, a.id, b.id])
        self.assertEqual(missing, [99])
        self.assertEqual(conn_a.packages, [PUSH_HI_DICT])
        self.assertIs(conn_b.packages[0], conn_a.packages[0])
        self.assertEqual(len(conn_b.packages), 1)
        self.assertEqual(conn_c.packages, [])
        self.assertRaises(ValueError, self.service.push_by_session_ids, "onChat", {}, [])

    def test_broadcast_once_per_session(self) -> None:
        """A broadcast reaches every session once, bound or not, with one encoding."""
        a, conn_a = connect(self.service)
        b, conn_b = connect(self.service)
        _, conn_c = connect(self.service)
        a.bind("alice")
        b.bind("alice")
        self.assertEqual(self.service.broadcast("onChat", {"msg": "hi"}), 3)
        self.assertEqual(conn_a.packages, [PUSH_HI_DICT])
        for conn in (conn_b, conn_c):
            self.assertEqual(len(conn.packages), 1)
            self.assertIs(conn.packages[0], conn_a.packages[0])

    def test_broadcast_binded_once_per_session(self) -> None:
        """A binded broadcast reaches bound sessions only, each once even when their uid has
        two sessions (B15: Pomelo sends N copies to each of a uid's N sessions)."""
        a, conn_a = connect(self.service)
        b, conn_b = connect(self.service)
        c, conn_c = connect(self.service)
        _, conn_d = connect(self.service)
        a.bind("alice")
        b.bind("alice")
        c.bind("bob")
        self.assertEqual(self.service.broadcast("onChat", {"msg": "hi"}, binded=True), 3)
        self.assertEqual(conn_a.packages, [PUSH_HI_DICT])
        for conn in (conn_b, conn_c):
            self.assertEqual(len(conn.packages), 1)
            self.assertIs(conn.packages[0], conn_a.packages[0])
        self.assertEqual(conn_d.packages, [])

    def test_broadcast_counts_delivered(self) -> None:
        """Connections that refuse the package are not counted."""
        connect(self.service)
        connect(self.service, working=False)
        self.assertEqual(self.service.broadcast("onChat", {}), 1)
        self.assertEqual(SessionService(make_codec()).broadcast("onChat", {}), 0)

    def test_broken_connection_does_not_stop_broadcast(self) -> None:
        """A connection that raises is logged and skipped; the rest still get the push."""
        _, first = connect(self.service)
        self.service.create(BrokenConnection())
        _, last = connect(self.service)
        self.assertEqual(self.service.broadcast("onChat", {"msg": "hi"}), 2)
        self.assertEqual(first.packages, [PUSH_HI_DICT])
        self.assertEqual(last.packages, [PUSH_HI_DICT])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_encode_error_sends_nothing(self) -> None:
        """A message that cannot be encoded raises before anything is sent."""
        _, conn = connect(self.service)
        self.assertRaises(TypeError, self.service.broadcast, "onChat", {"x": object()})
        self.assertRaises(EncodeError, self.service.broadcast, "r" * 256, {})
        self.assertEqual(conn.packages, [])
