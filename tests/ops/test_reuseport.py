"""The C{reuseport:} endpoint: parsing, listening, several listeners (and processes) on one port.

The listening tests use real loopback sockets, since what is tested is the kernel's sharing of
one port; the last class starts two real C{twistd pomelo-connector} processes from this checkout.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import sys
from typing import Any, Literal

from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.error import CannotListenError, ProcessExitedAlready
from twisted.internet.interfaces import (
    IListeningPort,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactor
from twisted.plugin import getPlugins
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pomelo_twisted.client import PomeloClient
from pomelo_twisted.demo import make_app
from pomelo_twisted.ops.reuseport import ReusePortServerEndpoint
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import PomeloConnectorFactory, load_tls_options
from tests.support.processes import ROOT, twistd_argv
from tests.support.tls import make_certificate

ENTRY = "connector.entryHandler.entry"
GAME_OK = {"code": 200, "msg": "game server is ok."}


def _ipv6_loopback() -> bool:
    """Whether this host can bind C{::1} (some containers have no IPv6)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = _ipv6_loopback()


def parse(description: str) -> Any:
    """C{serverFromString} on a reactor that is never run (parsing only)."""
    return serverFromString(MemoryReactor(), description)


class ParserTests(SynchronousTestCase):
    """C{serverFromString} finds the plugin and builds the endpoint, or says what is wrong."""

    def test_plugin_discovered(self) -> None:
        prefixes = [p.prefix for p in getPlugins(IStreamServerEndpointStringParser)]
        self.assertIn("reuseport", prefixes)

    def test_port_only(self) -> None:
        endpoint = parse("reuseport:3010")
        self.assertIsInstance(endpoint, ReusePortServerEndpoint)
        verifyObject(IStreamServerEndpoint, endpoint)
        self.assertEqual(
            (endpoint.port, endpoint.interface, endpoint.backlog, endpoint.family),
            (3010, "", 511, socket.AF_INET),
        )

    def test_options(self) -> None:
        endpoint = parse("reuseport:3011:interface=127.0.0.1:backlog=64")
        self.assertEqual(
            (endpoint.port, endpoint.interface, endpoint.backlog), (3011, "127.0.0.1", 64)
        )
        self.assertEqual(parse("reuseport:port=0:backlog=1").port, 0)
        self.assertEqual(parse("REUSEPORT:3010").port, 3010)

    def test_ipv6_interface(self) -> None:
        """An IPv6 address (its colons escaped) makes an IPv6 socket."""
        for interface in ("::1", "::", "fe80::1%lo"):
            escaped = interface.replace(":", "\\:")
            endpoint = parse(f"reuseport:3010:interface={escaped}")
            self.assertEqual((endpoint.interface, endpoint.family), (interface, socket.AF_INET6))

    def assertRefused(self, description: str, *words: str) -> None:
        error = self.assertRaises(ValueError, parse, description)
        text = str(error)
        self.assertTrue(text.startswith("reuseport: "), text)
        for word in words:
            self.assertIn(word, text)

    def test_bad_port(self) -> None:
        self.assertRefused("reuseport:", "a port number is needed", "reuseport:3010")
        self.assertRefused("reuseport:http", "whole number", "'http'")
        self.assertRefused("reuseport:-1", "whole number", "'-1'")
        self.assertRefused("reuseport:٣٠١٠", "whole number")  # Arabic-Indic digits
        self.assertRefused("reuseport:65536", "from 0 to 65535", "65536")

    def test_unknown_option(self) -> None:
        self.assertRefused("reuseport:3010:reuseAddress=1", "unknown option 'reuseAddress'")
        self.assertRefused("reuseport:3010:127.0.0.1", "unexpected argument '127.0.0.1'")

    def test_unescaped_ipv6(self) -> None:
        """C{interface=::1} splits at its colons; the message says how to write it."""
        self.assertRefused("reuseport:3010:interface=::1", "unexpected argument", "\\:")

    def test_bad_interface(self) -> None:
        self.assertRefused("reuseport:3010:interface=localhost", "IPv4 or IPv6 address")

    def test_bad_backlog(self) -> None:
        self.assertRefused("reuseport:3010:backlog=many", "backlog", "'many'")
        self.assertRefused("reuseport:3010:backlog=0", "backlog must be at least 1")


