"""Hostile load over real loopback sockets: the connector keeps serving, and cleans up after.

One connector (the demo app, the default configuration except 2 s deadlines, a 3 s heartbeat and
connection caps high enough for the test; TLS accepted on the plain port with C{tls=}) listens
on 127.0.0.1. In the same process about 1800 raw Twisted clients misbehave
(L{tests.support.hostile}): garbage, oversize package headers, half handshakes, byte-at-a-time
writers (TCP and WebSocket), abrupt closes and TCP resets (at once, mid-handshake,
mid-package), clients that stop reading while asking for megabytes (TCP, WebSocket, TLS; and one
that also has itself kicked, so that its graceful close cannot finish), pipelined floods over
the request rate, half-closes, idle connects, HTTP junk (other methods, plain GETs, oversize and
never-ending heads, slowloris), half WebSocket upgrades, TLS garbage and stalled TLS
handshakes, and several of these inside TLS. At most L{CONCURRENCY} are open at a time, started
a few milliseconds apart. Among them 50 well-behaved L{PomeloClient}s (TCP and WebSocket, some
through TLS, some across a heartbeat) make requests that must all be answered correctly.

Afterwards (each wait is polled at 0.1 s and bounded): no connection, session, admitted
connection or per-address count is left, no timer of this package or of the test's clients is
left on the reactor, every client that stopped reading was cut off by the slow-reader cap, and
the process's resident memory is within a generous bound of where it started.

The only timing assumptions are generous bounds: the server must close every hostile
connection within L{STUCK_AFTER} seconds (its deadlines are 2 to 6 s, 5 s after a kick), and
the whole test must end within trial's C{timeout}. A trickling client that a deadline cuts off
on a slow machine is counted apart, not failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import random
import time
from collections import Counter
from typing import Any

from twisted.internet import reactor, ssl, task
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase

from pomelo_twisted.client import PomeloClient
from pomelo_twisted.demo import make_app
from pomelo_twisted.ops.metrics import ConnectorMetrics
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import PomeloConnectorFactory, load_tls_options
from pomelo_twisted.server.socket import HybridSocket
from tests.support.hostile import (
    ACK,
    ECHO,
    ENTRY,
    HANDSHAKE,
    HEARTBEAT,
    KINDS,
    UPGRADE,
    HostileClient,
    NeverReads,
    NeverReadsWebSocket,
    TLSStall,
    client_frame,
    request,
)
from tests.support.tls import make_certificate

#: Hostile connections open at once (both ends are file descriptors of this process: well
#: under the usual limit of 1024).
CONCURRENCY = 250
#: The pause between two connection starts (the ramp).
LAUNCH_GAP = 0.004
#: Well-behaved clients, and the requests each makes.
GOOD_CLIENTS = 50
GOOD_REQUESTS = 20
#: A hostile connection the server has not closed after this long is stuck.
STUCK_AFTER = 30.0
#: Seeds the order of the clients and each client's random choices (the run is repeatable).
SEED = 20240604
#: How much the resident memory may grow over the test.
RSS_SLACK = 30 * 1024 * 1024

CONFIG = ConnectorConfig(
    first_byte_timeout=2,
    handshake_timeout=2,
    ack_timeout=2,
    heartbeat=3,
    max_connections=20_000,
    max_connections_per_ip=20_000,
)


def rss() -> int:
    """The resident set size of this process, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trim() -> None:
    """Collect garbage, and have glibc return freed heap pages (its cache is not a leak)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def client_hello(options: Any) -> bytes:
    """The first flight of a TLS client with C{options} (captured in memory)."""
    factory = TLSMemoryBIOFactory(options, True, Factory.forProtocol(Protocol), clock=task.Clock())
    transport = StringTransport()
    factory.buildProtocol(None).makeConnection(transport)
    return transport.value()


def prometheus_counts(metrics: ConnectorMetrics) -> dict[str, float]:
    """The connector's own samples (C{pomelo_*}), by name and labels, from the exposition."""
    counts = {}
    for line in metrics.exposition().decode().splitlines():
        if line.startswith("pomelo_"):
            name, _, value = line.rpartition(" ")
            counts[name] = float(value)
    return counts


