"""Pomelo WebSocket clients on a twisted.web site, at any request path.

Pomelo's browser client connects to ``ws://host:port`` with no path, so a connector mounted at
one path (``/pomelo``) is out of its reach. L{WebSocketAnyPath} is a site root that hands every
WebSocket upgrade, whatever its path, to the connector, and every other request to the site's
own resource tree.
"""

from __future__ import annotations

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.web.resource import IResource, NoResource, Resource
from twisted.web.server import Request

__all__ = ["WebSocketAnyPath", "is_websocket_upgrade"]


def is_websocket_upgrade(request: Request) -> bool:
    """Whether C{request} asks to become a WebSocket (an ``Upgrade: websocket`` header)."""
    upgrade = request.getHeader(b"upgrade")
    return upgrade is not None and upgrade.strip().lower() == b"websocket"


class WebSocketAnyPath(Resource):
    """A twisted.web resource: WebSocket upgrades at any path below it go to C{ws_factory}
    (a connector's C{PomeloConnectorFactory.wsFactory}); other requests go to C{fallback}.

    Use it as the site's root (``Site(WebSocketAnyPath(factory.wsFactory, root))``) so that
    ``ws://host:port`` and ``ws://host:port/any/path`` both reach the connector while the site
    keeps serving its pages. Put children on C{fallback}, not on this resource.
    """

    def __init__(
        self, ws_factory: WebSocketServerFactory, fallback: IResource | None = None
    ) -> None:
        """
        @param fallback: the site's own resource tree; C{None} answers 404 to anything that is
            not an upgrade.
        """
        super().__init__()
        self.websocket = WebSocketResource(ws_factory)
        self.fallback: IResource = NoResource() if fallback is None else fallback

    def getChildWithDefault(self, name: bytes, request: Request) -> IResource:
        if is_websocket_upgrade(request):
            return self.websocket  # a leaf: it takes the request whatever the rest of the path
        fallback = self.fallback
        if fallback.isLeaf:
            # The fallback renders the whole path itself: give back the segment just taken.
            prepath, postpath = request.prepath, request.postpath
            assert prepath is not None and postpath is not None  # Site sets both first
            postpath.insert(0, prepath.pop())
            return fallback
        child: IResource = fallback.getChildWithDefault(name, request)
        return child

    def render(self, request: Request) -> bytes | int:
        """This resource's own path (when mounted below a site's root)."""
        if is_websocket_upgrade(request):
            return self.websocket.render(request)  # type: ignore[no-any-return]
        return self.fallback.render(request)  # type: ignore[no-any-return]
