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
