"""The operator's view: Prometheus metrics, the close log line, /healthz and the drain.

Unit tests count each event in memory (a C{task.Clock}, fake transports) and read the counts
back the way Prometheus would: the registry's text exposition parsed with
C{prometheus_client}'s own parser. The end-to-end tests run a L{ConnectorService} on real
loopback ports, drive L{PomeloClient}s through it and scrape C{/metrics} and C{/healthz} with
real HTTP requests.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from pomelo_twisted.client import PomeloClient
from pomelo_twisted.demo import make_app
from pomelo_twisted.ops import tap
from pomelo_twisted.ops.metrics import (
    OTHER,
    REFUSAL_REASONS,
    ConnectorMetrics,
    HealthResource,
)
from pomelo_twisted.ops.service import ConnectorService
from pomelo_twisted.protocol.package import PackageType, encode_package
from pomelo_twisted.server.closing import CLOSE_CAUSES
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import PomeloConnectorFactory
from pomelo_twisted.services.application import Application
from tests.support.connector import (
    ACK,
    Client,
    FakeTransport,
    make_connector,
    make_test_app,
    notify,
    request,
)
from tests.support.crypto import handshake_body, private_key, rsa_field
from tests.support.options import tap_options
from tests.support.transports import HANDSHAKE, UPGRADE, Transport

ECHO = "connector.testHandler.echo"
BOOM = "connector.testHandler.boom"
CODE3 = "connector.testHandler.code3"
PUSH = "connector.testHandler.push"

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample; a KeyError names what is missing."""
    return samples[(name, tuple(sorted(labels.items())))]


def messages(events: list[LogEvent]) -> list[str]:
    return [formatEvent(event) for event in events]


def closes(events: list[LogEvent]) -> list[LogEvent]:
    """The close lines among C{events}."""
    return [e for e in events if e.get("log_format", "").startswith("connection closed")]


# --- counting, in memory -------------------------------------------------------------------


class MetricsTestCase(SynchronousTestCase):
    """A connector on a clock with metrics on, fed in memory."""

    def setUp(self) -> None:
        self.build()

    def build(self, app: Application | None = None, **config: Any) -> None:
        self.app = app if app is not None else make_test_app()
        self.connector, self.clock = make_connector(self.app, **config)
        self.metrics = ConnectorMetrics(self.connector)

    def client(self, ws: bool = False) -> Client:
        return Client(self.connector, self.clock, ws)

    def samples(self) -> Samples:
        return parse(self.metrics.exposition().decode("utf-8"))

    def value(self, name: str, **labels: str) -> float:
        return value(self.samples(), name, **labels)


class ConnectionTests(MetricsTestCase):
    def test_installs_itself(self) -> None:
        self.assertIs(self.connector.metrics, self.metrics)
        self.assertEqual(self.value("pomelo_draining"), 0)

    def test_connections_by_transport(self) -> None:
        tcp = self.client().connect()
        self.client(ws=True).connect()
        self.client(ws=True)  # classified, no handshake yet
        samples = self.samples()
        self.assertEqual(value(samples, "pomelo_connections_total", transport="tcp"), 1)
        self.assertEqual(value(samples, "pomelo_connections_total", transport="ws"), 2)
        self.assertEqual(value(samples, "pomelo_connections_open", transport="tcp"), 1)
        self.assertEqual(value(samples, "pomelo_connections_open", transport="ws"), 2)
        self.assertEqual(value(samples, "pomelo_sessions"), 2)
        tcp.lose()
        samples = self.samples()
        self.assertEqual(value(samples, "pomelo_connections_open", transport="tcp"), 0)
        self.assertEqual(value(samples, "pomelo_connections_total", transport="tcp"), 1)
        self.assertEqual(value(samples, "pomelo_sessions"), 1)

    def test_other_transport(self) -> None:
        """A transport neither TCP nor WebSocket counts as 'other', which shows only then."""
        self.assertNotIn(("pomelo_connections_total", (("transport", OTHER),)), self.samples())
        sock = self.connector.build_socket(FakeTransport("carrier-pigeon"))
        sock.dataReceived(HANDSHAKE_1)
        samples = self.samples()
        self.assertEqual(value(samples, "pomelo_connections_total", transport=OTHER), 1)
        self.assertEqual(value(samples, "pomelo_connections_open", transport=OTHER), 1)
        self.assertEqual(value(samples, "pomelo_bytes_received_total", transport=OTHER), 13)

    def test_bytes(self) -> None:
        tcp = self.client()
        tcp.connect()
        written = tcp.exchange(request(1, ECHO, b'{"a":1}'))
        ws = self.client(ws=True)
        ws.connect()
        samples = self.samples()
        received = len(HANDSHAKE_1) + len(ACK) + len(request(1, ECHO, b'{"a":1}'))
        self.assertEqual(value(samples, "pomelo_bytes_received_total", transport="tcp"), received)
        self.assertEqual(
            value(samples, "pomelo_bytes_sent_total", transport="tcp"),
            sum(map(len, tcp.transport.writes)),
        )
        self.assertGreater(len(written), 0)
        self.assertEqual(
            value(samples, "pomelo_bytes_received_total", transport="ws"),
            len(HANDSHAKE_1) + len(ACK),
        )
        self.assertEqual(
            value(samples, "pomelo_bytes_sent_total", transport="ws"),
            sum(map(len, ws.transport.writes)),
        )

    def test_several_packages_in_one_turn(self) -> None:
        """A turn's writes leave together; their bytes are counted once."""
        client = self.client().connect()
        client.feed(request(1, ECHO) + request(2, ECHO))
        client.turn()
        self.assertEqual(
            self.value("pomelo_bytes_sent_total", transport="tcp"),
            sum(map(len, client.transport.writes)),
        )

    def test_opened_before_metrics_not_counted(self) -> None:
        connector, clock = make_connector(make_test_app())
        early = Client(connector, clock).connect()
        metrics = ConnectorMetrics(connector)
        early.exchange(request(1, ECHO))
        self.assertIsNone(early.sock._meter)
        samples = parse(metrics.exposition().decode())
        self.assertEqual(value(samples, "pomelo_connections_total", transport="tcp"), 0)
        self.assertEqual(value(samples, "pomelo_connections_open", transport="tcp"), 1)
        # requests are counted by the connector, whichever connection they come from
        self.assertEqual(value(samples, "pomelo_requests_total", route=ECHO, outcome="ok"), 1)


