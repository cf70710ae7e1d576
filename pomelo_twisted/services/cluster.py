"""The cluster seam's in-process side: L{LocalCluster} and the errors every cluster raises.

C{app.cluster} (an L{ICluster}) is what an app uses for anything that may live on another
connector process: push or kick by uid, single-session logins, global channels, broadcast. The
connector gives every app a L{LocalCluster}, which answers from this process's services with
already-fired Deferreds; ``--redis`` replaces it with C{pomelo_twisted.cluster.node.RedisCluster}.
The per-process services (C{app.session_service}, C{app.channel_service}) stay synchronous.

A cluster also tells the app when it rebuilt its state in Redis (the C{resync} event of
L{ClusterEvents}), so that the app can rebuild its own.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..protocol.errors import PomeloError
from .application import invoke
from .channel import ChannelService
from .interfaces import ICluster
from .session import (
    Listener,
    Session,
    SessionError,
    SessionService,
    _check_event,
    _remove_listener,
)

__all__ = [
    "CLUSTER_EVENTS",
    "RESYNC_REASONS",
    "SESSION_POLICIES",
    "ClusterError",
    "ClusterEvents",
    "ClusterTimeout",
    "ClusterUnavailable",
    "LocalCluster",
    "single_session_error",
]

#: What a second login of a uid does: C{allow} it (Pomelo's default), C{reject-new} (Pomelo's
#: ``singleSession``: the new bind fails, the old session stays) or C{kick-old} (the old
#: sessions are kicked and the new one is bound).
SESSION_POLICIES = ("allow", "reject-new", "kick-old")

#: Events a cluster emits: C{resync(reason)}, once the node has rewritten its entries in Redis
#: after it had joined (never for L{LocalCluster}).
CLUSTER_EVENTS = frozenset({"resync"})

#: A C{resync}'s reason: Redis lost its data (C{redis-empty}: restarted without persistence,
#: C{FLUSHALL}, failover to an empty replica; the global channel memberships the node could
#: not write back are gone), the node came back after Redis or its subscriber connection was
#: lost (C{reconnected}), or its liveness key had expired during a stall and the other nodes
#: may have removed its entries (C{stalled}).
RESYNC_REASONS = ("redis-empty", "reconnected", "stalled")

_log = Logger()


class ClusterError(PomeloError):
    """A cluster-wide operation that could not be completed."""


class ClusterUnavailable(ClusterError):
    """The cluster backend (Redis) cannot be reached now; whatever is local was still done."""


class ClusterTimeout(ClusterError):
    """Some nodes did not acknowledge in time.

    @ivar partial: what the nodes that answered reported (e.g. sessions kicked).
    @ivar missing: the ids of the nodes that stayed silent.
    """

    def __init__(self, message: str, partial: int, missing: list[str]) -> None:
        super().__init__(message)
        self.partial = partial
        self.missing = missing


def single_session_error(sid: int, uid: str) -> SessionError:
    """Pomelo's refusal of a second session of C{uid} under ``singleSession``."""
    return SessionError(
        f"singleSession is enabled, and session has already bound with uid: {uid}", sid, uid
    )


def check_policy(policy: str) -> str:
    """C{policy} if it is one of L{SESSION_POLICIES}, else a C{ValueError}."""
    if policy not in SESSION_POLICIES:
        raise ValueError(f"session policy {policy!r} is not one of {', '.join(SESSION_POLICIES)}")
    return policy


class ClusterEvents:
    """The listeners of a cluster's events (L{CLUSTER_EVENTS}), registered as with the session
    service's C{on} and C{off}."""

    def __init__(self) -> None:
        super().__init__()
        self._listeners: dict[str, list[Listener]] = {}

    def on(self, event: str, callback: Listener) -> None:
        """Call C{callback(reason)} on C{resync} (see L{RESYNC_REASONS}).

        It runs in the reactor thread once the node's own entries are back in Redis; it may
        return a Deferred or be a coroutine. Its errors are logged and change nothing else.

        @raise ValueError: an unknown event name.
        """
        _check_event(event, CLUSTER_EVENTS)
        self._listeners.setdefault(event, []).append(callback)

    def off(self, event: str, callback: Listener) -> bool:
        """Remove one registration of C{callback}; return whether there was one."""
        return _remove_listener(self._listeners, event, callback)

    def _emit(self, event: str, *args: Any) -> None:
        for listener in tuple(self._listeners.get(event, ())):

            def failed(failure: Failure, listener: Listener = listener) -> None:
                _log.failure(
                    "cluster {event!r} listener {listener!r} failed",
                    failure,
                    event=event,
                    listener=listener,
                )

            maybeDeferred(invoke, listener, *args).addErrback(failed)