class _InspectingReactor(MemoryReactor):
    """Looks at the socket it is asked to adopt, as the real reactor would get it."""

    def adoptStreamPort(self, fileno: int, addressFamily: int, factory: Any) -> Any:
        with socket.socket(fileno=os.dup(fileno)) as s:
            self.seen = {
                "family": s.family,
                "type": s.type,
                "address": s.getsockname()[:2],
                "reuseaddr": s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR),
                "reuseport": s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT),
                "listening": s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
                "blocking": os.get_blocking(fileno),
            }
        self.fileno = fileno
        return super().adoptStreamPort(fileno, addressFamily, factory)


class ListenTests(SynchronousTestCase):
    """What C{listen} hands to the reactor, and its errors."""

    def test_adopted_socket(self) -> None:
        clock = _InspectingReactor()
        endpoint = ReusePortServerEndpoint(clock, 0, interface="127.0.0.1")
        port = self.successResultOf(endpoint.listen(Factory()))
        self.assertTrue(IListeningPort.providedBy(port))
        seen = clock.seen
        self.assertEqual(
            (seen["family"], seen["type"], seen["address"][0]),
            (socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1"),
        )
        self.assertEqual((seen["reuseaddr"], seen["reuseport"], seen["listening"]), (1, 1, 1))
        self.assertFalse(seen["blocking"])
        # The reactor keeps its own duplicate: the endpoint's descriptor is closed.
        self.assertRaises(OSError, os.fstat, clock.fileno)

    def test_adopted_ipv6_socket(self) -> None:
        if not IPV6:
            raise self.skipTest("no IPv6 loopback here")
        clock = _InspectingReactor()
        endpoint = ReusePortServerEndpoint(clock, 0, interface="::1")
        self.successResultOf(endpoint.listen(Factory()))
        self.assertEqual(clock.adoptedPorts[0][1], socket.AF_INET6)
        self.assertEqual((clock.seen["address"][0], clock.seen["reuseport"]), ("::1", 1))

    def test_reactor_without_adoption(self) -> None:
        endpoint = ReusePortServerEndpoint(object(), 0)
        failure = self.failureResultOf(endpoint.listen(Factory()), CannotListenError)
        self.assertIn("IReactorSocket", str(failure.value))

    def test_no_so_reuseport(self) -> None:
        """Where the system has no C{SO_REUSEPORT}, listening fails and says so."""
        value = socket.SO_REUSEPORT
        del socket.SO_REUSEPORT
        self.addCleanup(setattr, socket, "SO_REUSEPORT", value)
        endpoint = ReusePortServerEndpoint(MemoryReactor(), 0)
        failure = self.failureResultOf(endpoint.listen(Factory()), CannotListenError)
        self.assertIn("SO_REUSEPORT is not available", str(failure.value))

    def test_port_held_without_reuseport(self) -> None:
        """A port bound by a socket without C{SO_REUSEPORT} cannot be joined."""
        with socket.socket() as plain:
            plain.bind(("127.0.0.1", 0))
            plain.listen(1)
            number = plain.getsockname()[1]
            clock = MemoryReactor()
            endpoint = ReusePortServerEndpoint(clock, number, interface="127.0.0.1")
            failure = self.failureResultOf(endpoint.listen(Factory()), CannotListenError)
        self.assertEqual(failure.value.socketError.errno, errno.EADDRINUSE)
        self.assertIn(f"127.0.0.1:{number}", str(failure.value))
        self.assertEqual(clock.adoptedPorts, [])


class _Accepted(Protocol):
    """Counts the connection for its factory and closes it."""

    def __init__(self, counter: _CountingFactory) -> None:
        self.counter = counter

    def connectionMade(self) -> None:
        self.counter.accepted += 1
        assert self.transport is not None
        self.transport.loseConnection()


class _CountingFactory(Factory):
    def __init__(self) -> None:
        self.accepted = 0

    def buildProtocol(self, addr: Any) -> _Accepted:
        return _Accepted(self)


class _ClosedByServer(Protocol):
    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)


