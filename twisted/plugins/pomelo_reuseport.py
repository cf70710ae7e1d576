"""The C{reuseport:PORT[:interface=...][:backlog=...]} server endpoint string.

Twisted imports this module whenever any program parses an endpoint string served by a plugin
(C{tcp6:}, C{systemd:}, ...), so it stays light: pomelo_twisted is imported only when a
C{reuseport:} string is actually parsed (L{pomelo_twisted.ops.reuseport} holds the endpoint).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamServerEndpoint, IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class ReusePortParser:
    """Parses C{reuseport:} strings into L{pomelo_twisted.ops.reuseport.ReusePortServerEndpoint}."""

    prefix = "reuseport"

    def parseStreamServer(self, reactor: Any, *args: Any, **kwargs: Any) -> IStreamServerEndpoint:
        from pomelo_twisted.ops.reuseport import parse_reuseport

        return parse_reuseport(reactor, *args, **kwargs)


pomeloReusePort = ReusePortParser()
