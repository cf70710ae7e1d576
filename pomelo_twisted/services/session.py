"""Sessions of connected clients (protocol.md §12), in memory and without a reactor.

One L{Session} per connection, created when the connection is admitted and removed exactly once
when it closes. The L{SessionService} keeps the sid -> session and uid -> sessions maps that
push, kick and broadcast walk. Pushes are encoded once per call and the very same package bytes
are handed to every recipient connection, which is what makes a broadcast to N sessions cheap.

Deliberate differences from pomelo 2.2.7 (protocol.md §18):

  - B15: a C{binded} broadcast reaches each bound session once, not once per session of its uid.
  - B16: every kick form defaults to the reason C{"kick"}, so a KICK package is always sent.
  - C{Session.remove(key)} removes a setting (Pomelo deletes an attribute of the session).
  - Errors are raised synchronously instead of being passed to a callback on the next tick.
  - C{Session.push(key)}/C{push_all()} sync settings as Pomelo's do; sending a message to one
    session is C{Session.push_message(route, msg)}.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Callable, Iterable
from typing import Any, overload

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from ..protocol.codec import ServerCodec
from ..protocol.errors import PomeloError
from ..protocol.package import PackageType, encode_package
from .interfaces import ISessionConnection, ISessionService

__all__ = [
    "SERVICE_EVENTS",
    "SESSION_EVENTS",
    "Session",
    "SessionError",
    "SessionService",
]

_log = Logger()

#: Events a L{Session} emits: C{bind(uid)}, C{unbind(uid)}, C{closed(session, reason)}.
SESSION_EVENTS = frozenset({"bind", "unbind", "closed"})
#: Events a L{SessionService} emits (Pomelo's app-level names): C{bind_session(session)},
#: C{unbind_session(session)}, C{close_session(session, reason)}.
SERVICE_EVENTS = frozenset({"bind_session", "unbind_session", "close_session"})

Listener = Callable[..., object]
#: Whether the deprecated C{Session.push(route, msg)} has warned yet (it warns once).
_push_warned = False
#: Pomelo's settings callback: C{cb(err)}, C{err} being C{None} or a L{SessionError}.
SettingsCallback = Callable[[Exception | None], object]


class SessionError(PomeloError):
    """A bind or unbind that Pomelo would refuse; the message is Pomelo's own.

    @ivar sid: the session id the call named.
    @ivar uid: the uid the call named, if any.
    """

    def __init__(self, message: str, sid: int, uid: str | None = None) -> None:
        super().__init__(message)
        self.sid = sid
        self.uid = uid


def _emit(listeners: list[Listener] | None, event: str, *args: Any) -> None:
    """Call every listener of C{event}; one that raises is logged and the others still run."""
    if not listeners:
        return
    for listener in tuple(listeners):  # a listener may add or remove listeners
        try:
            listener(*args)
        except Exception:
            _log.failure("{event!r} listener {listener!r} raised", event=event, listener=listener)


def _check_event(event: str, allowed: frozenset[str]) -> None:
    """Refuse unknown event names, so that a typo does not silently never fire."""
    if event not in allowed:
        raise ValueError(f"unknown event {event!r}; expected one of {sorted(allowed)}")


def _check_uid(uid: object) -> None:
    """Uids are non-empty strings: C{bind(42)} and C{get_by_uid("42")} must not silently differ."""
    if not isinstance(uid, str) or not uid:
        raise TypeError(f"uid must be a non-empty str, not {uid!r}")


def _remove_listener(table: dict[str, list[Listener]], event: str, callback: Listener) -> bool:
    listeners = table.get(event)
    if not listeners or callback not in listeners:
        return False
    listeners.remove(callback)
    if not listeners:
        del table[event]
    return True


class Session:
    """The server-side state of one client connection (Pomelo's ``Session``).

    @ivar id: the session id, unique within its service (Pomelo's ``sid``).
    @ivar frontend_id: the id of the server holding the connection (Pomelo's ``frontendId``).
    @ivar uid: the bound user id, or C{None}; kept after close so C{closed} listeners see it.
    @ivar settings: free key/value data for handlers.
    @ivar connection: the L{ISessionConnection} behind the session.
    @ivar closed: whether the service has removed the session.
    """

    __slots__ = (
        "_listeners",
        "_service",
        "closed",
        "connection",
        "frontend_id",
        "id",
        "settings",
        "uid",
    )

    def __init__(
        self, sid: int, frontend_id: str, connection: ISessionConnection, service: SessionService
    ) -> None:
        self.id = sid
        self.frontend_id = frontend_id
        self.uid: str | None = None
        self.settings: dict[str, Any] = {}
        self.connection = connection
        self.closed = False
        self._service = service
        self._listeners: dict[str, list[Listener]] = {}

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<Session id={self.id} uid={self.uid!r} frontend={self.frontend_id!r}{state}>"

    @property
    def address(self) -> Any:
        """The client's address (an C{IAddress}), as its connection reports it."""
        return self.connection.getPeer()

    # uid binding goes through the service, which owns the uid map.

    def bind(self, uid: str) -> None:
        """Bind this session to C{uid}; see L{SessionService.bind}."""
        self._service.bind(self.id, uid)

    def unbind(self, uid: str) -> None:
        """Unbind this session from C{uid}; see L{SessionService.unbind}."""
        self._service.unbind(self.id, uid)

    # Settings

    def set(self, key: str, value: Any) -> None:
        """Store a setting."""
        self.settings[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        """A setting, or C{default}."""
        return self.settings.get(key, default)

    def remove(self, key: str) -> None:
        """Forget a setting (absent keys are fine)."""
        self.settings.pop(key, None)

    # Settings sync (Pomelo's FrontendSession push/pushAll)

    @overload
    def push(self, key: str, cb: SettingsCallback | None = None) -> Deferred[None]: ...

    @overload
    def push(self, key: str, cb: dict[str, Any] | list[Any] | str | float) -> bool: ...

    def push(self, key: str, cb: Any = None) -> Deferred[None] | bool:
        """Sync the setting C{key} to the session service (Pomelo's ``session.push(key, cb)``).

        Handlers hold the live session, so the setting is there already: this only checks that
        the session is still open. It matters once handlers run on backend servers.

        @param cb: called with C{None}, or with the L{SessionError} of a closed session, as
            Pomelo's callback is.
        @return: a C{Deferred} that has fired: with C{None}, or (without C{cb}) failing with
            L{SessionError} when the session is closed.

        The old call C{push(route, msg)}, a message as second argument, still sends the message
        through L{push_message}, with a C{DeprecationWarning} (the first time only).
        """
        if cb is not None and not callable(cb):
            global _push_warned
            if not _push_warned:  # once per process: a game pushes in its hottest loops
                _push_warned = True
                warnings.warn(
                    "Session.push(route, msg) is deprecated: use Session.push_message(route, "
                    "msg); Session.push(key) now syncs a setting, as in Pomelo",
                    DeprecationWarning,
                    stacklevel=2,
                )
            return self.push_message(key, cb)
        return self._synced(cb)

    def push_all(self, cb: SettingsCallback | None = None) -> Deferred[None]:
        """Sync every setting to the session service (Pomelo's ``session.pushAll(cb)``); see
        L{push}."""
        return self._synced(cb)

    def _synced(self, cb: SettingsCallback | None) -> Deferred[None]:
        error = None
        if self.closed:
            error = SessionError(f"session does not exist, sid: {self.id}", self.id, self.uid)
        if cb is not None:
            cb(error)
            return succeed(None)
        return succeed(None) if error is None else fail(error)

    # Output

    def push_message(self, route: str, msg: Any) -> bool:
        """Push C{msg} on C{route} to this client; return whether the connection took it.

        @raise pomelo_twisted.protocol.errors.PomeloError: the message cannot be encoded.
        @raise TypeError: the body cannot be serialised as JSON.
        """
        package = self._service.encode_push_package(route, msg)
        if self.closed:
            return False
        return self._service._send(self, package)

    def kick(self, reason: str | None = "kick") -> bool:
        """Send a KICK with C{reason} and close; return whether the session was still open."""
        return self._service.kick_by_session_id(self.id, reason)

    # Events

    def on(self, event: str, callback: Listener) -> None:
        """Call C{callback} on C{event}: C{bind(uid)}, C{unbind(uid)} or C{closed(session, reason)}.

        Listeners added to a closed session are dropped: it will never emit again, and keeping
        them would only keep their closures alive.

        @raise ValueError: an unknown event name.
        """
        _check_event(event, SESSION_EVENTS)
        if not self.closed:
            self._listeners.setdefault(event, []).append(callback)

    def off(self, event: str, callback: Listener) -> bool:
        """Remove one registration of C{callback}; return whether there was one."""
        return _remove_listener(self._listeners, event, callback)

    def _emit(self, event: str, *args: Any) -> None:
        _emit(self._listeners.get(event), event, *args)


@implementer(ISessionService)
class SessionService:
    """The sessions of this connector process (Pomelo's ``sessionService``).

    @ivar codec: encodes pushes (route compression and protobuf/JSON bodies).
    @ivar server_id: this frontend's id, given to every session as C{frontend_id}.
    @ivar single_session: at most one session per uid (Pomelo's ``singleSession``): a second
        bind fails, and the first session is left alone.
    """

    def __init__(
        self,
        codec: ServerCodec,
        server_id: str = "connector-server-1",
        single_session: bool = False,
    ) -> None:
        self.codec = codec
        self.server_id = server_id
        self.single_session = single_session
        self._ids = itertools.count(1)
        self._sessions: dict[int, Session] = {}
        self._uid_map: dict[str, list[Session]] = {}
        self._listeners: dict[str, list[Listener]] = {}

    # Lifecycle

    def create(self, connection: ISessionConnection) -> Session:
        """Create and register the session of a newly admitted connection."""
        session = Session(next(self._ids), self.server_id, connection, self)
        self._sessions[session.id] = session
        return session

    def remove(self, sid: int, reason: Any) -> None:
        """Forget a closed session: called by its connection when it closes.

        The session leaves both maps before any listener runs (as in Pomelo), so listeners see
        a service without it. C{closed} and C{close_session} fire once; a second call, or a
        call for an unknown sid, does nothing. The session keeps its C{uid} for the listeners;
        its own listeners are dropped afterwards so nothing they reference stays alive.
        """
        session = self._sessions.pop(sid, None)
        if session is None:
            return
        uid = session.uid
        if uid is not None:
            self._discard_from_uid(session, uid)
        session.closed = True
        _emit(self._listeners.get("close_session"), "close_session", session, reason)
        session._emit("closed", session, reason)
        session._listeners.clear()

    def _discard_from_uid(self, session: Session, uid: str) -> None:
        """Take C{session} out of C{uid}'s list, deleting the list when it empties."""
        sessions = self._uid_map.get(uid)
        if sessions is None:
            return
        with contextlib.suppress(ValueError):
            sessions.remove(session)
        if not sessions:
            del self._uid_map[uid]

    # Lookup

    def get(self, sid: int) -> Session | None:
        """The open session C{sid}, or C{None}."""
        return self._sessions.get(sid)

    def get_by_uid(self, uid: str) -> list[Session]:
        """The sessions bound to C{uid}: a new list, empty if none."""
        return list(self._uid_map.get(uid, ()))

    def for_each_session(self, fn: Callable[[Session], object]) -> None:
        """Call C{fn} on every session (a snapshot: C{fn} may close sessions)."""
        for session in list(self._sessions.values()):
            fn(session)

    def for_each_bound_session(self, fn: Callable[[Session], object]) -> None:
        """Call C{fn} on every session bound to a uid (Pomelo's ``forEachBindedSession``)."""
        for session in [s for sessions in self._uid_map.values() for s in sessions]:
            fn(session)

    @property
    def sessions_count(self) -> int:
        """How many sessions are open."""
        return len(self._sessions)

    def get_client_address_by_session_id(self, sid: int) -> Any:
        """The client address (an C{IAddress}) of session C{sid}, or C{None}."""
        session = self._sessions.get(sid)
        return None if session is None else session.address

    # Binding (§12.2)

    def bind(self, sid: int, uid: str) -> None:
        """Bind session C{sid} to C{uid}; binding again to the same uid is a no-op success.

        @raise SessionError: no such session; the session is bound to another uid; or
            C{single_session} is on and C{uid} already has a session (the old one stays).
        @raise TypeError: C{uid} is not a non-empty string.
        """
        _check_uid(uid)
        session = self._sessions.get(sid)
        if session is None:
            raise SessionError(f"session does not exist, sid: {sid}", sid, uid)
        if session.uid is not None:
            if session.uid == uid:
                return
            raise SessionError(f"session has already bound with {session.uid}", sid, uid)
        sessions = self._uid_map.get(uid)
        if self.single_session and sessions:
            raise SessionError(
                f"singleSession is enabled, and session has already bound with uid: {uid}",
                sid,
                uid,
            )
        if sessions is None:
            sessions = self._uid_map[uid] = []
        sessions.append(session)
        session.uid = uid
        _emit(self._listeners.get("bind_session"), "bind_session", session)
        session._emit("bind", uid)

    def unbind(self, sid: int, uid: str) -> None:
        """Unbind session C{sid} from C{uid}.

        @raise SessionError: no such session, or it is not bound to C{uid}. (Pomelo's message
            names the session's current uid, printing C{undefined} for an unbound session; this
            one names the uid asked for.)
        """
        session = self._sessions.get(sid)
        if session is None:
            raise SessionError(f"session does not exist, sid: {sid}", sid, uid)
        if session.uid is None or session.uid != uid:
            raise SessionError(f"session has not bind with {uid}", sid, uid)
        self._discard_from_uid(session, uid)
        session.uid = None
        _emit(self._listeners.get("unbind_session"), "unbind_session", session)
        session._emit("unbind", uid)

    # Kick (§12.4, B16)

    def kick(self, uid: str, reason: str | None = "kick") -> int:
        """Kick every session of C{uid} with C{reason}; return how many. Unknown uids give 0.

        A C{None} reason closes without a KICK package (Pomelo's C{kick(uid)} quirk, opt-in).
        """
        sessions = self._uid_map.get(uid)
        if not sessions:
            return 0
        targets = tuple(sessions)  # kicking may remove sessions from the list
        for session in targets:
            self._kick(session, reason)
        return len(targets)

    def kick_by_session_id(self, sid: int, reason: str | None = "kick") -> bool:
        """Kick one session; return whether it existed."""
        session = self._sessions.get(sid)
        if session is None:
            return False
        self._kick(session, reason)
        return True

    def _kick(self, session: Session, reason: str | None) -> None:
        """Ask the connection to kick; the connection then calls L{remove} when it closes."""
        try:
            session.connection.kick(reason)
        except Exception:
            _log.failure("kicking {session!r} failed", session=session)

    # Push (§12.3, §13)

    def encode_push_package(self, route: str, msg: Any) -> bytes:
        """The DATA package pushing C{msg} on C{route}, ready for any number of connections.

        @raise pomelo_twisted.protocol.errors.PomeloError: the route or body cannot be encoded.
        @raise TypeError: the body cannot be serialised as JSON.
        """
        return encode_package(PackageType.DATA, self.codec.encode_push(route, msg))

    def _send(self, session: Session, package: bytes) -> bool:
        """Hand C{package} to one connection; C{False} if it refused (not working) or failed.

        A connection that raises is logged and treated as a refusal, so one bad connection
        cannot cut a broadcast short for everybody after it.
        """
        try:
            return bool(session.connection.sendPackage(package))
        except Exception:
            _log.failure("sending to {session!r} failed", session=session)
            return False

    def send_package_by_uids(self, package: bytes, uids: Iterable[str]) -> list[str]:
        """Send an encoded package to every session of each uid; return the uids with none.

        A uid listed twice is served once, so no session gets a duplicate.
        """
        failed: list[str] = []
        seen: set[str] = set()
        uid_map = self._uid_map
        send = self._send
        for uid in uids:
            if uid in seen:
                continue
            seen.add(uid)
            sessions = uid_map.get(uid)
            if not sessions:
                failed.append(uid)
                continue
            for session in tuple(sessions):
                send(session, package)
        return failed

    def push_by_uids(self, route: str, msg: Any, uids: Iterable[str]) -> list[str]:
        """Push to every session of each uid, encoding once; return the uids without sessions.

        Sessions whose connection refuses the package (not yet working, closing) are skipped
        silently, as Pomelo's scheduler drops them.

        @raise ValueError: C{uids} is empty (Pomelo's C{uids should not be empty}).
        """
        uids = list(uids)
        if not uids:
            raise ValueError("uids should not be empty")
        return self.send_package_by_uids(self.encode_push_package(route, msg), uids)

    def push_by_session_ids(self, route: str, msg: Any, sids: Iterable[int]) -> list[int]:
        """Push to the given sessions, encoding once; return the sids that are not open.

        @raise ValueError: C{sids} is empty.
        """
        sids = list(sids)
        if not sids:
            raise ValueError("sids should not be empty")
        package = self.encode_push_package(route, msg)
        missing: list[int] = []
        sessions = self._sessions
        for sid in dict.fromkeys(sids):  # each session once, in the order given
            session = sessions.get(sid)
            if session is None:
                missing.append(sid)
            else:
                self._send(session, package)
        return missing

    def broadcast(self, route: str, msg: Any, binded: bool = False) -> int:
        """Push to every session, or only bound ones if C{binded}; each session gets it once.

        @return: how many connections took the package.
        """
        return self.broadcast_package(self.encode_push_package(route, msg), binded)

    def broadcast_package(self, package: bytes, binded: bool = False) -> int:
        """Send an encoded package to every session (only bound ones if C{binded}), once each;
        return how many connections took it (a cluster node relays others' broadcasts so)."""
        if binded:
            targets = [s for sessions in self._uid_map.values() for s in sessions]
        else:
            targets = list(self._sessions.values())
        send = self._send
        return sum(1 for session in targets if send(session, package))

    # Service-level events

    def on(self, event: str, callback: Listener) -> None:
        """Call C{callback} on C{bind_session(session)}, C{unbind_session(session)} or
        C{close_session(session, reason)}, for every session of this service.

        Service listeners run before the session's own listeners for the same change.

        @raise ValueError: an unknown event name.
        """
        _check_event(event, SERVICE_EVENTS)
        self._listeners.setdefault(event, []).append(callback)

    def off(self, event: str, callback: Listener) -> bool:
        """Remove one registration of C{callback}; return whether there was one."""
        return _remove_listener(self._listeners, event, callback)