@implementer(ICluster)
class LocalCluster(ClusterEvents):
    """A cluster of one: L{ICluster} answered from this process's services. It keeps nothing
    elsewhere that could be lost, so it accepts C{resync} listeners and never calls them.

    @ivar policy: the session policy (L{SESSION_POLICIES}); C{reject-new} when the session
        service has C{single_session} on.
    """

    def __init__(
        self,
        session_service: SessionService,
        channel_service: ChannelService,
        policy: str | None = None,
    ) -> None:
        super().__init__()
        self.session_service = session_service
        self.channel_service = channel_service
        if policy is None:
            policy = "reject-new" if session_service.single_session else "allow"
        self.policy = check_policy(policy)
        self.node_id: str = session_service.server_id

    def bind(self, session: Session, uid: str) -> Deferred[None]:
        service = self.session_service
        try:
            if session.uid != uid:
                others = [s for s in service.get_by_uid(uid) if s is not session]
                if others and self.policy == "reject-new":
                    raise single_session_error(session.id, uid)
                if others and self.policy == "kick-old" and session.uid is None:
                    for other in others:
                        service.kick_by_session_id(other.id, "kick")
            service.bind(session.id, uid)
        except (SessionError, TypeError) as e:
            return fail(e)
        return succeed(None)

    def unbind(self, session: Session, uid: str) -> Deferred[None]:
        try:
            self.session_service.unbind(session.id, uid)
        except SessionError as e:
            return fail(e)
        return succeed(None)

    def push_by_uids(self, route: str, msg: Any, uids: list[str]) -> Deferred[list[str]]:
        try:
            return succeed(self.session_service.push_by_uids(route, msg, uids))
        except Exception as e:
            return fail(e)

    def kick(self, uid: str, reason: str = "kick") -> Deferred[int]:
        return succeed(self.session_service.kick(uid, reason))

    def kick_by_session(self, node: str, sid: int, reason: str = "kick") -> Deferred[bool]:
        if node != self.node_id:
            return succeed(False)
        return succeed(self.session_service.kick_by_session_id(sid, reason))

    def broadcast(self, route: str, msg: Any, binded: bool = False) -> Deferred[int]:
        try:
            self.session_service.broadcast(route, msg, binded)
        except Exception as e:
            return fail(e)
        return succeed(1)

    def get_sids_by_uid(self, uid: str) -> Deferred[list[tuple[str, int]]]:
        return succeed([(self.node_id, s.id) for s in self.session_service.get_by_uid(uid)])

    def get_status_by_uids(self, uids: list[str]) -> Deferred[dict[str, bool]]:
        service = self.session_service
        return succeed({uid: bool(service.get_by_uid(uid)) for uid in uids})

    def channel_add(self, name: str, uid: str) -> Deferred[None]:
        try:
            self.channel_service.create_channel(name).add(uid)
        except TypeError as e:
            return fail(e)
        return succeed(None)

    def channel_leave(self, name: str, uid: str) -> Deferred[bool]:
        channel = self.channel_service.get_channel(name)
        return succeed(channel is not None and channel.leave(uid))

    def channel_members(self, name: str) -> Deferred[list[str]]:
        channel = self.channel_service.get_channel(name)
        return succeed([] if channel is None else channel.get_members())

    def channel_push(self, name: str, route: str, msg: Any) -> Deferred[list[str]]:
        channel = self.channel_service.get_channel(name)
        if channel is None:
            return succeed([])
        try:
            return succeed(channel.push_message(route, msg))
        except Exception as e:
            return fail(e)

    def channel_destroy(self, name: str) -> Deferred[None]:
        self.channel_service.destroy_channel(name)
        return succeed(None)