class SharedPortTests(TestCase):
    """Two listening ports on one port number in one process: the kernel uses both."""

    timeout = 60

    @inlineCallbacks
    def listen_twice(self, interface: str) -> Any:
        """Listen with two counting factories on one port; return the factories and ports."""
        factories = [_CountingFactory(), _CountingFactory()]
        first = yield ReusePortServerEndpoint(reactor, 0, interface=interface).listen(factories[0])
        self.addCleanup(first.stopListening)
        number = first.getHost().port
        second = yield ReusePortServerEndpoint(reactor, number, interface=interface).listen(
            factories[1]
        )
        self.addCleanup(second.stopListening)
        self.assertEqual(second.getHost().port, number)
        return factories, [first, second]

    @inlineCallbacks
    def connect(self, host: str, number: int, count: int, batch: int = 25) -> Any:
        """Open C{count} connections, C{batch} at a time, each until the server closes it."""
        endpoint = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        done = 0
        while done < count:
            size = min(batch, count - done)
            clients = yield DeferredList(
                [
                    endpoint(reactor, host, number, timeout=5).connect(
                        Factory.forProtocol(_ClosedByServer)
                    )
                    for _ in range(size)
                ],
                fireOnOneErrback=True,
                consumeErrors=True,
            )
            yield DeferredList([client.closed for _, client in clients], fireOnOneErrback=True)
            done += size

    @inlineCallbacks
    def test_both_accept(self) -> Any:
        """200 connections over loopback: every one is accepted, by one listener or the other,
        and each listener gets a share (the kernel hashes each connection's addresses)."""
        factories, ports = yield self.listen_twice("127.0.0.1")
        yield self.connect("127.0.0.1", ports[0].getHost().port, 200)
        counts = [f.accepted for f in factories]
        self.assertEqual(sum(counts), 200, counts)
        # Binomial(200, 1/2) below 20 has a probability under 1e-30.
        self.assertTrue(all(c >= 20 for c in counts), counts)

    @inlineCallbacks
    def test_one_stops(self) -> Any:
        """Once one listener has stopped, the other takes every new connection."""
        factories, ports = yield self.listen_twice("127.0.0.1")
        number = ports[0].getHost().port
        yield ports[0].stopListening()
        yield self.connect("127.0.0.1", number, 40)
        self.assertEqual([f.accepted for f in factories], [0, 40])

    @inlineCallbacks
    def test_ipv6(self) -> Any:
        if not IPV6:
            raise self.skipTest("no IPv6 loopback here")
        factories, ports = yield self.listen_twice("::1")
        self.assertEqual(ports[0].getHost().type, "TCP")
        self.assertEqual(ports[0].getHost().host, "::1")
        yield self.connect("::1", ports[0].getHost().port, 60)
        counts = [f.accepted for f in factories]
        self.assertEqual(sum(counts), 60, counts)
        self.assertTrue(all(counts), counts)

    @inlineCallbacks
    def test_tcp_endpoint_cannot_join(self) -> Any:
        """A plain C{tcp:} listener (no C{SO_REUSEPORT}) cannot take a shared port."""
        _, ports = yield self.listen_twice("127.0.0.1")
        number = ports[0].getHost().port
        tcp = serverFromString(reactor, f"tcp:{number}:interface=127.0.0.1")
        yield self.assertFailure(tcp.listen(Factory()), CannotListenError)


@implementer(IStreamClientEndpoint)
class _RecordingEndpoint:
    """A client endpoint that notes each connection's local port (the server logs it)."""

    def __init__(self, endpoint: IStreamClientEndpoint, ports: list[int]) -> None:
        self._endpoint = endpoint
        self._ports = ports

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        def connected(protocol: Any) -> Any:
            self._ports.append(protocol.transport.getHost().port)
            return protocol

        return self._endpoint.connect(protocolFactory).addCallback(connected)


class _TLSHarness(TestCase):
    """A throwaway certificate and clients that trust it."""

    timeout = 60

    def setUp(self) -> None:
        self.key_path, self.cert_path, pem = make_certificate(self.mktemp())
        self.client_tls = ssl.optionsForClientTLS(
            "localhost", trustRoot=ssl.Certificate.loadPEM(pem)
        )
        self.local_ports: dict[bool, list[int]] = {False: [], True: []}

    def endpoint(self, number: int, secure: bool) -> IStreamClientEndpoint:
        tcp = TCP4ClientEndpoint(reactor, "127.0.0.1", number, timeout=5)
        recording = _RecordingEndpoint(tcp, self.local_ports[secure])
        return wrapClientTLS(self.client_tls, recording) if secure else recording

    @inlineCallbacks
    def exercise(self, number: int, secure: bool, transport: Literal["tcp", "ws"] = "tcp") -> Any:
        """Connect one PomeloClient, ask the demo's entry route, and close."""
        client = PomeloClient(reactor, request_timeout=10, handshake_timeout=10)
        self.addCleanup(client.close)
        answer = yield client.connect(self.endpoint(number, secure), transport=transport)
        self.assertEqual(answer["code"], 200)
        body = yield client.request(ENTRY, {})
        self.assertEqual(body, GAME_OK)
        yield client.close()


