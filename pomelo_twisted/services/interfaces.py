"""The seam between the server and the services an application sees, as zope interfaces.

Connections implement L{ISessionConnection} for the session service; the session and channel
services are interfaces so that a cluster backend (uid lookup, kick, push and broadcast shared
between several connector processes) can stand beside the in-memory ones without touching
handlers. Rule: this module names what crosses the seam; nothing here knows of sockets.
"""

from __future__ import annotations

from typing import Any

from zope.interface import Attribute, Interface

__all__ = [
    "IChannelService",
    "ICluster",
    "ISessionConnection",
    "ISessionService",
]


class ISessionConnection(Interface):
    """What the session service needs from the connection behind a session."""

    def sendPackage(package: bytes) -> bool:
        """Queue an encoded package (a DATA push) for this reactor turn's write.

        @return: C{False} when the connection is not working and the package was dropped.
        """

    def kick(reason: str | None) -> None:
        """Send a KICK with C{reason} (none if C{None}), then close gracefully."""

    def getPeer() -> Any:
        """The remote address."""


class ISessionService(Interface):
    """Sessions of connected clients (Pomelo's ``sessionService``), of this process.

    Its answers are synchronous: it knows only this process's sessions. Operations that may
    involve other processes (cluster mode) answer with Deferreds on their own seam, so a
    handler never waits on a synchronous call that could need the network.
    """

    server_id = Attribute("The id of the frontend server these sessions belong to.")

    def create(connection: ISessionConnection) -> Any:
        """Create and register the session of a new connection; return it."""

    def get(sid: int) -> Any:
        """The session with id C{sid}, or C{None}."""

    def get_by_uid(uid: str) -> list[Any]:
        """The sessions bound to C{uid} (empty if none)."""

    def bind(sid: int, uid: str) -> None:
        """Bind session C{sid} to C{uid}; raises L{SessionError} as Pomelo's errors say."""

    def unbind(sid: int, uid: str) -> None:
        """Unbind session C{sid} from C{uid}; raises L{SessionError} on a mismatch."""

    def kick(uid: str, reason: str = "kick") -> int:
        """Kick every session of C{uid}; return how many."""

    def kick_by_session_id(sid: int, reason: str = "kick") -> bool:
        """Kick one session; return whether it existed."""

    def push_by_uids(route: str, msg: Any, uids: list[str]) -> list[str]:
        """Push to every session of each uid; return the uids that had no session."""

    def broadcast(route: str, msg: Any, binded: bool = False) -> int:
        """Push to every session (only bound ones if C{binded}); return how many."""

    def remove(sid: int, reason: Any) -> None:
        """Forget a closed session (called by the connection exactly once)."""


class IChannelService(Interface):
    """Named groups of uids (Pomelo's ``channelService``)."""

    def create_channel(name: str) -> Any:
        """Create (or return the existing) channel C{name}."""

    def get_channel(name: str, create: bool = False) -> Any:
        """The channel C{name}, or C{None} (unless C{create})."""

    def destroy_channel(name: str) -> None:
        """Forget channel C{name}."""

    def push_message_by_uids(route: str, msg: Any, uids: list[str]) -> list[str]:
        """Push to the sessions of C{uids}; return the uids that had none."""

    def broadcast(route: str, msg: Any, binded: bool = False) -> int:
        """Push to every session (or only bound ones); return how many got it."""


class ICluster(Interface):
    """The services several connector processes share (Pomelo's ``statusService``,
    ``globalChannelService`` and cross-frontend kick/push), as C{app.cluster}.

    Every method returns a C{Deferred}: a cluster answers over the network. The in-process
    L{pomelo_twisted.services.cluster.LocalCluster} answers the same way with already-fired
    Deferreds, so an app written against C{app.cluster} runs embedded or clustered. A session's
    cluster-wide address is C{(node, sid)}: sids are only unique within one node.
    """

    node_id = Attribute("The unique id of this process in the cluster (a str).")

    def bind(session: Any, uid: str) -> Any:
        """Bind C{session} to C{uid} under the cluster's session policy.

        Fails with L{SessionError} (Pomelo's message) when the policy refuses the login.
        """

    def unbind(session: Any, uid: str) -> Any:
        """Unbind C{session} from C{uid}; fires with C{None}."""

    def push_by_uids(route: str, msg: Any, uids: list[str]) -> Any:
        """Push to every session of each uid on every node; fires with the uids online nowhere."""

    def kick(uid: str, reason: str = "kick") -> Any:
        """Kick every session of C{uid} on every node; fires with how many, once every node
        holding one has acknowledged (fails with C{ClusterTimeout} naming the silent ones)."""

    def kick_by_session(node: str, sid: int, reason: str = "kick") -> Any:
        """Kick session C{sid} of node C{node}; fires with whether it existed."""

    def broadcast(route: str, msg: Any, binded: bool = False) -> Any:
        """Push to every session (only bound ones if C{binded}) of every node; fires with how
        many nodes it was handed to."""

    def get_sids_by_uid(uid: str) -> Any:
        """Fires with the C{(node, sid)} of every session of C{uid} (Pomelo's ``getSidsByUid``)."""

    def get_status_by_uids(uids: list[str]) -> Any:
        """Fires with C{{uid: online}} (Pomelo's ``getStatusByUids``)."""

    def channel_add(name: str, uid: str) -> Any:
        """Add C{uid} to the global channel C{name} (created on first add)."""

    def channel_leave(name: str, uid: str) -> Any:
        """Remove C{uid} from the global channel C{name}; fires with whether it was a member."""

    def channel_members(name: str) -> Any:
        """Fires with the member uids of the global channel C{name} (empty if none)."""

    def channel_push(name: str, route: str, msg: Any) -> Any:
        """Push to every session of every member on every node; fires with the members
        online nowhere."""

    def channel_destroy(name: str) -> Any:
        """Forget the global channel C{name}."""

    def on(event: str, callback: Any) -> None:
        """Call C{callback(reason)} on C{resync}: the node rewrote its entries in Redis after
        it had joined, because Redis lost its data (C{"redis-empty"}), came back
        (C{"reconnected"}) or the node stalled past its TTL (C{"stalled"}). Runs in the
        reactor thread; its errors are logged. An in-process cluster never calls it."""

    def off(event: str, callback: Any) -> bool:
        """Remove one registration of C{callback}; return whether there was one."""
