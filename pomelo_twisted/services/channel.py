"""Named groups of uids that are pushed to together (protocol.md §13.1), in memory.

Pomelo groups channel members by frontend server id and sends one RPC per frontend. This
connector is a single process, so every member lives on this server and a channel push is one
L{ISessionService.push_by_uids} call: the message is encoded once and reaches every session of
every member uid. The frontend id is still recorded per member, as Pomelo does, so that a
cluster-aware session service can route by it later.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from zope.interface import implementer

from ..protocol.errors import PomeloError
from .interfaces import IChannelService, ISessionService

__all__ = ["Channel", "ChannelError", "ChannelMember", "ChannelService"]


class ChannelError(PomeloError):
    """An operation on a destroyed channel."""


class ChannelMember(NamedTuple):
    """One member of a channel: its uid and the frontend server holding its sessions
    (Pomelo's C{{uid, sid}} record)."""

    uid: str
    sid: str


class Channel:
    """A named set of uids (Pomelo's ``Channel``); create it through L{ChannelService}.

    @ivar name: the channel's name in its service.
    @ivar destroyed: whether L{destroy} was called; a destroyed channel accepts no members
        and refuses pushes.
    """

    __slots__ = ("_members", "_service", "destroyed", "name")

    def __init__(self, name: str, service: ChannelService) -> None:
        self.name = name
        self.destroyed = False
        self._service = service
        self._members: dict[str, str] = {}  # uid -> frontend server id

    def __repr__(self) -> str:
        state = " destroyed" if self.destroyed else ""
        return f"<Channel {self.name!r} members={len(self._members)}{state}>"

    def add(self, uid: str, sid: str | None = None) -> bool:
        """Add C{uid}, whose sessions are on frontend C{sid} (this server if C{None}).

        Adding a member again only updates its frontend id: unlike Pomelo, a uid is never
        listed twice, so it never gets a push twice nor counts twice.

        @return: C{False} if the channel is destroyed (as Pomelo), else C{True}.
        """
        if self.destroyed:
            return False
        if not isinstance(uid, str) or not uid:
            raise TypeError(f"uid must be a non-empty str, not {uid!r}")
        self._members[uid] = self._service.server_id if sid is None else sid
        return True

    def leave(self, uid: str, sid: str | None = None) -> bool:
        """Remove C{uid}; if C{sid} is given it must match the member's frontend id.

        @return: whether C{uid} was a member (with that frontend id) and has left.
        """
        member_sid = self._members.get(uid)
        if member_sid is None or (sid is not None and sid != member_sid):
            return False
        del self._members[uid]
        return True

    def get_members(self) -> list[str]:
        """The member uids, in the order they joined (a new list)."""
        return list(self._members)

    def get_member(self, uid: str) -> ChannelMember | None:
        """The member record of C{uid}, or C{None}."""
        sid = self._members.get(uid)
        return None if sid is None else ChannelMember(uid, sid)

    def get_user_amount(self) -> int:
        """How many uids are members."""
        return len(self._members)

    def push_message(self, route: str, msg: Any) -> list[str]:
        """Push to every session of every member, encoding once; return the uids with no
        session. An empty channel pushes nothing and returns C{[]}.

        @raise ChannelError: the channel is destroyed (Pomelo's C{channel is not running now}).
        @raise pomelo_twisted.protocol.errors.PomeloError: the message cannot be encoded.
        @raise TypeError: the body cannot be serialised as JSON.
        """
        if self.destroyed:
            raise ChannelError(f"channel is not running now: {self.name}")
        if not self._members:
            return []
        return list(self._service.session_service.push_by_uids(route, msg, list(self._members)))

    def destroy(self) -> None:
        """Drop every member and remove the channel from its service."""
        if self.destroyed:
            return
        self.destroyed = True
        self._members.clear()
        self._service._forget(self)


@implementer(IChannelService)
class ChannelService:
    """The channels of this process (Pomelo's ``channelService``).

    @ivar session_service: the L{ISessionService} pushes go through.
    @ivar server_id: the frontend id recorded for members added without one.
    """

    def __init__(self, session_service: ISessionService, server_id: str | None = None) -> None:
        self.session_service = session_service
        self.server_id: str = session_service.server_id if server_id is None else server_id
        self._channels: dict[str, Channel] = {}

    def create_channel(self, name: str) -> Channel:
        """The channel C{name}, created if it does not exist (as Pomelo)."""
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = Channel(name, self)
        return channel

    def get_channel(self, name: str, create: bool = False) -> Channel | None:
        """The channel C{name}; if absent, a new one when C{create}, else C{None}."""
        channel = self._channels.get(name)
        if channel is None and create:
            channel = self.create_channel(name)
        return channel

    def destroy_channel(self, name: str) -> None:
        """Destroy and forget channel C{name}; an unknown name is not an error."""
        channel = self._channels.get(name)
        if channel is not None:
            channel.destroy()

    def _forget(self, channel: Channel) -> None:
        """Remove C{channel} from the map, unless the name now belongs to another channel."""
        if self._channels.get(channel.name) is channel:
            del self._channels[channel.name]

    @property
    def channels_count(self) -> int:
        """How many channels exist."""
        return len(self._channels)

    def push_message_by_uids(self, route: str, msg: Any, uids: list[str]) -> list[str]:
        """Push to every session of each uid, encoding once; return the uids with none.

        @raise ValueError: C{uids} is empty (Pomelo's C{uids should not be empty}).
        """
        return list(self.session_service.push_by_uids(route, msg, uids))

    def broadcast(self, route: str, msg: Any, binded: bool = False) -> int:
        """Push to every session of this server (only bound ones if C{binded}), once each."""
        return int(self.session_service.broadcast(route, msg, binded))