HANDSHAKE_1 = encode_package(PackageType.HANDSHAKE, b'{"sys":1}')


class HandshakeTests(MetricsTestCase):
    def test_ok(self) -> None:
        self.client().connect()
        self.assertEqual(self.value("pomelo_handshakes_total", result="ok"), 1)
        self.assertEqual(self.value("pomelo_handshakes_total", result="error"), 0)

    def test_500(self) -> None:
        client = self.client()
        client.handshake(b"{}")  # no sys
        samples = self.samples()
        self.assertEqual(value(samples, "pomelo_handshakes_total", result="error"), 1)
        self.assertEqual(value(samples, "pomelo_handshakes_total", result="ok"), 0)
        self.assertEqual(value(samples, "pomelo_closes_total", cause="handshake_failed"), 1)

    def test_501(self) -> None:
        self.app.check_client = lambda client_type, version: False
        self.client().handshake()
        samples = self.samples()
        self.assertEqual(value(samples, "pomelo_handshakes_total", result="refused"), 1)
        self.assertEqual(value(samples, "pomelo_closes_total", cause="handshake_failed"), 1)

    def test_async_hook(self) -> None:
        """An answer that waits for the handshake hook is counted when it is sent."""
        hooked: Deferred[Any] = Deferred()
        self.app.handshake_hook = lambda msg, session: hooked
        client = self.client()
        client.handshake()
        self.assertEqual(self.value("pomelo_handshakes_total", result="ok"), 0)
        hooked.callback({"hello": 1})
        client.turn()
        self.assertEqual(self.value("pomelo_handshakes_total", result="ok"), 1)


