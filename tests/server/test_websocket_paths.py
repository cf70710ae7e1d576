"""Pomelo's browser client opens C{ws://host:port}, with no path: the connector's WebSocket must
be reachable at any path, on its own port and on a twisted.web site (L{WebSocketAnyPath})."""

from __future__ import annotations

from typing import Any

import orjson
from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from pomelo_twisted.protocol.package import PackageType, decode_packages
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import PomeloConnectorFactory
from pomelo_twisted.server.web import WebSocketAnyPath
from pomelo_twisted.services.application import Application
from tests.support.parity import (
    CONFIG,
    HANDSHAKE,
    PEER,
    frame_payloads,
    masked_frame,
)
from tests.support.transports import upgrade_request

PATHS = (b"/", b"/pomelo", b"/pomelo/", b"/a/b/c?x=1&y=%20")


class Transport(StringTransport):
    """What Autobahn calls on a socket, on top of a StringTransport."""

    protocol: Any = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        self.producer = None


class Harness(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.connector = Connector(Application(), self.clock, CONFIG)
        self.factory = PomeloConnectorFactory(self.connector)

    def open(self, server_factory: Any, data: bytes) -> Transport:
        protocol = server_factory.buildProtocol(PEER)
        transport = Transport(peerAddress=PEER)
        transport.protocol = protocol  # as a TCP transport: what twisted.web's upgrade swaps
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        self.clock.advance(0)
        return transport

    def assertPomeloWebSocket(self, transport: Transport) -> None:
        """The upgrade was accepted, and a Pomelo handshake over it is answered 200."""
        head, _, rest = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertEqual(rest, b"")
        transport.clear()
        transport.protocol.dataReceived(masked_frame(HANDSHAKE))  # whoever holds it now
        self.clock.advance(0)
        [payload] = frame_payloads(transport.value())
        [package] = decode_packages(payload)
        self.assertEqual(package.type, PackageType.HANDSHAKE)
        self.assertEqual(orjson.loads(package.body)["code"], 200)
        self.assertEqual(len(self.connector.sockets), 1)


class HybridPortTests(Harness):
    """The hybrid port's sniffed WebSocket takes the upgrade at any path."""

    def test_anyPath(self) -> None:
        for path in PATHS:
            with self.subTest(path=path):
                self.setUp()
                self.assertPomeloWebSocket(self.open(self.factory, upgrade_request(path)))


class WebSocketAnyPathTests(Harness):
    def site(self, fallback: Any = None) -> Site:
        return Site(WebSocketAnyPath(self.factory.wsFactory, fallback), reactor=self.clock)

    def get(self, site: Site, path: bytes) -> bytes:
        request = b"GET " + path + b" HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n"
        return self.open(site, request).value()

    def test_upgradeAtAnyPath(self) -> None:
        root = Resource()
        root.putChild(b"", Data(b"home", "text/plain"))
        for path in PATHS:
            with self.subTest(path=path):
                self.setUp()
                self.assertPomeloWebSocket(self.open(self.site(root), upgrade_request(path)))

    def test_otherRequestsGoToFallback(self) -> None:
        root = Resource()
        root.putChild(b"", Data(b"home", "text/plain"))
        page = Resource()
        page.putChild(b"b", Data(b"deep", "text/plain"))
        root.putChild(b"a", page)
        site = self.site(root)
        self.assertTrue(self.get(site, b"/").endswith(b"\r\n\r\nhome"))
        self.assertTrue(self.get(site, b"/a/b").endswith(b"\r\n\r\ndeep"))
        self.assertIn(b" 404 ", self.get(site, b"/nope").split(b"\r\n")[0])
        self.assertEqual(self.connector.sockets, set())

    def test_noFallback(self) -> None:
        self.assertIn(b" 404 ", self.get(self.site(), b"/").split(b"\r\n")[0])

    def test_leafFallback(self) -> None:
        """A leaf fallback sees the whole path, as it would as the site's root."""
        seen: list[Any] = []

        class Leaf(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                seen.append(request.postpath)
                return b"leaf"

        self.assertTrue(self.get(self.site(Leaf()), b"/x/y").endswith(b"leaf"))
        self.assertEqual(seen, [[b"x", b"y"]])

    def test_mountedBelowRoot(self) -> None:
        """Mounted at /game: /game itself and anything below it upgrade."""
        for path in (b"/game", b"/game/x"):
            with self.subTest(path=path):
                self.setUp()
                root = Resource()
                root.putChild(b"game", WebSocketAnyPath(self.factory.wsFactory))
                site = Site(root, reactor=self.clock)
                self.assertPomeloWebSocket(self.open(site, upgrade_request(path)))
