# -*- test-case-name: tests.ops.test_reuseport -*-
"""``reuseport:PORT``: several processes listening on one TCP port, with Linux's C{SO_REUSEPORT}.

A Python process serves one core. To use more, run several connector processes on the same
port, each with its own listening socket: the kernel spreads new connections among them by a
hash of the connection's addresses. Twisted's C{tcp:} endpoint cannot do that (it does not set
C{SO_REUSEPORT}), so L{ReusePortServerEndpoint} makes the socket itself (C{SO_REUSEADDR} and
C{SO_REUSEPORT}, bind, listen, non-blocking) and hands it to the reactor with
C{IReactorSocket.adoptStreamPort}, which works on every Twisted this package supports.

The endpoint string, registered for C{serverFromString} (and so for C{--listen}, strports and
any Twisted program) by the C{twisted/plugins/pomelo_reuseport.py} plugin::

    reuseport:PORT[:interface=ADDRESS][:backlog=N]

C{interface} is an IPv4 or IPv6 address (default C{""}: every IPv4 interface, as C{tcp:});
an IPv6 one (C{interface=\\:\\:}, colons escaped as in every endpoint string) makes an IPv6
socket. C{backlog} is the listen queue, 511 by default. docs/operations.md tells how to run
N workers and what to expect of the kernel.
"""

from __future__ import annotations

import socket
from typing import Any, Final

from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorSocket,
    IStreamServerEndpoint,
)
from zope.interface import implementer

__all__ = ["DEFAULT_BACKLOG", "PREFIX", "ReusePortServerEndpoint", "parse_reuseport"]

#: The endpoint string's prefix.
PREFIX: Final = "reuseport"

#: The listen queue unless C{backlog=} says otherwise (nginx's default; Linux caps it at
#: C{net.core.somaxconn}).
DEFAULT_BACKLOG: Final = 511


@implementer(IStreamServerEndpoint)
class ReusePortServerEndpoint:
    """A TCP server endpoint whose socket other processes (of the same user) may share.

    @ivar port: the port number (0: one the kernel picks).
    @ivar interface: the address to bind; C{""} for every IPv4 interface.
    @ivar backlog: the listen queue's length.
    """

    def __init__(
        self,
        reactor: Any,
        port: int,
        backlog: int = DEFAULT_BACKLOG,
        interface: str = "",
    ) -> None:
        """
        @param reactor: an C{IReactorSocket} provider (every POSIX reactor of Twisted).
        @raise ValueError: the port, backlog or interface is not valid.
        """
        if not 0 <= port <= 65535:
            raise ValueError(f"the port must be from 0 to 65535, not {port}")
        if backlog < 1:
            raise ValueError(f"backlog must be at least 1, not {backlog}")
        if interface and not (isIPAddress(interface) or isIPv6Address(interface)):
            raise ValueError(f"interface must be an IPv4 or IPv6 address, not {interface!r}")
        self._reactor = reactor
        self.port = port
        self.backlog = backlog
        self.interface = interface

    @property
    def family(self) -> socket.AddressFamily:
        """C{AF_INET6} for an IPv6 interface, else C{AF_INET}."""
        return socket.AF_INET6 if isIPv6Address(self.interface) else socket.AF_INET

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        """Listen with C{protocolFactory}; fails with C{CannotListenError} if that cannot be."""
        return defer.execute(self._listen, protocolFactory)

    def _listen(self, factory: IProtocolFactory) -> IListeningPort:
        def cannot(why: object) -> CannotListenError:
            return CannotListenError(self.interface, self.port, why)

        reactor: Any = self._reactor
        if IReactorSocket(reactor, None) is None:
            raise cannot(f"{PREFIX}: this reactor cannot adopt a socket (no IReactorSocket)")
        reuse_port = getattr(socket, "SO_REUSEPORT", None)
        if reuse_port is None:
            raise cannot(f"{PREFIX}: SO_REUSEPORT is not available on this system")
        family = self.family
        try:
            if family == socket.AF_INET6:
                # Numeric only, and it keeps a scope id (fe80::1%eth0), as Twisted's tcp6: does.
                infos = socket.getaddrinfo(
                    self.interface,
                    self.port,
                    family,
                    socket.SOCK_STREAM,
                    0,
                    socket.AI_NUMERICHOST | socket.AI_PASSIVE,
                )
                address: tuple[Any, ...] = infos[0][4]
            else:
                address = (self.interface, self.port)
            skt = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            raise cannot(e) from e
        # adoptStreamPort keeps a duplicate of the descriptor: this one is closed either way.
        with skt:
            try:
                skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                skt.setsockopt(socket.SOL_SOCKET, reuse_port, 1)
                skt.bind(address)
                skt.listen(self.backlog)
                skt.setblocking(False)
            except OSError as e:
                raise cannot(e) from e
            port: IListeningPort = reactor.adoptStreamPort(skt.fileno(), family, factory)
            return port

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {PREFIX}:{self.port} interface={self.interface!r} "
            f"backlog={self.backlog}>"
        )


_OPTIONS: Final = ("interface", "backlog")


def parse_reuseport(reactor: Any, *args: str, **kwargs: str) -> ReusePortServerEndpoint:
    """Build the endpoint from the parts of a C{reuseport:} string, as C{serverFromString}
    splits it (C{reuseport:3010:interface=127.0.0.1} gives C{("3010",)} and
    C{{"interface": "127.0.0.1"}}).

    @raise ValueError: with a message naming what is wrong, which C{twistd} prints.
    """
    usage = f"as in {PREFIX}:3010[:interface=127.0.0.1][:backlog={DEFAULT_BACKLOG}]"
    if "port" in kwargs:
        args = (kwargs.pop("port"), *args)
    if not args or args[0] == "":
        raise ValueError(f"{PREFIX}: a port number is needed, {usage}")
    if len(args) > 1:
        raise ValueError(
            f"{PREFIX}: unexpected argument {args[1]!r} (options are name=value, and a colon "
            f"inside a value, as in an IPv6 address, is written \\:), {usage}"
        )
    unknown = sorted(set(kwargs) - set(_OPTIONS))
    if unknown:
        raise ValueError(
            f"{PREFIX}: unknown option {unknown[0]!r} (known: {', '.join(_OPTIONS)}), {usage}"
        )
    port = _whole(args[0], "the port")
    backlog = _whole(kwargs.get("backlog", str(DEFAULT_BACKLOG)), "backlog")
    try:
        return ReusePortServerEndpoint(reactor, port, backlog, kwargs.get("interface", ""))
    except ValueError as e:
        raise ValueError(f"{PREFIX}: {e}") from None


def _whole(text: str, name: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{PREFIX}: {name} must be a whole number, not {text!r}")
    return int(text)