class RequestTests(MetricsTestCase):
    def test_ok_and_error(self) -> None:
        client = self.client().connect()
        client.exchange(request(1, ECHO))
        client.exchange(request(2, ECHO))
        client.exchange(request(3, BOOM))
        self.flushLoggedErrors(ValueError)
        client.exchange(request(4, CODE3))  # HandlerError: answered with its own code
        samples = self.samples()
        self.assertEqual(value(samples, "pomelo_requests_total", route=ECHO, outcome="ok"), 2)
        self.assertEqual(value(samples, "pomelo_requests_total", route=ECHO, outcome="error"), 0)
        self.assertEqual(value(samples, "pomelo_requests_total", route=BOOM, outcome="error"), 1)
        self.assertEqual(value(samples, "pomelo_requests_total", route=CODE3, outcome="error"), 1)
        self.assertEqual(value(samples, "pomelo_request_seconds_count", route=ECHO), 2)
        self.assertEqual(value(samples, "pomelo_request_seconds_count", route=BOOM), 1)

    def test_unused_routes_not_exported(self) -> None:
        self.client().connect().exchange(request(1, ECHO))
        names = {key for key in self.samples() if key[0] == "pomelo_requests_total"}
        self.assertEqual({dict(labels)["route"] for _, labels in names}, {ECHO})

    def test_notify(self) -> None:
        self.client().connect().exchange(notify("connector.testHandler.none"))
        self.assertEqual(
            self.value("pomelo_requests_total", route="connector.testHandler.none", outcome="ok"),
            1,
        )

    def test_unknown_routes_are_other(self) -> None:
        """The route label is bounded: unregistered routes and unknown codes are 'other'."""
        client = self.client().connect()
        client.exchange(request(1, "connector.nope.nope"))
        client.exchange(request(2, "x.y.z"))
        client.exchange(request(3, 999))  # a dictionary code that does not exist
        samples = self.samples()
        self.assertEqual(value(samples, "pomelo_requests_total", route=OTHER, outcome="error"), 3)
        routes = {dict(key)["route"] for name, key in samples if name.startswith("pomelo_req")}
        self.assertEqual(routes, {OTHER})

    def test_route_added_later_is_other(self) -> None:
        self.app.add_handler("connector.late.route", lambda msg, session: {"code": 200})
        self.client().connect().exchange(request(1, "connector.late.route"))
        self.assertEqual(self.value("pomelo_requests_total", route=OTHER, outcome="ok"), 1)

    def test_latency_of_an_asynchronous_handler(self) -> None:
        """From dispatch to the answer, on the connector's clock."""
        slow: list[Deferred[Any]] = []

        def handler(msg: Any, session: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            slow.append(d)
            return d

        self.app.add_handler("connector.slow.call", handler)
        self.build(self.app)  # routes are taken when the metrics are built
        client = self.client().connect()
        client.exchange(request(1, "connector.slow.call"))
        client.exchange(request(2, "connector.slow.call"))
        self.clock.advance(0.3)
        slow[0].callback({"code": 200})
        self.clock.advance(1.7)
        slow[1].errback(RuntimeError("backend down"))
        self.flushLoggedErrors(RuntimeError)
        samples = self.samples()
        route = "connector.slow.call"
        self.assertEqual(value(samples, "pomelo_requests_total", route=route, outcome="ok"), 1)
        self.assertEqual(value(samples, "pomelo_requests_total", route=route, outcome="error"), 1)
        self.assertAlmostEqual(value(samples, "pomelo_request_seconds_sum", route=route), 2.3)
        bucket = "pomelo_request_seconds_bucket"
        self.assertEqual(value(samples, bucket, route=route, le="0.25"), 0)
        self.assertEqual(value(samples, bucket, route=route, le="0.5"), 1)
        self.assertEqual(value(samples, bucket, route=route, le="1.0"), 1)
        self.assertEqual(value(samples, bucket, route=route, le="2.5"), 2)
        self.assertEqual(value(samples, bucket, route=route, le="+Inf"), 2)
        self.assertEqual(value(samples, "pomelo_request_seconds_count", route=route), 2)

    def test_synchronous_handler_takes_no_clock_time(self) -> None:
        self.client().connect().exchange(request(1, ECHO))
        samples = self.samples()
        self.assertEqual(value(samples, "pomelo_request_seconds_sum", route=ECHO), 0)
        self.assertEqual(
            value(samples, "pomelo_request_seconds_bucket", route=ECHO, le="0.0001"), 1
        )

    def test_rate_limited(self) -> None:
        self.build(make_test_app(), max_requests_per_second=1, request_burst=1)
        client = self.client().connect()
        client.exchange(request(1, ECHO) + request(2, ECHO) + notify(ECHO))
        samples = self.samples()
        self.assertEqual(value(samples, "pomelo_requests_total", route=ECHO, outcome="ok"), 1)
        self.assertEqual(
            value(samples, "pomelo_requests_total", route=ECHO, outcome="rate_limited"), 2
        )

    def test_bad_signature_rejected(self) -> None:
        self.build(make_test_app(), use_crypto=True, use_dict=False, use_protobuf=False)
        client = self.client()
        client.connect(handshake_body(rsa_field(private_key())))
        with capturedLogs():
            client.exchange(request(1, ECHO, b'{"a":1}'))  # unsigned: dropped
        self.assertEqual(self.value("pomelo_requests_total", route=ECHO, outcome="rejected"), 1)


class PushKickTests(MetricsTestCase):
    def test_pushes_not_responses(self) -> None:
        client = self.client().connect()
        client.exchange(request(1, PUSH))  # two pushes and one response
        ws = self.client(ws=True).connect()
        ws.session.push_message("onChat", {"a": 1})
        samples = self.samples()
        self.assertEqual(value(samples, "pomelo_pushes_total", transport="tcp"), 2)
        self.assertEqual(value(samples, "pomelo_pushes_total", transport="ws"), 1)

    def test_broadcast_counts_each_connection(self) -> None:
        for _ in range(3):
            self.client().connect()
        self.connector.channel_service.broadcast("onAll", {"x": 1})
        self.client()  # not working yet: it gets no push
        self.connector.channel_service.broadcast("onAll", {"x": 2})
        self.assertEqual(self.value("pomelo_pushes_total", transport="tcp"), 6)

    def test_dictionary_compressed_push(self) -> None:
        """A push whose route is in the dictionary (compressed route flag) is a push too."""
        client = self.client().connect()
        client.session.push(ECHO, {"a": 1})
        self.assertEqual(self.value("pomelo_pushes_total", transport="tcp"), 1)

    def test_kick_reasons_are_bounded(self) -> None:
        sessions = self.connector.session_service
        self.metrics.add_kick_reason("maintenance")
        a, b, c, d = (self.client().connect() for _ in range(4))
        a.session.kick()  # "kick"
        sessions.kick_by_session_id(b.session.id, "maintenance")
        sessions.kick_by_session_id(c.session.id, "you said a bad word, user 1234")
        d.sock.kick(None)  # closes without a KICK package
        d.sock.kick("again")  # already closed: not counted
        samples = self.samples()
        self.assertEqual(value(samples, "pomelo_kicks_total", reason="kick"), 1)
        self.assertEqual(value(samples, "pomelo_kicks_total", reason="maintenance"), 1)
        self.assertEqual(value(samples, "pomelo_kicks_total", reason=OTHER), 1)
        self.assertEqual(value(samples, "pomelo_kicks_total", reason="none"), 1)
        self.assertEqual(value(samples, "pomelo_closes_total", cause="kick"), 4)
        reasons = {dict(labels)["reason"] for name, labels in samples if "kicks" in name}
        self.assertEqual(reasons, {"kick", "maintenance", OTHER, "none"})

    def test_kick_while_draining_is_shutdown(self) -> None:
        client = self.client().connect()
        self.connector.draining = True
        with capturedLogs() as events:
            self.connector.kick_all("bye")
        self.assertEqual(closes(events)[0]["cause"], "shutdown")
        samples = self.samples()
        self.assertEqual(value(samples, "pomelo_closes_total", cause="shutdown"), 1)
        self.assertEqual(value(samples, "pomelo_closes_total", cause="kick"), 0)
        self.assertEqual(value(samples, "pomelo_draining"), 1)
        self.assertTrue(client.transport.lost)


class CloseTests(MetricsTestCase):
    def cause(self, cause: str) -> float:
        return self.value("pomelo_closes_total", cause=cause)

    def test_every_cause_exported(self) -> None:
        samples = self.samples()
        for cause in CLOSE_CAUSES:
            self.assertEqual(value(samples, "pomelo_closes_total", cause=cause), 0)
        for reason in REFUSAL_REASONS:
            self.assertEqual(value(samples, "pomelo_refused_total", reason=reason), 0)

    def test_heartbeat_timeout(self) -> None:
        self.build(make_test_app(), heartbeat=3)
        self.client().connect()
        with capturedLogs() as events:
            self.clock.advance(6.1)
        self.assertEqual(self.value("pomelo_heartbeat_timeouts_total"), 1)
        self.assertEqual(self.cause("heartbeat_timeout"), 1)
        [line] = messages(events)  # one line for the event, not two
        self.assertIn("cause=heartbeat_timeout", line)

    def test_deadlines(self) -> None:
        self.client()  # no handshake
        self.client().handshake()  # no ACK
        self.clock.advance(15.1)
        self.assertEqual(self.cause("handshake_timeout"), 1)
        self.assertEqual(self.cause("ack_timeout"), 1)

    def test_peer(self) -> None:
        self.client().connect().lose()
        self.assertEqual(self.cause("peer"), 1)

    def test_protocol_error(self) -> None:
        self.client().connect().feed(b"\x09\x00\x00\x00")
        self.assertEqual(self.cause("protocol_error"), 1)

    def test_slow_reader(self) -> None:
        self.client().connect().sock.slow_reader(10**7)
        self.assertEqual(self.cause("limit"), 1)

    def test_server_disconnect(self) -> None:
        self.client().connect().sock.disconnect()
        self.assertEqual(self.cause("server"), 1)

    def test_once_per_connection(self) -> None:
        client = self.client().connect()
        client.sock.kick("bye")
        client.lose()  # the peer goes afterwards: still one close, a kick
        samples = self.samples()
        total = sum(value(samples, "pomelo_closes_total", cause=c) for c in CLOSE_CAUSES)
        self.assertEqual(total, 1)
        self.assertEqual(value(samples, "pomelo_closes_total", cause="kick"), 1)


class LogTests(MetricsTestCase):
    def test_close_line(self) -> None:
        """One structured line per close: session id, uid, peer, transport, cause and why."""
        client = self.client(ws=True).connect()
        client.session.bind("alice")
        sid = client.session.id
        with capturedLogs() as events:
            client.sock.kick("maintenance")
            client.lose()
        [event] = closes(events)
        self.assertEqual(
            {k: event[k] for k in ("session_id", "uid", "peer", "transport", "cause", "why")},
            {
                "session_id": sid,
                "uid": "alice",
                "peer": "127.0.0.1:40000",
                "transport": "ws",
                "cause": "kick",
                "why": "kicked: maintenance",
            },
        )
        self.assertEqual(
            formatEvent(event),
            f"connection closed: peer=127.0.0.1:40000 transport=ws session={sid} uid=alice "
            "cause=kick why='kicked: maintenance'",
        )

    def test_without_session(self) -> None:
        with capturedLogs() as events:
            self.client().handshake(b"{}")
        [event] = closes(events)
        self.assertIsNone(event["session_id"])
        self.assertIsNone(event["uid"])
        self.assertEqual(event["cause"], "handshake_failed")
        self.assertEqual(event["why"], "handshake failed (500): handshake without sys")

    def test_details_not_repeated(self) -> None:
        """A protocol error or a limit has its own warning: the close line does not repeat it."""
        client = self.client().connect()
        with capturedLogs() as events:
            client.feed(b"\x09\x00\x00\x00")
        [warning, line] = messages(events)
        self.assertIn("protocol error", warning)
        self.assertTrue(line.endswith("cause=protocol_error (details logged above)"), line)
        self.assertIn("protocol error", closes(events)[0]["why"])

    def test_logged_with_metrics_off(self) -> None:
        connector, clock = make_connector(make_test_app())
        client = Client(connector, clock).connect()
        with capturedLogs() as events:
            client.lose()
        [event] = closes(events)
        self.assertEqual(event["cause"], "peer")
        self.assertIsNone(client.sock._meter)


# --- refusals, through the hybrid factory -----------------------------------------------------

PEER = IPv4Address("TCP", "192.0.2.7", 50000)


class RefusalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.build()

    def build(self, **config: Any) -> None:
        base = ConnectorConfig(heartbeat=3, use_dict=False, use_protobuf=False)
        self.connector = Connector(make_app(), self.clock, replace(base, **config))
        self.metrics = ConnectorMetrics(self.connector)
        self.factory = PomeloConnectorFactory(self.connector)

    def connect(self, data: bytes = b"") -> Transport:
        protocol = self.factory.buildProtocol(PEER)
        transport = Transport(peerAddress=PEER)
        protocol.makeConnection(transport)
        if data:
            protocol.dataReceived(data)
        return transport

    def refused(self, reason: str) -> float:
        samples = parse(self.metrics.exposition().decode())
        return value(samples, "pomelo_refused_total", reason=reason)

    def test_blocklist(self) -> None:
        self.build(blocklist=["192.0.2.0/24"])
        self.connect()
        self.assertEqual(self.refused("blocklist"), 1)

    def test_max_connections(self) -> None:
        self.build(max_connections=1)
        self.connect()
        self.connect()
        self.assertEqual(self.refused("max_connections"), 1)

    def test_max_connections_per_ip(self) -> None:
        self.build(max_connections_per_ip=1)
        self.connect()
        self.connect()
        self.assertEqual(self.refused("max_connections_per_ip"), 1)

    def test_classification(self) -> None:
        self.connect(b"\x00")
        self.connect(b"POST / HTTP/1.1\r\n\r\n")
        self.connect(b"GET /" + b"x" * 9000)
        self.connect(b"G")
        self.clock.advance(10.1)
        for reason in ("bad_first_byte", "not_websocket", "http_head_too_large"):
            self.assertEqual(self.refused(reason), 1, reason)
        self.assertEqual(self.refused("first_byte_timeout"), 1)

    def test_tcp_and_websocket_classified(self) -> None:
        self.connect(HANDSHAKE)
        self.connect(UPGRADE)
        samples = parse(self.metrics.exposition().decode())
        self.assertEqual(value(samples, "pomelo_connections_total", transport="tcp"), 1)
        self.assertEqual(value(samples, "pomelo_connections_total", transport="ws"), 1)
        self.assertEqual(value(samples, "pomelo_connections_admitted"), 2)


# --- the service: drain, /healthz, twistd options ------------------------------------------


class HealthResourceTests(SynchronousTestCase):
    def render(self, draining: bool) -> tuple[int, bytes]:
        request = DummyRequest([b""])
        body = HealthResource(lambda: draining).render_GET(request)  # type: ignore[arg-type]
        return request.responseCode or 200, body

    def test_ok_then_draining(self) -> None:
        self.assertEqual(self.render(False), (200, b"ok\n"))
        self.assertEqual(self.render(True), (503, b"draining\n"))


class DrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.connector = Connector(make_app(), self.reactor, ConnectorConfig(heartbeat=3))
        self.service = ConnectorService(
            PomeloConnectorFactory(self.connector),
            ["tcp:3010", "tcp:3011"],
            self.reactor,
            stop_reason="maintenance",
            drain_timeout=3.0,
            metrics_endpoint="tcp:9100:interface=127.0.0.1",
        )
        self.service.startService()
        self.metrics = self.connector.metrics
        assert self.metrics is not None

    def clients(self, count: int) -> list[Client]:
        return [Client(self.connector, self.reactor).connect() for _ in range(count)]  # type: ignore[arg-type]

    def samples(self) -> Samples:
        assert self.metrics is not None
        return parse(self.metrics.exposition().decode())

    def test_metrics_endpoint_listens(self) -> None:
        ports = sorted(port for port, *_ in self.reactor.tcpServers)
        self.assertEqual(ports, [3010, 3011, 9100])
        self.assertIsNotNone(self.service.metrics_service)

    def test_drain_api(self) -> None:
        """Stop accepting, kick with the reason, fire when the clients have gone."""
        a, b = self.clients(2)
        d = self.service.drain("going down for an upgrade", timeout=10)
        self.assertTrue(self.service.draining)
        self.assertFalse(any(s.running for s in self.service._listeners))
        assert self.service.metrics_service is not None
        self.assertTrue(self.service.metrics_service.running)  # /metrics still answers
        for client in (a, b):
            self.assertIn(b'"reason":"going down for an upgrade"', client.transport.writes[-1])
            self.assertTrue(client.transport.lost)
        self.assertNoResult(d)
        a.lose()
        self.assertNoResult(d)
        b.lose()
        self.assertEqual(self.successResultOf(d), 0)
        samples = self.samples()
        self.assertEqual(value(samples, "pomelo_draining"), 1)
        self.assertEqual(value(samples, "pomelo_closes_total", cause="shutdown"), 2)
        self.assertEqual(
            value(samples, "pomelo_kicks_total", reason="going down for an upgrade"), 2
        )
        self.assertTrue(self.service.running)  # the service itself keeps running

    def test_drain_deadline(self) -> None:
        self.clients(1)
        d = self.service.drain()  # stop_reason, drain_timeout
        self.reactor.advance(2.9)
        self.assertNoResult(d)
        self.reactor.advance(0.2)
        self.assertEqual(self.successResultOf(d), 1)  # one client still there

    def test_drain_once(self) -> None:
        [client] = self.clients(1)
        first = self.service.drain("one")
        second = self.service.drain("two")
        self.assertEqual(len([w for w in client.transport.writes if b"reason" in w]), 1)
        client.lose()
        self.assertEqual(self.successResultOf(first), 0)
        self.assertEqual(self.successResultOf(second), 0)
        self.assertEqual(self.successResultOf(self.service.drain()), 0)

    def test_stop_after_drain(self) -> None:
        """SIGTERM after a drain: no second kick; the metrics endpoint stops last."""
        [client] = self.clients(1)
        self.service.drain("early")
        client.lose()
        d = self.service.stopService()
        self.successResultOf(d)
        assert self.service.metrics_service is not None
        self.assertFalse(self.service.metrics_service.running)
        self.assertFalse(self.service.running)

    def test_stop_drains_with_stop_reason(self) -> None:
        [client] = self.clients(1)
        d = self.service.stopService()
        self.assertIn(b'"reason":"maintenance"', client.transport.writes[-1])
        assert self.service.metrics_service is not None
        self.assertTrue(self.service.metrics_service.running)  # still up during the drain
        client.lose()
        self.successResultOf(d)
        self.assertFalse(self.service.metrics_service.running)
        self.assertEqual(value(self.samples(), "pomelo_kicks_total", reason="maintenance"), 1)

    def test_drain_timeout_default(self) -> None:
        """None: the connector's kick_close_timeout, after which lingering clients are cut."""
        connector = Connector(make_app(), self.reactor, ConnectorConfig(kick_close_timeout=7))
        service = ConnectorService(
            PomeloConnectorFactory(connector), [], self.reactor, drain_timeout=None
        )
        self.assertEqual(service.drain_timeout, 7)
        self.assertIsNone(service.metrics_service)
        self.assertIsNone(connector.metrics)

    def test_uses_existing_metrics(self) -> None:
        connector = Connector(make_app(), self.reactor)
        metrics = ConnectorMetrics(connector)
        ConnectorService(
            PomeloConnectorFactory(connector), [], self.reactor, metrics_endpoint="tcp:0"
        )
        self.assertIs(connector.metrics, metrics)


class OptionsTests(SynchronousTestCase):
    parse = staticmethod(tap_options)

    def test_defaults(self) -> None:
        options = self.parse()
        self.assertIsNone(options["metrics"])
        self.assertIsNone(options["drain-timeout"])
        service: Any = tap.makeService(options)
        self.assertIsNone(service.metrics_service)
        self.assertEqual(service.drain_timeout, ConnectorConfig().kick_close_timeout)

    def test_metrics_and_drain_timeout(self) -> None:
        options = self.parse(
            "--metrics",
            "tcp:9100:interface=127.0.0.1",
            "--drain-timeout",
            "2.5",
            "--shutdown-reason",
            "upgrade",
        )
        service: Any = tap.makeService(options)
        self.assertIsNotNone(service.metrics_service)
        self.assertEqual(service.drain_timeout, 2.5)
        self.assertEqual(service.stop_reason, "upgrade")
        self.assertIsNotNone(service.connector.metrics)

    def test_bad_values(self) -> None:
        self.assertRaises(usage.UsageError, self.parse, "--drain-timeout", "-1")
        self.assertRaises(usage.UsageError, self.parse, "--drain-timeout", "soon")
        options = self.parse("--metrics", "nosuchendpoint:1")
        with self.assertRaises(usage.UsageError) as caught:
            tap.makeService(options)
        self.assertIn("--metrics", str(caught.exception))

    def test_help(self) -> None:
        text = str(tap.Options())
        self.assertIn("--metrics", text)
        self.assertIn("--drain-timeout", text)


# --- end to end: real sockets, real HTTP ---------------------------------------------------

ENTRY = "connector.entryHandler.entry"
BIND = "connector.entryHandler.bind"
DEMO_PUSH = "connector.entryHandler.push"
KICK = "connector.entryHandler.kick"


def port_of(listener: Any) -> Deferred[Any]:
    """The port a strports service listens on (without taking it from the service)."""
    d: Deferred[Any] = Deferred()

    def got(port: Any) -> Any:
        d.callback(port)
        return port

    listener._waitingForPort.addCallback(got)
    return d


class EndToEndTests(TestCase):
    """ConnectorService on loopback with --metrics; PomeloClients; scrapes over HTTP."""

    timeout = 20

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        self.connector = Connector(make_app(), reactor, ConnectorConfig())
        self.service = ConnectorService(
            PomeloConnectorFactory(self.connector),
            ["tcp:0:interface=127.0.0.1"],
            reactor,
            stop_reason="maintenance",
            drain_timeout=5,
            metrics_endpoint="tcp:0:interface=127.0.0.1",
        )
        self.service.startService()
        self.addCleanup(self.cleanUp)
        port = yield port_of(self.service._listeners[0])
        self.pomelo_port = port.getHost().port
        assert self.service.metrics_service is not None
        port = yield port_of(self.service.metrics_service)
        self.metrics_port = port.getHost().port
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.clients: list[PomeloClient] = []

    @inlineCallbacks
    def cleanUp(self) -> Any:
        yield DeferredList([c.close() for c in self.clients])
        if self.service.running:
            yield self.service.stopService()
        yield self.pool.closeCachedConnections()

    @inlineCallbacks
    def client(self, transport: str = "tcp") -> Any:
        client = PomeloClient(reactor)
        self.clients.append(client)
        if transport == "ws":
            target = f"ws://127.0.0.1:{self.pomelo_port}/"
        else:
            target = f"tcp:host=127.0.0.1:port={self.pomelo_port}"
        answer = yield client.connect(target)
        self.assertEqual(answer["code"], 200)
        return client

    @inlineCallbacks
    def get(self, path: str, accept: str | None = None) -> Any:
        """A real HTTP GET on the metrics endpoint: (status, headers, body)."""
        agent = Agent(reactor, pool=self.pool)
        url = f"http://127.0.0.1:{self.metrics_port}{path}".encode("ascii")
        headers = Headers({"Accept": [accept]} if accept else {})
        response = yield agent.request(b"GET", url, headers)
        body = yield readBody(response)
        return response.code, response.headers, body

    @inlineCallbacks
    def scrape(self) -> Any:
        code, headers, body = yield self.get("/metrics")
        self.assertEqual(code, 200)
        [content_type] = headers.getRawHeaders(b"content-type")
        self.assertTrue(content_type.startswith(b"text/plain; version=0.0.4"), content_type)
        self.assertIn(b"# TYPE pomelo_requests_total counter", body)
        return parse(body.decode("utf-8"))

    @inlineCallbacks
    def test_scrape(self) -> Any:
        alice = yield self.client("tcp")
        bob = yield self.client("ws")
        self.assertEqual((yield alice.request(ENTRY))["code"], 200)
        self.assertEqual((yield alice.request(BIND, {"uid": "alice"}))["code"], 200)
        pushed = alice.next_push("onPush")
        yield alice.request(DEMO_PUSH, {"p": 1})
        yield pushed
        self.assertEqual((yield bob.request("connector.entryHandler.nope", {})), {"code": 500})
        kicked: Deferred[Any] = Deferred()
        alice.on_kick(kicked.callback)
        closed: Deferred[Any] = Deferred()
        alice.on_close(lambda reason: closed.callback(None))
        self.assertEqual((yield bob.request(KICK, {"uid": "alice", "reason": "bye"}))["code"], 200)
        self.assertEqual((yield kicked), "bye")
        yield closed

        samples = yield self.scrape()
        self.assertEqual(value(samples, "pomelo_handshakes_total", result="ok"), 2)
        self.assertEqual(value(samples, "pomelo_connections_total", transport="tcp"), 1)
        self.assertEqual(value(samples, "pomelo_connections_total", transport="ws"), 1)
        self.assertEqual(value(samples, "pomelo_connections_open", transport="ws"), 1)
        self.assertEqual(value(samples, "pomelo_requests_total", route=ENTRY, outcome="ok"), 1)
        self.assertEqual(value(samples, "pomelo_requests_total", route=KICK, outcome="ok"), 1)
        self.assertEqual(value(samples, "pomelo_requests_total", route=OTHER, outcome="error"), 1)
        self.assertEqual(value(samples, "pomelo_request_seconds_count", route=ENTRY), 1)
        self.assertEqual(value(samples, "pomelo_request_seconds_bucket", route=ENTRY, le="+Inf"), 1)
        self.assertLess(value(samples, "pomelo_request_seconds_sum", route=ENTRY), 1)
        self.assertEqual(value(samples, "pomelo_pushes_total", transport="tcp"), 1)
        self.assertEqual(value(samples, "pomelo_kicks_total", reason=OTHER), 1)  # "bye"
        self.assertEqual(value(samples, "pomelo_kicks_total", reason="maintenance"), 0)
        self.assertEqual(value(samples, "pomelo_closes_total", cause="kick"), 1)
        self.assertEqual(value(samples, "pomelo_sessions"), 1)
        self.assertEqual(value(samples, "pomelo_draining"), 0)
        for transport in ("tcp", "ws"):
            self.assertGreater(
                value(samples, "pomelo_bytes_received_total", transport=transport), 0
            )
            self.assertGreater(value(samples, "pomelo_bytes_sent_total", transport=transport), 0)
        self.assertIn(("process_open_fds", ()), samples)  # the process collector is there too

        # OpenMetrics, for a scraper that asks for it, parsed with its own parser.
        code, headers, body = yield self.get("/metrics", OPENMETRICS)
        self.assertEqual(code, 200)
        [content_type] = headers.getRawHeaders(b"content-type")
        self.assertTrue(content_type.startswith(b"application/openmetrics-text"), content_type)
        families = {f.name: f for f in openmetrics_families(body.decode("utf-8"))}
        [sample] = [s for s in families["pomelo_closes"].samples if s.labels == {"cause": "kick"}]
        self.assertEqual((sample.name, sample.value), ("pomelo_closes_total", 1))
        self.assertEqual(families["pomelo_request_seconds"].type, "histogram")

        code, _, body = yield self.get("/healthz")
        self.assertEqual((code, body), (200, b"ok\n"))
        code, _, _ = yield self.get("/nope")
        self.assertEqual(code, 404)

    @inlineCallbacks
    def test_drain(self) -> Any:
        """/healthz turns 503, clients get the reason, the metrics show it, ports close."""
        client = yield self.client("ws")
        # A request is answered once the server has the ACK: before it, a kick sends no KICK.
        yield client.request(ENTRY)
        kicked: Deferred[Any] = Deferred()
        client.on_kick(kicked.callback)
        drained = self.service.drain("maintenance", timeout=5)
        code, _, body = yield self.get("/healthz")
        self.assertEqual((code, body), (503, b"draining\n"))
        self.assertEqual((yield kicked), "maintenance")
        self.assertEqual((yield drained), 0)

        samples = yield self.scrape()  # still served after the drain
        self.assertEqual(value(samples, "pomelo_draining"), 1)
        self.assertEqual(value(samples, "pomelo_kicks_total", reason="maintenance"), 1)
        self.assertEqual(value(samples, "pomelo_closes_total", cause="shutdown"), 1)
        self.assertEqual(value(samples, "pomelo_connections_open", transport="ws"), 0)

        late = PomeloClient(reactor)
        yield self.assertFailure(
            late.connect(f"tcp:host=127.0.0.1:port={self.pomelo_port}"), ConnectionRefusedError
        )
        yield self.service.stopService()
        yield self.assertFailure(self.get("/healthz"), ConnectionRefusedError)


# --- the cost of a request -----------------------------------------------------------------


class HotPathTests(SynchronousTestCase):
    """What metrics add to a request: no object of their own, whatever the route."""

    def test_request_makes_no_new_metric_objects(self) -> None:
        connector, clock = make_connector(make_test_app())
        metrics = ConnectorMetrics(connector)
        client = Client(connector, clock).connect()
        client.exchange(request(1, ECHO))
        stats = metrics.route_stats(ECHO)
        buckets = stats.buckets
        for mid in range(2, 50):
            client.exchange(request(mid, ECHO))
        self.assertIs(metrics.route_stats(ECHO), stats)
        self.assertIs(stats.buckets, buckets)
        self.assertEqual(stats.ok, 49)
