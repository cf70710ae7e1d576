"""Tests for L{pomelo_twisted.services.channel}: channels and channel pushes (protocol.md §13.1, §20
item 41)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from pomelo_twisted.protocol.errors import PomeloError
from pomelo_twisted.services.channel import Channel, ChannelError, ChannelMember, ChannelService
from pomelo_twisted.services.interfaces import IChannelService
from pomelo_twisted.services.session import SessionService
from tests.support.sessions import PUSH_HI_DICT, PUSH_HI_PLAIN, connect, make_codec


class ChannelServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.sessions = SessionService(make_codec(), server_id="connector-3")
        self.channels = ChannelService(self.sessions)

    def test_provides(self) -> None:
        """L{ChannelService} provides L{IChannelService} with the declared signatures."""
        self.assertTrue(verifyClass(IChannelService, ChannelService))
        self.assertTrue(verifyObject(IChannelService, self.channels))

    def test_server_id(self) -> None:
        """Members default to the session service's frontend id, unless one is given."""
        self.assertEqual(self.channels.server_id, "connector-3")
        self.assertEqual(ChannelService(self.sessions, "other").server_id, "other")

    def test_create_returns_existing(self) -> None:
        """Creating an existing channel returns it, members and all (as Pomelo)."""
        channel = self.channels.create_channel("room")
        channel.add("alice")
        self.assertIs(self.channels.create_channel("room"), channel)
        self.assertEqual(channel.name, "room")
        self.assertEqual(channel.get_members(), ["alice"])

    def test_get_channel(self) -> None:
        self.assertIsNone(self.channels.get_channel("room"))
        self.assertEqual(self.channels._channels, {})
        channel = self.channels.get_channel("room", create=True)
        self.assertIsInstance(channel, Channel)
        self.assertIs(self.channels.get_channel("room"), channel)
        self.assertIs(self.channels.get_channel("room", create=True), channel)
        self.assertEqual(self.channels.channels_count, 1)

    def test_destroy_channel(self) -> None:
        """destroy_channel forgets the channel and destroys it; unknown names are fine."""
        channel = self.channels.create_channel("room")
        channel.add("alice")
        self.channels.destroy_channel("room")
        self.channels.destroy_channel("room")
        self.channels.destroy_channel("never")
        self.assertTrue(channel.destroyed)
        self.assertEqual(channel.get_members(), [])
        self.assertIsNone(self.channels.get_channel("room"))
        self.assertEqual(self.channels._channels, {})

    def test_channel_destroy(self) -> None:
        """Channel.destroy() also removes it from the service."""
        channel = self.channels.create_channel("room")
        channel.destroy()
        channel.destroy()
        self.assertEqual(self.channels._channels, {})

    def test_recreate_after_destroy(self) -> None:
        """A destroyed name can be created again; the old object cannot remove the new one."""
        old = self.channels.create_channel("room")
        old.destroy()
        new = self.channels.create_channel("room")
        self.assertIsNot(new, old)
        self.assertFalse(new.destroyed)
        old.destroy()
        self.assertIs(self.channels.get_channel("room"), new)

    def test_push_message_by_uids(self) -> None:
        """Pushing to uids reaches every session of each, encoded once; offline uids return."""
        a, conn_a = connect(self.sessions)
        b, conn_b = connect(self.sessions)
        a.bind("alice")
        b.bind("alice")
        failed = self.channels.push_message_by_uids("onChat", {"msg": "hi"}, ["alice", "bob"])
        self.assertEqual(failed, ["bob"])
        self.assertEqual(conn_a.packages, [PUSH_HI_DICT])
        self.assertIs(conn_b.packages[0], conn_a.packages[0])

    def test_push_message_by_uids_empty(self) -> None:
        e = self.assertRaises(ValueError, self.channels.push_message_by_uids, "onChat", {}, [])
        self.assertEqual(str(e), "uids should not be empty")

    def test_broadcast(self) -> None:
        """broadcast reaches each session once; binded restricts it to bound sessions."""
        a, conn_a = connect(self.sessions)
        b, conn_b = connect(self.sessions)
        _, conn_c = connect(self.sessions)
        a.bind("alice")
        b.bind("alice")
        self.assertEqual(self.channels.broadcast("onChat", {"msg": "hi"}), 3)
        self.assertEqual(self.channels.broadcast("onChat", {"msg": "hi"}, binded=True), 2)
        self.assertEqual(conn_a.packages, [PUSH_HI_DICT, PUSH_HI_DICT])
        self.assertEqual(len(conn_b.packages), 2)
        self.assertIs(conn_b.packages[0], conn_a.packages[0])
        self.assertIs(conn_b.packages[1], conn_a.packages[1])
        self.assertEqual(conn_c.packages, [PUSH_HI_DICT])
        self.assertIs(conn_c.packages[0], conn_a.packages[0])


class ChannelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.sessions = SessionService(make_codec())
        self.channels = ChannelService(self.sessions)
        self.channel = self.channels.create_channel("room")

    def test_members(self) -> None:
        """add/leave/get_members/get_member/get_user_amount, as Pomelo's channel."""
        self.assertTrue(self.channel.add("alice"))
        self.assertTrue(self.channel.add("bob", "connector-server-2"))
        self.assertEqual(self.channel.get_members(), ["alice", "bob"])
        self.assertEqual(self.channel.get_user_amount(), 2)
        self.assertEqual(
            self.channel.get_member("alice"), ChannelMember("alice", "connector-server-1")
        )
        self.assertEqual(self.channel.get_member("bob"), ("bob", "connector-server-2"))
        self.assertIsNone(self.channel.get_member("carol"))
        self.assertTrue(self.channel.leave("alice"))
        self.assertEqual(self.channel.get_members(), ["bob"])
        self.assertEqual(self.channel.get_user_amount(), 1)

    def test_add_twice(self) -> None:
        """Adding a member twice keeps one entry (Pomelo lists it twice and counts it twice)."""
        self.channel.add("alice")
        self.channel.add("alice", "connector-server-9")
        self.assertEqual(self.channel.get_members(), ["alice"])
        self.assertEqual(self.channel.get_user_amount(), 1)
        self.assertEqual(self.channel.get_member("alice"), ("alice", "connector-server-9"))

    def test_add_bad_uid(self) -> None:
        self.assertRaises(TypeError, self.channel.add, 42)
        self.assertRaises(TypeError, self.channel.add, "")
        self.assertEqual(self.channel.get_user_amount(), 0)

    def test_leave(self) -> None:
        """leave() is False for non-members and for a frontend id that does not match."""
        self.channel.add("alice")
        self.assertFalse(self.channel.leave("bob"))
        self.assertFalse(self.channel.leave("alice", "connector-server-2"))
        self.assertEqual(self.channel.get_members(), ["alice"])
        self.assertTrue(self.channel.leave("alice", "connector-server-1"))
        self.assertFalse(self.channel.leave("alice"))
        self.assertEqual(self.channel._members, {})

    def test_get_members_new_list(self) -> None:
        self.channel.add("alice")
        self.channel.get_members().clear()
        self.assertEqual(self.channel.get_members(), ["alice"])

    def test_push_reaches_every_session_of_each_member(self) -> None:
        """A channel push reaches every session of every member uid, with one encoding,
        and none of a non-member; members with no session are returned."""
        a1, conn_a1 = connect(self.sessions)
        a2, conn_a2 = connect(self.sessions)
        b, conn_b = connect(self.sessions)
        c, conn_c = connect(self.sessions)
        _, conn_anon = connect(self.sessions)
        a1.bind("alice")
        a2.bind("alice")
        b.bind("bob")
        c.bind("carol")
        for uid in ("alice", "bob", "dave"):
            self.channel.add(uid)
        failed = self.channel.push_message("onChat", {"msg": "hi"})
        self.assertEqual(failed, ["dave"])
        self.assertEqual(conn_a1.packages, [PUSH_HI_DICT])
        for conn in (conn_a2, conn_b):
            self.assertEqual(len(conn.packages), 1)
            self.assertIs(conn.packages[0], conn_a1.packages[0])
        self.assertEqual(conn_c.packages, [])
        self.assertEqual(conn_anon.packages, [])

    def test_push_without_dictionary(self) -> None:
        sessions = SessionService(make_codec(use_dict=False))
        channel = ChannelService(sessions).create_channel("room")
        session, conn = connect(sessions)
        session.bind("alice")
        channel.add("alice")
        self.assertEqual(channel.push_message("onChat", {"msg": "hi"}), [])
        self.assertEqual(conn.packages, [PUSH_HI_PLAIN])

    def test_push_empty_channel(self) -> None:
        """An empty channel pushes nothing and reports nothing (Pomelo calls back at once)."""
        _, conn = connect(self.sessions)
        self.assertEqual(self.channel.push_message("onChat", {"msg": "hi"}), [])
        self.assertEqual(conn.packages, [])

    def test_push_refused_is_not_failed(self) -> None:
        """A member whose connection is not working yet is not reported, just not reached."""
        session, conn = connect(self.sessions, working=False)
        session.bind("alice")
        self.channel.add("alice")
        self.assertEqual(self.channel.push_message("onChat", {}), [])
        self.assertEqual(conn.packages, [])

    def test_push_after_member_closed(self) -> None:
        """A member whose sessions have all closed is reported as failed."""
        session, _ = connect(self.sessions)
        session.bind("alice")
        self.channel.add("alice")
        session.kick()
        self.assertEqual(self.channel.push_message("onChat", {}), ["alice"])

    def test_destroyed_channel(self) -> None:
        """A destroyed channel refuses members and pushes, as Pomelo's."""
        self.channel.add("alice")
        self.channel.destroy()
        self.assertFalse(self.channel.add("bob"))
        self.assertEqual(self.channel.get_user_amount(), 0)
        e = self.assertRaises(ChannelError, self.channel.push_message, "onChat", {})
        self.assertIsInstance(e, PomeloError)
        self.assertIn("channel is not running now", str(e))

    def test_repr(self) -> None:
        self.channel.add("alice")
        self.assertEqual(repr(self.channel), "<Channel 'room' members=1>")
        self.channel.destroy()
        self.assertEqual(repr(self.channel), "<Channel 'room' members=0 destroyed>")
