"""The session service's test doubles: an L{ISessionConnection} that records the packages it is
given (and one whose sends fail), a codec, and the push bytes of protocol.md's examples."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from zope.interface import implementer

from pomelo_twisted.protocol.codec import ServerCodec
from pomelo_twisted.protocol.dictionary import RouteDictionary
from pomelo_twisted.services.interfaces import ISessionConnection
from pomelo_twisted.services.session import Session, SessionService
from tests.support.vectors import h

#: Push "onChat" {"msg":"hi"} with the dictionary below: DATA, length 15; PUSH flag 0x06 with
#: the compressed-route bit (0x07); code 2, because handler routes are numbered first
#: ("connector.entryHandler.entry" is 1) and the extra route "onChat" follows; then the JSON.
PUSH_HI_DICT = h("04 00 00 0f 07 00 02 7b 22 6d 73 67 22 3a 22 68 69 22 7d")

#: The same push without a dictionary: flag 0x06, route length 6, "onChat", then the JSON.
PUSH_HI_PLAIN = h("04 00 00 14 06 06 6f 6e 43 68 61 74 7b 22 6d 73 67 22 3a 22 68 69 22 7d")


def make_codec(use_dict: bool = True) -> ServerCodec:
    """The codec the tests push through: JSON bodies, with or without the test dictionary."""
    dictionary = RouteDictionary(["connector.entryHandler.entry"], ["onChat"]) if use_dict else None
    return ServerCodec(dictionary, None)


@implementer(ISessionConnection)
class FakeConnection:
    """An in-memory connection: records what the service sends and asks.

    Like the real socket, a kick closes the connection at once, which removes its session
    from the service (unless C{remove_on_kick} is off, to test a slow close).

    @ivar packages: every package accepted, in order (the very objects passed in).
    @ivar kicks: every kick reason, in order.
    @ivar working: whether packages are accepted.
    """

    def __init__(
        self, working: bool = True, remove_on_kick: bool = True, port: int = 40000
    ) -> None:
        self.working = working
        self.remove_on_kick = remove_on_kick
        self.packages: list[bytes] = []
        self.kicks: list[str | None] = []
        self.service: SessionService | None = None
        self.session: Session | None = None
        self.peer = IPv4Address("TCP", "127.0.0.1", port)

    def sendPackage(self, package: bytes) -> bool:
        if not self.working:
            return False
        self.packages.append(package)
        return True

    def kick(self, reason: str | None) -> None:
        self.kicks.append(reason)
        self.working = False
        if self.remove_on_kick:
            self.close(reason)

    def close(self, reason: Any) -> None:
        """What the socket does when it closes: tell the service, once."""
        session, self.session = self.session, None
        if session is not None and self.service is not None:
            self.service.remove(session.id, reason)

    def getPeer(self) -> IPv4Address:
        return self.peer


class BrokenConnection(FakeConnection):
    """A connection whose sendPackage and kick raise, to check that fan-out survives them."""

    def sendPackage(self, package: bytes) -> bool:
        raise RuntimeError("broken connection")

    def kick(self, reason: str | None) -> None:
        raise RuntimeError("broken connection")


def connect(service: SessionService, **kwargs: Any) -> tuple[Session, FakeConnection]:
    """Admit a new fake connection and return its session and connection."""
    conn = FakeConnection(**kwargs)
    session = service.create(conn)
    conn.service = service
    conn.session = session
    return session, conn
