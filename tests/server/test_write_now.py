"""write_now: the connector's direct-send write path, over real loopback sockets."""

from __future__ import annotations

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pomelo_twisted.server.tcp import write_now


class Keeper(protocol.Protocol):
    """The server side: hands its transport to the test."""

    def connectionMade(self) -> None:
        self.factory.connected.callback(self)  # type: ignore[attr-defined]


class Reader(protocol.Protocol):
    """The client side: collects bytes; can stop reading to fill the server's socket."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.waiting: tuple[int, defer.Deferred[None]] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.waiting is not None and len(self.received) >= self.waiting[0]:
            d = self.waiting[1]
            self.waiting = None
            d.callback(None)

    def until(self, size: int) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self.waiting = (size, d)
        self.dataReceived(b"")
        return d


class WriteNowOverSocketTests(TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        factory = protocol.Factory.forProtocol(Keeper)
        factory.connected = defer.Deferred()  # type: ignore[attr-defined]
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.reader = Reader()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        client = yield endpoint.connect(protocol.Factory.forProtocol(lambda: self.reader))
        self.client_transport = client.transport
        self.server = yield factory.connected  # type: ignore[attr-defined]
        self.addCleanup(self.server.transport.loseConnection)
        self.addCleanup(self.client_transport.loseConnection)

    @defer.inlineCallbacks
    def test_idle_socket_sends_at_once(self):  # type: ignore[no-untyped-def]
        """Nothing is queued in Twisted: the bytes went straight to the kernel."""
        transport = self.server.transport
        write_now(transport, [b"ab", b"cd"])
        self.assertEqual(transport._tempDataLen, 0)
        self.assertEqual(transport.dataBuffer, b"")
        self.assertFalse(transport in reactor.getWriters())
        yield self.reader.until(4)
        self.assertEqual(bytes(self.reader.received), b"abcd")

    @defer.inlineCallbacks
    def test_full_socket_falls_back_in_order(self):  # type: ignore[no-untyped-def]
        """What the kernel does not take is queued in Twisted, and later writes queue behind
        it, so the peer reads every byte in order."""
        transport = self.server.transport
        self.client_transport.pauseProducing()  # the client stops reading
        big = bytes(range(256)) * 40000  # ~10 MB: more than the socket buffers hold
        shared = b"broadcast"
        write_now(transport, [big[:5000000], big[5000000:]])
        self.assertGreater(transport._tempDataLen, 0)  # some of it is queued in Twisted
        write_now(transport, [shared, b"tail"])
        self.assertIs(transport._tempDataBuffer[-2], shared)  # queued as is, not copied
        self.client_transport.resumeProducing()
        yield self.reader.until(len(big) + len(shared) + 4)
        self.assertEqual(bytes(self.reader.received), big + shared + b"tail")


class WriteNowOtherTransportsTests(SynchronousTestCase):
    def test_other_transports_take_twisteds_path(self) -> None:
        transport = StringTransport()
        write_now(transport, [b"a", b"b"])
        self.assertEqual(transport.value(), b"ab")