class _One(Factory):
    """A client factory for one given protocol instance."""

    def __init__(self, protocol: Any) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: Any) -> Any:
        return self.protocol_instance


class HostileLoadTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.errors: list[str] = []
        self.counts: Counter[str] = Counter()
        self.close_reasons: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self.failures: list[str] = []
        self.clients: list[HostileClient] = []
        globalLogPublisher.addObserver(self.observe)
        self.addCleanup(globalLogPublisher.removeObserver, self.observe)
        # After a failure: cut off whatever is left, so trial's reactor check stays meaningful.
        self.addCleanup(self.abort_leftovers)

    def abort_leftovers(self) -> None:
        for client in self.clients:
            if client.lost_reason is None and client.transport is not None:
                client.transport.abortConnection()

    def observe(self, event: dict[str, Any]) -> None:
        if "log_failure" in event:
            self.failures.append(event["log_failure"].getTraceback())

    def count_close_reasons(self, connector: Connector) -> None:
        """Tally why the server closed each classified connection (HybridSocket.close_reason)."""
        socket_closed = connector.socket_closed

        def closed(socket: HybridSocket) -> None:
            reason = socket.close_reason or "?"
            self.close_reasons[reason.split(":")[0].split(" (")[0]] += 1
            socket_closed(socket)

        connector.socket_closed = closed  # type: ignore[method-assign]

    @inlineCallbacks
    def wait_until(self, condition: Any, bound: float) -> Any:
        """Poll C{condition} every 0.1 s; return whether it held within C{bound} seconds."""
        end = time.monotonic() + bound
        while not condition():
            if time.monotonic() > end:
                return False
            yield deferLater(reactor, 0.1, lambda: None)
        return True

    @inlineCallbacks
    def run_hostile(self, kind: type[HostileClient], tls: bool, rng: random.Random) -> Any:
        """One hostile connection (through TLS when C{tls}): the server must close it within
        L{STUCK_AFTER} seconds (unless the client leaves first), with the right answers."""
        yield self.semaphore.acquire()
        name = ("tls+" if tls else "") + kind.kind
        try:
            client = kind(reactor, rng)
            self.clients.append(client)
            factory: Any = _One(client)
            if tls:
                factory = TLSMemoryBIOFactory(self.client_tls, True, factory)
            try:
                yield self.endpoint.connect(factory)
            except Exception as e:
                self.errors.append(f"{name}: connect failed: {e!r}")
                return
            stuck: list[bool] = []

            def too_long() -> None:
                stuck.append(True)
                client.transport.abortConnection()

            call = reactor.callLater(STUCK_AFTER, too_long)
            yield client.done
            if call.active():
                call.cancel()
            if stuck:
                self.errors.append(
                    f"{name}: still open after {STUCK_AFTER} s; got {client.received[:80]!r}"
                )
            else:
                problem = client.check()
                if problem:
                    self.errors.append(f"{name}: {problem}")
                if client.note:
                    self.notes[f"{name}: {client.note}"] += 1
            self.counts[name] += 1
        finally:
            self.semaphore.release()

    @inlineCallbacks
    def run_good(self, n: int, cache: dict[str, Any]) -> Any:
        """A well-behaved client: N requests (entry and echo), every one answered correctly;
        over TCP or WebSocket, one in five through TLS, one in five across a heartbeat."""
        ws = n % 2 == 1
        tls = n % 5 == 1
        name = ("tls+" if tls else "") + ("ws" if ws else "tcp")
        endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=20)
        if tls:
            endpoint = wrapClientTLS(self.client_tls, endpoint)
        client = PomeloClient(reactor, cache=cache, request_timeout=30, handshake_timeout=30)
        try:
            answer = yield client.connect(
                endpoint, transport="ws" if ws else "tcp", url="ws://localhost/"
            )
            if answer.get("code") != 200:
                self.errors.append(f"good {name} {n}: handshake answer {answer}")
                return
            for i in range(GOOD_REQUESTS):
                if n % 5 == 0 and i == GOOD_REQUESTS // 2:
                    # Stay across a heartbeat interval (3 s): the heartbeats keep it open.
                    yield deferLater(reactor, 3.5, lambda: None)
                if i % 2:
                    msg = {"client": n, "i": i, "pad": "z" * (n * 37 % 500)}
                    body = yield client.request(ECHO, msg)
                    expected: Any = msg
                else:
                    body = yield client.request(ENTRY, {})
                    expected = {"code": 200, "msg": "game server is ok."}
                if body != expected:
                    self.errors.append(f"good {name} {n}: request {i}: {body!r}")
                    return
                self.counts["good answers"] += 1
            self.counts[f"good {name}"] += 1
        except Exception as e:
            self.errors.append(f"good {name} {n}: {e!r}")
        finally:
            yield client.close()

    @inlineCallbacks
    def test_hostile_load(self) -> Any:
        """Hostile clients and well-behaved ones at once; then nothing is left."""
        started = time.monotonic()
        key, cert, pem = make_certificate(self.mktemp())
        self.client_tls = ssl.optionsForClientTLS(
            "localhost", trustRoot=ssl.Certificate.loadPEM(pem)
        )
        TLSStall.client_hello = client_hello(self.client_tls)
        HostileClient.deadline = min(
            CONFIG.first_byte_timeout or 0, CONFIG.handshake_timeout or 0, CONFIG.ack_timeout or 0
        )
        connector = Connector(make_app(), reactor, CONFIG)
        metrics = ConnectorMetrics(connector)  # its counts must add up too
        self.count_close_reasons(connector)
        # tls=: the port takes TLS clients as well as plain ones (the TLS kinds below).
        factory = PomeloConnectorFactory(connector, tls=load_tls_options(key, cert))
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1:backlog=1024").listen(
            factory
        )
        self.addCleanup(lambda: port.stopListening() if port.connected else None)
        self.port = port.getHost().port
        self.endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=20)
        self.semaphore = DeferredSemaphore(CONCURRENCY)

        # The baselines. Trial arms its timeout call once this method has returned its
        # Deferred; a real reactor turn makes sure it has, so that the baseline holds it.
        yield deferLater(reactor, 0, lambda: None)
        baseline = set(reactor.getDelayedCalls())
        trim()
        rss_start = rss()

        plan = [(kind, tls) for kind, count, tls in KINDS for _ in range(count)]
        random.Random(SEED).shuffle(plan)
        good_every = max(1, len(plan) // GOOD_CLIENTS)
        cache: dict[str, Any] = {}
        running: list[Deferred[Any]] = []
        good_started = 0
        for i, (kind, tls) in enumerate(plan):
            running.append(self.run_hostile(kind, tls, random.Random(f"{SEED}-{i}")))
            if i % good_every == 0 and good_started < GOOD_CLIENTS:
                running.append(self.run_good(good_started, cache))
                good_started += 1
            yield deferLater(reactor, LAUNCH_GAP, lambda: None)
        while good_started < GOOD_CLIENTS:
            running.append(self.run_good(good_started, cache))
            good_started += 1
        launched = time.monotonic()
        yield gatherResults(running)
        clients_done = time.monotonic()

        # Every connection closes; the connector forgets it.
        empty = yield self.wait_until(
            lambda: (
                not connector.sockets
                and connector.session_service.sessions_count == 0
                and connector.connection_count == 0
            ),
            15,
        )
        left = (
            len(connector.sockets),
            connector.session_service.sessions_count,
            connector.connection_count,
            connector.connections_from("127.0.0.1"),
        )
        yield port.stopListening()

        # Every timer goes with its connection (Autobahn's too: ExactTimersMixin).
        def new_calls() -> list[Any]:
            return [c for c in reactor.getDelayedCalls() if c not in baseline]

        yield self.wait_until(lambda: not new_calls(), 10)
        timers = new_calls()

        counted = prometheus_counts(metrics)
        opened = sum(v for k, v in counted.items() if k.startswith("pomelo_connections_total"))
        closed = sum(v for k, v in counted.items() if k.startswith("pomelo_closes_total"))
        gauges = [
            v
            for k, v in counted.items()
            if k.startswith(("pomelo_connections_open", "pomelo_connections_admitted"))
            or k == "pomelo_sessions"
        ]

        # The test's own clients hold on to their transports, and a client that stopped reading
        # to its megabytes of unsent requests: let them go before measuring.
        self.clients.clear()
        del running[:]
        trim()
        rss_end = rss()
        hostile = sum(count for _, count, _ in KINDS)
        never_reads = sum(n for k, n, _ in KINDS if k in (NeverReads, NeverReadsWebSocket))
        slow_readers = self.close_reasons["slow reader"]
        summary = (
            f"hostile load: {hostile} hostile + {GOOD_CLIENTS} good clients: "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            + "".join(f", {k}={v}" for k, v in sorted(self.notes.items()))
            + "; server closes by reason: "
            + ", ".join(f"{k}={v}" for k, v in self.close_reasons.most_common())
            + f"; launched in {launched - started:.1f} s, clients done at"
            f" {clients_done - started:.1f} s, total {time.monotonic() - started:.1f} s"
            + f"; RSS {rss_start / 2**20:.1f} MiB -> {rss_end / 2**20:.1f} MiB"
            f" ({(rss_end - rss_start) / 2**20:+.1f} MiB)"
            + f"; left (sockets, sessions, admitted, per-ip) {left}; timers left {len(timers)}"
            + f"; metrics: {opened:.0f} opened, {closed:.0f} closed, refused "
            + ", ".join(
                f"{k.split('=')[1][1:-2]}={v:.0f}"
                for k, v in counted.items()
                if k.startswith("pomelo_refused_total") and v
            )
        )
        print("\n" + summary)

        self.assertEqual(self.errors, [], summary)
        self.assertEqual(self.failures, [], "failures logged")
        self.assertTrue(empty, f"connections left: {left}")
        self.assertEqual(left, (0, 0, 0, 0))
        self.assertEqual(timers, [], "timers left on the reactor")
        self.assertEqual(timers, [], "Autobahn timers still pending 10 s after the last close")
        good = sum(
            v for k, v in self.counts.items() if k.startswith("good ") and k != "good answers"
        )
        self.assertEqual(good, GOOD_CLIENTS)
        self.assertEqual(self.counts["good answers"], GOOD_CLIENTS * GOOD_REQUESTS)
        self.assertEqual(
            sum(v for k, v in self.counts.items() if not k.startswith("good ")), hostile
        )
        self.assertEqual(slow_readers, never_reads, "never-reading clients not cut off by the cap")
        self.assertEqual(opened, closed, "metrics: connections opened and closed differ")
        self.assertEqual(opened, sum(self.close_reasons.values()))
        self.assertEqual(gauges, [0] * len(gauges), "metrics: open gauges not back to 0")
        self.assertLess(rss_end - rss_start, RSS_SLACK, summary)


class _Recorder(Protocol):
    """A raw client: sends C{hello} on connect, records everything, fires C{lost}."""

    def __init__(self, hello: bytes, ready: bytes) -> None:
        self.hello = hello
        self.ready_marker = ready
        self.received = b""
        self.ready: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.hello)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.ready.called and self.received.endswith(self.ready_marker):
            self.ready.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class AbortedClientTests(TestCase):
    """An aborted connection is sent nothing more (docs/security.md: "Aborted means the
    server drops the TCP connection without flushing anything")."""

    timeout = 20

    @inlineCallbacks
    def test_blocked_clients_get_nothing_more(self) -> Any:
        """BUG: C{close_blocked()} aborts the Twisted transport, but the connection's socket
        stays WORKING until C{connectionLost} (Twisted delivers it on the next iteration). A
        push queued earlier in the same reactor turn is then flushed through C{write_now},
        which checks C{connected} and C{disconnecting} but not C{_aborting} (Twisted's
        C{abortConnection} sets neither), and C{sendmsg}s it to the aborted client. Twisted's
        own C{write} would have dropped it."""
        connector = Connector(make_app(), reactor, CONFIG)
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            PomeloConnectorFactory(connector)
        )
        self.addCleanup(port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5)
        tcp = _Recorder(HANDSHAKE + ACK, HEARTBEAT)
        ws = _Recorder(
            UPGRADE + client_frame(HANDSHAKE) + client_frame(ACK), b"\x82\x04" + HEARTBEAT
        )
        for client in (tcp, ws):
            yield endpoint.connect(_One(client))
            yield client.ready
            client.received = b""
        self.assertEqual(len(connector.sockets), 2)

        # One reactor turn: a push to everyone, then the address is blocked and cut off.
        connector.session_service.for_each_session(lambda s: s.push_message("onPush", {"n": 1}))
        connector.blocklist.add("127.0.0.1")
        self.assertEqual(connector.close_blocked(), 2)
        connector.flush()  # the end of the turn (its callLater(0) was scheduled first)

        yield gatherResults([tcp.lost, ws.lost])
        self.assertEqual((tcp.received, ws.received), (b"", b""))