class TLSTests(_TLSHarness):
    """The connector's factory with C{tls=} on a C{reuseport:} port: plain and TLS clients,
    TCP and WebSocket, told apart by their first byte, as on C{tcp:}."""

    @inlineCallbacks
    def test_plain_and_tls(self) -> Any:
        connector = Connector(make_app(), reactor, ConnectorConfig(heartbeat_timeout=60))
        factory = PomeloConnectorFactory(
            connector, tls=load_tls_options(self.key_path, self.cert_path)
        )
        port = yield serverFromString(reactor, "reuseport:0:interface=127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        for secure in (False, True):
            for transport in ("tcp", "ws"):
                yield self.exercise(number, secure, transport)
        self.assertEqual(len(self.local_ports[False]), 2)
        self.assertEqual(len(self.local_ports[True]), 2)
        yield connector.wait_closed(5.0)
        self.assertEqual(connector.sockets, set())


class _Worker(ProcessProtocol):
    """A C{twistd} child: collects its output, tells when it listens and when it ends."""

    def __init__(self, number: int) -> None:
        self.output = b""
        self.listening: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self._ready = f"starting on {number}".encode()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.listening.called and self._ready in self.output:
            self.listening.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        if not self.listening.called:
            self.listening.errback(reason)

    def peers(self) -> set[int]:
        """The client ports of the connections this process logged as closed."""
        text = self.output.decode("utf-8", "replace")
        return {int(p) for p in re.findall(r"connection closed: peer=127\.0\.0\.1:(\d+) ", text)}


def _bounded(d: Deferred[Any], seconds: float, what: str) -> Deferred[Any]:
    """C{d}, failing with C{what} if it has not fired within C{seconds}."""
    timer = reactor.callLater(seconds, d.cancel)

    def done(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        if isinstance(result, Failure):
            raise AssertionError(f"{what} (within {seconds} s): {result.getErrorMessage()}")
        return result

    return d.addBoth(done)


class TwoProcessesTests(_TLSHarness):
    """Two C{twistd pomelo-connector} processes from this checkout, on one C{reuseport:} port,
    with C{--tls-key}: clients reach both, plain and TLS alike."""

    timeout = 120
    CLIENTS = 40

    def start(self, server_id: str, number: int) -> _Worker:
        worker = _Worker(number)
        argv = twistd_argv(
            "--listen",
            f"reuseport:{number}:interface=127.0.0.1",
            "--server-id",
            server_id,
            "--tls-key",
            self.key_path,
            "--tls-cert",
            self.cert_path,
            "--drain-timeout",
            "1",
        )
        process = reactor.spawnProcess(
            worker, sys.executable, argv, env=dict(os.environ), path=ROOT
        )
        self.addCleanup(self.stop, process, worker)
        return worker

    def stop(self, process: Any, worker: _Worker) -> Deferred[Any]:
        """SIGTERM (a drain), then SIGKILL if the process is still there after 10 s."""

        def kill() -> None:
            with contextlib.suppress(ProcessExitedAlready):
                process.signalProcess("KILL")

        if worker.ended.called:
            return worker.ended
        with contextlib.suppress(ProcessExitedAlready):
            process.signalProcess("TERM")
        killer = reactor.callLater(10, kill)

        def ended(result: object) -> object:
            if killer.active():
                killer.cancel()
            return result

        return worker.ended.addBoth(ended)

    @inlineCallbacks
    def test_both_processes_serve(self) -> Any:
        # Hold the port number while the workers start: a bound (not listening) socket with
        # SO_REUSEPORT keeps it from being handed out, and lets the workers join it.
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        number = holder.getsockname()[1]
        workers = {name: self.start(name, number) for name in ("a", "b")}
        for name, worker in workers.items():
            try:
                yield _bounded(worker.listening, 60, f"worker {name} did not listen")
            except AssertionError as e:
                self.fail(f"{e}\n{worker.output.decode('utf-8', 'replace')}")
        holder.close()

        for i in range(0, self.CLIENTS, 10):
            yield DeferredList(
                [self.exercise(number, secure=j % 2 == 1) for j in range(i, i + 10)],
                fireOnOneErrback=True,
                consumeErrors=True,
            )
        plain, tls = set(self.local_ports[False]), set(self.local_ports[True])
        clients = plain | tls
        self.assertEqual(len(clients), self.CLIENTS)

        # Each close is logged by the process that served the connection.
        for _ in range(100):
            if workers["a"].peers() | workers["b"].peers() >= clients:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        a, b = workers["a"].peers() & clients, workers["b"].peers() & clients
        self.assertEqual(a | b, clients)
        self.assertEqual(a & b, set())
        for served in (a, b):
            # Both served plain and TLS clients (20 of each: one process missing out on a kind
            # has a probability of about 1e-5).
            self.assertTrue(served & plain and served & tls, (sorted(a), sorted(b)))
