"""Tests for L{pomelo_twisted.services.cluster.LocalCluster}: C{app.cluster} in one process."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from pomelo_twisted.protocol.codec import ServerCodec
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.services.application import Application
from pomelo_twisted.services.channel import ChannelService
from pomelo_twisted.services.cluster import LocalCluster
from pomelo_twisted.services.interfaces import ICluster
from pomelo_twisted.services.session import SessionError, SessionService
from tests.support.cluster import connect


def make(policy: str | None = None, single_session: bool = False) -> LocalCluster:
    sessions = SessionService(ServerCodec(None, None), "conn-1", single_session=single_session)
    return LocalCluster(sessions, ChannelService(sessions), policy)


class LocalClusterTests(SynchronousTestCase):
    def result(self, d: Deferred[Any]) -> Any:
        return self.successResultOf(d)

    def test_interface(self) -> None:
        cluster = make()
        self.assertTrue(verifyObject(ICluster, cluster))
        self.assertEqual(cluster.node_id, "conn-1")
        self.assertEqual(cluster.policy, "allow")
        self.assertEqual(make(single_session=True).policy, "reject-new")
        self.assertRaises(ValueError, make, "kick-everyone")

    def test_connector_attaches_one(self) -> None:
        app = Application()
        connector = Connector(app, Clock())
        self.assertIsInstance(app.cluster, LocalCluster)
        assert isinstance(app.cluster, LocalCluster)
        self.assertIs(app.cluster.session_service, connector.session_service)

    def test_bind_allow(self) -> None:
        cluster = make()
        a, _ = connect(cluster.session_service)
        b, _ = connect(cluster.session_service)
        self.assertIsNone(self.result(cluster.bind(a, "u")))
        self.assertIsNone(self.result(cluster.bind(b, "u")))
        self.assertEqual(
            self.result(cluster.get_sids_by_uid("u")), [("conn-1", a.id), ("conn-1", b.id)]
        )

    def test_bind_reject_new(self) -> None:
        cluster = make(single_session=True)
        a, _ = connect(cluster.session_service)
        b, _ = connect(cluster.session_service)
        self.result(cluster.bind(a, "u"))
        error = self.failureResultOf(cluster.bind(b, "u"), SessionError).value
        self.assertEqual(
            str(error), "singleSession is enabled, and session has already bound with uid: u"
        )
        self.assertIsNone(b.uid)
        self.assertEqual(a.uid, "u")
        # binding the holder again is a success, not a refusal
        self.result(cluster.bind(a, "u"))

    def test_bind_kick_old(self) -> None:
        cluster = make("kick-old")
        a, conn_a = connect(cluster.session_service)
        b, _ = connect(cluster.session_service)
        self.result(cluster.bind(a, "u"))
        self.result(cluster.bind(b, "u"))
        self.assertEqual(conn_a.kicks, ["kick"])
        self.assertTrue(a.closed)
        self.assertEqual(cluster.session_service.get_by_uid("u"), [b])

    def test_bind_errors(self) -> None:
        cluster = make()
        a, _ = connect(cluster.session_service)
        self.failureResultOf(cluster.bind(a, ""), TypeError)
        self.result(cluster.bind(a, "u"))
        self.failureResultOf(cluster.bind(a, "v"), SessionError)
        self.failureResultOf(cluster.unbind(a, "v"), SessionError)
        self.result(cluster.unbind(a, "u"))
        self.assertIsNone(a.uid)

    def test_push_kick_status(self) -> None:
        cluster = make()
        a, conn_a = connect(cluster.session_service)
        self.result(cluster.bind(a, "u"))
        self.assertEqual(self.result(cluster.push_by_uids("onChat", {"x": 1}, ["u", "v"])), ["v"])
        self.assertEqual(conn_a.pushes(), [("onChat", {"x": 1})])
        self.failureResultOf(cluster.push_by_uids("onChat", {}, []), ValueError)
        self.assertEqual(
            self.result(cluster.get_status_by_uids(["u", "v"])), {"u": True, "v": False}
        )
        self.assertFalse(self.result(cluster.kick_by_session("elsewhere", a.id)))
        self.assertEqual(self.result(cluster.kick("u", "bye")), 1)
        self.assertEqual(conn_a.kicks, ["bye"])
        self.assertEqual(self.result(cluster.kick("u")), 0)
        b, conn_b = connect(cluster.session_service)
        self.assertTrue(self.result(cluster.kick_by_session("conn-1", b.id, "out")))
        self.assertEqual(conn_b.kicks, ["out"])

    def test_broadcast(self) -> None:
        cluster = make()
        a, conn_a = connect(cluster.session_service)
        _, conn_b = connect(cluster.session_service)
        self.result(cluster.bind(a, "u"))
        self.assertEqual(self.result(cluster.broadcast("onAll", {"n": 1}, binded=True)), 1)
        self.assertEqual(self.result(cluster.broadcast("onAll", {"n": 2})), 1)
        self.assertEqual(conn_a.pushes(), [("onAll", {"n": 1}), ("onAll", {"n": 2})])
        self.assertEqual(conn_b.pushes(), [("onAll", {"n": 2})])

    def test_channels(self) -> None:
        cluster = make()
        a, conn_a = connect(cluster.session_service)
        self.result(cluster.bind(a, "u"))
        self.assertEqual(self.result(cluster.channel_members("room")), [])
        self.assertEqual(self.result(cluster.channel_push("room", "onRoom", {})), [])
        self.result(cluster.channel_add("room", "u"))
        self.result(cluster.channel_add("room", "v"))
        self.assertEqual(self.result(cluster.channel_members("room")), ["u", "v"])
        self.assertEqual(self.result(cluster.channel_push("room", "onRoom", {"r": 1})), ["v"])
        self.assertEqual(conn_a.pushes(), [("onRoom", {"r": 1})])
        self.assertTrue(self.result(cluster.channel_leave("room", "v")))
        self.assertFalse(self.result(cluster.channel_leave("room", "v")))
        self.assertFalse(self.result(cluster.channel_leave("nowhere", "v")))
        self.result(cluster.channel_destroy("room"))
        self.assertEqual(self.result(cluster.channel_members("room")), [])

    def test_resync_listeners(self) -> None:
        """An app registers its resync listener before it is served: it lands on the
        connector's LocalCluster (which never calls it), then moves with C{app.cluster}."""
        app = Application()
        reasons: list[str] = []
        listener = reasons.append
        self.assertIs(app.on_cluster_resync(listener), listener)
        Connector(app, Clock())
        first = app.cluster
        assert isinstance(first, LocalCluster)
        other = make()
        app.cluster = other
        self.assertFalse(first.off("resync", listener))
        self.assertTrue(other.off("resync", listener))
        self.assertRaises(ValueError, other.on, "reset", listener)
        other.on("resync", listener)
        self.assertEqual(reasons, [])