class StuckCloseTests(TestCase):
    """A graceful close to a client that reads nothing cannot finish: the server must abort."""

    timeout = 30

    @inlineCallbacks
    def test_websocket_close_frame_from_a_client_that_stopped_reading(self) -> Any:
        """BUG: a WebSocket client stops reading, lets the server's write buffer fill (under the
        slow-reader cap), then sends a close frame. Autobahn replies and drops the connection
        gracefully (C{dropConnection(abort=False)}), which cannot finish. The heartbeat timeout
        then closes the socket and arms the abort (C{kick_close_timeout}), but
        C{PomeloWebSocketProtocol.abortConnection} only calls C{dropConnection(abort=True)},
        which Autobahn skips because its state is already CLOSED. The connection, its admitted
        slot and its buffered bytes stay until the client goes away (forever, if it stays)."""
        config = ConnectorConfig(heartbeat=1, kick_close_timeout=1)  # cut off ~3 s after
        connector = Connector(make_app(), reactor, config)
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            PomeloConnectorFactory(connector)
        )
        self.addCleanup(port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5)
        client = _Recorder(
            UPGRADE + client_frame(HANDSHAKE) + client_frame(ACK), b"\x82\x04" + HEARTBEAT
        )
        yield endpoint.connect(_One(client))
        self.addCleanup(lambda: None if client.lost.called else client.transport.abortConnection())
        yield client.ready
        [socket] = connector.sockets
        server = socket.transport.transport  # the Twisted TCP transport under Autobahn

        def buffered() -> int:
            return server._tempDataLen + len(server.dataBuffer) - server.offset

        client.transport.pauseProducing()  # the client stops reading
        body = b'{"pad":"' + b"p" * 30000 + b'"}'
        mid = 0
        while not buffered():  # the kernel's buffers are full: Twisted's own holds the rest
            self.assertLess(mid, 2000)
            batch = [client_frame(HEARTBEAT)]
            for _ in range(10):
                mid += 1
                batch.append(client_frame(request(mid, ECHO, body)))
            client.transport.writeSequence(batch)
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(socket.transport.guard.overflowed)  # under the cap
        client.transport.write(client_frame(b"\x03\xe8", opcode=8))  # a close frame, 1000

        end = time.monotonic() + 12
        while connector.sockets and time.monotonic() < end:
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(
            (len(connector.sockets), connector.connection_count),
            (0, 0),
            f"still open 12 s after the close frame (close reason {socket.close_reason!r}, "
            f"{buffered()} bytes buffered)",
        )
