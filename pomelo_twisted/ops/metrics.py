# -*- test-case-name: tests.ops.test_metrics -*-
"""The operator's view: Prometheus metrics and the HTTP pages that serve them.

A L{ConnectorMetrics} counts what one L{Connector<pomelo_twisted.server.connector.Connector>} does
(connections, handshakes, requests and their latency, pushes, kicks, closes, refusals, bytes)
and exposes it through its own C{prometheus_client} registry. docs/operations.md lists every
metric.

The counting sites are on the request path, so they are plain attribute increments on objects
made once (one L{RouteStats} per registered route, one L{TransportMeter} per transport): no
C{prometheus_client} call, lock, string or object per request. The Prometheus families are
built only when the registry is collected (a scrape). Everything runs on the reactor thread;
a scrape from another thread (C{prometheus_client}'s own HTTP server) may read a count one
increment old, never a torn one.

When a connector's C{metrics} is C{None} (the default) the hooks cost one C{None} check each.

C{prometheus_client} itself is imported only when a L{ConnectorMetrics} is built. The close
causes it counts are defined by the server layer (L{pomelo_twisted.server.closing}).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

from twisted.python.failure import Failure
from twisted.web.resource import Resource

from ..server.closing import CLOSE_CAUSES

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry
    from twisted.web.http import Request as HTTPRequest
    from twisted.web.server import Request, Site

    from ..cluster.node import RedisCluster
    from ..server.connector import Connector

__all__ = [
    "DEFAULT_BUCKETS",
    "HANDSHAKE_RESULTS",
    "LOG_SUPPRESSED_KINDS",
    "OTHER",
    "REFUSAL_REASONS",
    "REQUEST_OUTCOMES",
    "TRANSPORTS",
    "ClusterMetrics",
    "ConnectorMetrics",
    "HealthResource",
    "MetricsResource",
    "RouteStats",
    "TransportMeter",
    "metrics_site",
]

#: The label value standing for everything outside a bounded label's known values.
OTHER: Final = "other"

#: Transports counted under their own name (anything else counts as L{OTHER}).
TRANSPORTS: Final = ("tcp", "ws")


#: Handshake answers, the C{result} label of C{pomelo_handshakes_total}: C{ok} (code 200),
#: C{error} (500: no C{sys}, a failed hook, a bad RSA key) and C{refused} (501:
#: C{check_client} said no).
HANDSHAKE_RESULTS: Final = {200: "ok", 500: "error", 501: "refused"}

#: The C{outcome} label of C{pomelo_requests_total}:
#:  - C{ok}: the handler returned (or its Deferred fired) and the answer was sent;
#:  - C{error}: the handler raised (C{HandlerError} included), no handler has the route, or
#:    the body did not decode; a request is answered C{{"code": 500}} (or the error's own);
#:  - C{rejected}: dropped unanswered (a bad signature with C{use_crypto});
#:  - C{rate_limited}: over C{max_requests_per_second}, answered 429 (a notify: dropped).
REQUEST_OUTCOMES: Final = ("ok", "error", "rejected", "rate_limited")

#: Why connections are refused before they become Pomelo connections, the C{reason} label of
#: C{pomelo_refused_total}.
REFUSAL_REASONS: Final = (
    "blocklist",
    "max_connections",
    "max_connections_per_ip",
    "first_byte_timeout",
    "bad_first_byte",
    "http_head_too_large",
    "not_websocket",
    "proxy_header",
    "forwarded_header",
)

#: The C{kind} label of C{pomelo_log_lines_suppressed_total}: C{line}, a line caused by a
#: client that its connection's log throttle kept out of the log; C{traceback}, a failure logged
#: without its traceback (one per route per minute is logged with it).
LOG_SUPPRESSED_KINDS: Final = ("line", "traceback")

#: Upper bounds of the request latency buckets, in seconds: from 100 µs (a synchronous
#: handler) to 10 s (a handler waiting on a slow backend).
DEFAULT_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class TransportMeter:
    """Counts for one transport name; each connection holds its transport's meter.

    @ivar opened: connections classified as this transport (TCP) or upgraded (WebSocket).
    @ivar received: package bytes received (WebSocket: message payloads, without framing).
    @ivar sent: package bytes written (WebSocket: message payloads, without framing).
    @ivar pushes: push messages queued to these connections.
    """

    __slots__ = ("metrics", "name", "opened", "pushes", "received", "sent")

    def __init__(self, metrics: ConnectorMetrics, name: str) -> None:
        self.metrics = metrics
        self.name = name
        self.opened = 0
        self.received = 0
        self.sent = 0
        self.pushes = 0

    def closed(self, cause: str) -> None:
        """One of these connections closed, for C{cause} (a L{CLOSE_CAUSES} value)."""
        self.metrics.closed(cause)


class RouteStats:
    """Request counts and the latency histogram of one route (or of L{OTHER})."""

    __slots__ = ("buckets", "error", "ok", "rate_limited", "rejected", "sum")

    def __init__(self, size: int) -> None:
        self.ok = 0
        self.error = 0
        self.rejected = 0
        self.rate_limited = 0
        #: Observations per bucket, not cumulative; the last one is +Inf.
        self.buckets = [0] * size
        self.sum = 0.0

    @property
    def used(self) -> bool:
        return bool(self.ok or self.error or self.rejected or self.rate_limited)


class ConnectorMetrics:
    """The metrics of one connector, in a C{prometheus_client} registry of their own.

    Building one turns metrics on for C{connector} (it sets C{connector.metrics}); connections
    opened before that are not counted. Serve C{registry} with L{metrics_site}, with
    C{ConnectorService(..., metrics_endpoint=...)}, or with any C{prometheus_client} exporter.

    The C{route} label takes the routes the app has when this is built, and L{OTHER} for any
    other (unknown routes, routes added later), so that clients cannot grow the label set. The
    kick C{reason} label is bounded the same way: C{"kick"}, C{kick_reasons} and those added
    with L{add_kick_reason}, then L{OTHER}; C{"none"} counts kicks without a KICK package.

    @ivar registry: the C{CollectorRegistry} holding these metrics (and, unless one was given,
        the process, platform and garbage-collector metrics C{prometheus_client}'s default
        registry has).
    """

    def __init__(
        self,
        connector: Connector,
        *,
        kick_reasons: Iterable[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
        registry: CollectorRegistry | None = None,
    ) -> None:
        from prometheus_client import (
            CollectorRegistry,
            GCCollector,
            PlatformCollector,
            ProcessCollector,
        )

        self.connector = connector
        self._seconds: Callable[[], float] = connector.reactor.seconds
        self._bounds = tuple(sorted(float(b) for b in buckets))
        if not self._bounds or self._bounds[-1] == float("inf"):
            raise ValueError("buckets must be finite upper bounds, at least one")
        self._first = self._bounds[0]
        size = len(self._bounds) + 1
        # Keyed by whatever a message's route can be, so that a lookup needs no conversion.
        self._routes: dict[str | int | None, RouteStats] = {
            route: RouteStats(size) for route in connector.app.routes
        }
        self._other = RouteStats(size)
        self._transports = {name: TransportMeter(self, name) for name in (*TRANSPORTS, OTHER)}
        self._handshakes = dict.fromkeys(HANDSHAKE_RESULTS.values(), 0)
        self._closes = dict.fromkeys(CLOSE_CAUSES, 0)
        self._refused = dict.fromkeys(REFUSAL_REASONS, 0)
        self._kicks = dict.fromkeys(("kick", *kick_reasons, OTHER, "none"), 0)
        self._suppressed = dict.fromkeys(LOG_SUPPRESSED_KINDS, 0)
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        registry.register(self)
        connector.metrics = self

    # Configuration

    def add_kick_reason(self, reason: str) -> None:
        """Count kicks with C{reason} under their own label value from now on."""
        self._kicks.setdefault(reason, 0)

    # Counting (called by the connection code)

    def opened(self, transport: str) -> TransportMeter:
        """A connection was classified; return the meter it keeps for its transport."""
        meter = self._transports.get(transport) or self._transports[OTHER]
        meter.opened += 1
        return meter

    def closed(self, cause: str) -> None:
        """A connection closed for C{cause} (a L{CLOSE_CAUSES} value)."""
        self._closes[cause] = self._closes.get(cause, 0) + 1

    def handshake(self, code: int) -> None:
        """A handshake was answered with C{code}."""
        result = HANDSHAKE_RESULTS.get(code, "error")
        self._handshakes[result] += 1

    def request_done(self, route: str | None, started: float, ok: bool) -> None:
        """A request or notify for C{route} was handled (C{ok}) or failed; observe its latency.

        @param started: the reactor's C{seconds()} when it was dispatched.
        """
        stats = self._routes.get(route, self._other)
        if ok:
            stats.ok += 1
        else:
            stats.error += 1
        elapsed = self._seconds() - started
        # Most answers fall in the first bucket (a synchronous handler): skip the search.
        if elapsed <= self._first:
            stats.buckets[0] += 1
        else:
            stats.buckets[bisect_left(self._bounds, elapsed)] += 1
        stats.sum += elapsed

    def settled(self, result: Any, route: str, started: float) -> Any:
        """A Deferred handler result fired: L{request_done}; pass C{result} on unchanged."""
        self.request_done(route, started, not isinstance(result, Failure))
        return result

    def rejected(self, route: str | None) -> None:
        """A request or notify was dropped unanswered (a bad signature)."""
        self._routes.get(route, self._other).rejected += 1

    def rate_limited(self, route: str | int | None) -> None:
        """A request or notify was over the request rate."""
        self._routes.get(route, self._other).rate_limited += 1

    def log_suppressed(self, kind: str) -> None:
        """A client-caused log line was throttled (a L{LOG_SUPPRESSED_KINDS} value)."""
        self._suppressed[kind] = self._suppressed.get(kind, 0) + 1

    def kicked(self, reason: str | None) -> None:
        """An open connection is being kicked with C{reason}."""
        if reason is None:
            key = "none"
        elif reason in self._kicks:
            key = reason
        else:
            key = OTHER
        self._kicks[key] += 1

    def refused(self, reason: str) -> None:
        """A connection was refused before it was classified (a L{REFUSAL_REASONS} value)."""
        self._refused[reason] = self._refused.get(reason, 0) + 1

    # Reading

    @property
    def heartbeat_timeouts(self) -> int:
        return self._closes["heartbeat_timeout"]

    def route_stats(self, route: str | None) -> RouteStats:
        """The counts kept for C{route} (those of L{OTHER} for an unknown one)."""
        return self._routes.get(route, self._other)

    def transport(self, name: str) -> TransportMeter:
        """The meter of transport C{name} (L{OTHER}'s for an unknown one)."""
        return self._transports.get(name) or self._transports[OTHER]

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format, as C{/metrics} serves it."""
        from prometheus_client.exposition import generate_latest

        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """Build the metric families (the C{prometheus_client} collector protocol)."""
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        connector = self.connector
        open_by_transport = dict.fromkeys(self._transports, 0)
        for socket in list(connector.sockets):
            name = getattr(socket.transport, "name", OTHER)
            key = name if name in open_by_transport else OTHER
            open_by_transport[key] += 1
        # "other" only once a transport that is neither TCP nor WebSocket has shown up.
        transports = [m for m in self._transports.values() if m.name != OTHER or m.opened]
        if not open_by_transport[OTHER]:
            del open_by_transport[OTHER]
        family = GaugeMetricFamily(
            "pomelo_connections_open",
            "Open Pomelo connections (classified as TCP or upgraded to WebSocket).",
            labels=["transport"],
        )
        for name, count in open_by_transport.items():
            family.add_metric([name], count)
        yield family
        yield GaugeMetricFamily(
            "pomelo_connections_admitted",
            "Open connections counted against max_connections, classified or not.",
            value=connector.connection_count,
        )
        yield GaugeMetricFamily(
            "pomelo_sessions",
            "Open sessions (connections whose handshake was answered 200).",
            value=connector.session_service.sessions_count,
        )
        yield GaugeMetricFamily(
            "pomelo_draining",
            "1 while the server drains (stops, kicking every client).",
            value=1 if connector.draining else 0,
        )
        yield _counter(
            "pomelo_connections",
            "Pomelo connections opened, by transport.",
            "transport",
            ((m.name, m.opened) for m in transports),
        )
        yield _counter(
            "pomelo_handshakes",
            "Handshakes answered, by result: ok (200), error (500), refused (501).",
            "result",
            self._handshakes.items(),
        )
        used = [(str(route), s) for route, s in self._routes.items() if s.used]
        if self._other.used:
            used.append((OTHER, self._other))
        requests = CounterMetricFamily(
            "pomelo_requests",
            "Requests and notifies handled, by route (registered routes, else 'other') and "
            "outcome.",
            labels=["route", "outcome"],
        )
        for route, s in used:
            requests.add_metric([route, "ok"], s.ok)
            requests.add_metric([route, "error"], s.error)
            requests.add_metric([route, "rejected"], s.rejected)
            requests.add_metric([route, "rate_limited"], s.rate_limited)
        yield requests
        latency = HistogramMetricFamily(
            "pomelo_request_seconds",
            "Seconds from dispatch to the answer being queued (notify: to the handler's end).",
            labels=["route"],
        )
        bounds = [floatToGoString(b) for b in self._bounds] + ["+Inf"]
        for route, s in used:
            total = 0
            cumulative = []
            for bound, count in zip(bounds, s.buckets, strict=True):
                total += count
                cumulative.append((bound, total))
            latency.add_metric([route], cumulative, s.sum)
        yield latency
        yield _counter(
            "pomelo_pushes",
            "Push messages queued to working connections, by transport.",
            "transport",
            ((m.name, m.pushes) for m in transports),
        )
        yield _counter(
            "pomelo_kicks",
            "Connections kicked, by reason (known reasons, else 'other'; 'none': no KICK).",
            "reason",
            self._kicks.items(),
        )
        yield CounterMetricFamily(
            "pomelo_heartbeat_timeouts",
            "Working connections closed for sending no heartbeat in time.",
            value=self.heartbeat_timeouts,
        )
        yield _counter(
            "pomelo_closes",
            "Connections closed, by cause.",
            "cause",
            self._closes.items(),
        )
        yield _counter(
            "pomelo_refused",
            "Connections refused before they became Pomelo connections, by reason.",
            "reason",
            self._refused.items(),
        )
        yield _counter(
            "pomelo_log_lines_suppressed",
            "Log lines caused by clients and throttled, by kind: line (not logged), traceback "
            "(logged without it).",
            "kind",
            self._suppressed.items(),
        )
        yield _counter(
            "pomelo_bytes_received",
            "Package bytes received, by transport (without WebSocket framing or TLS).",
            "transport",
            ((m.name, m.received) for m in transports),
        )
        yield _counter(
            "pomelo_bytes_sent",
            "Package bytes written, by transport (without WebSocket framing or TLS).",
            "transport",
            ((m.name, m.sent) for m in transports),
        )


def _counter(
    name: str, documentation: str, label: str, values: Iterable[tuple[str, int]]
) -> Metric:
    """A counter family with one label."""
    from prometheus_client.metrics_core import CounterMetricFamily

    metric = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in values:
        metric.add_metric([value], count)
    return metric


class ClusterMetrics:
    """The metrics of a cluster node (C{--redis}), collected from its counters at a scrape;
    register it in a L{ConnectorMetrics}' registry. docs/operations.md lists them."""

    def __init__(self, cluster: RedisCluster, registry: CollectorRegistry) -> None:
        self.cluster = cluster
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        """Build the metric families (the C{prometheus_client} collector protocol)."""
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        from ..cluster.node import KICK_BUCKETS, KIND_NAMES

        cluster = self.cluster
        yield GaugeMetricFamily(
            "pomelo_cluster_redis_up",
            "1 while this node is connected to Redis and its entries are written (cluster "
            "calls work), else 0.",
            value=1 if cluster.link.up and cluster.synced else 0,
        )
        yield GaugeMetricFamily(
            "pomelo_cluster_nodes",
            "Live nodes in the cluster, this one included, at this node's last heartbeat.",
            value=cluster.nodes_seen,
        )
        for name, counts, what in (
            ("published", cluster.published, "published to Redis"),
            ("received", cluster.received, "received from Redis"),
        ):
            yield _counter(
                f"pomelo_cluster_{name}",
                f"Messages between nodes {what}, by kind (probe: a node's message to its own "
                f"inbox, proving its subscriber works; a node's own broadcasts do not count as "
                f"received).",
                "kind",
                ((KIND_NAMES[k], v) for k, v in counts.items()),
            )
        yield CounterMetricFamily(
            "pomelo_cluster_undelivered",
            "Messages to another node's inbox that nobody read (the node died, not yet reaped).",
            value=cluster.undelivered,
        )
        yield CounterMetricFamily(
            "pomelo_cluster_dropped",
            "Malformed messages received and dropped.",
            value=cluster.dropped,
        )
        kicks = HistogramMetricFamily(
            "pomelo_cluster_kick_seconds",
            "Seconds from a kick sent to other nodes to their last acknowledgement.",
        )
        bounds = [floatToGoString(b) for b in KICK_BUCKETS] + ["+Inf"]
        total = 0
        cumulative = []
        for bound, count in zip(bounds, cluster.kick_buckets, strict=True):
            total += count
            cumulative.append((bound, total))
        kicks.add_metric([], cumulative, cluster.kick_seconds)
        yield kicks
        for name, value, help_ in (
            (
                "kick_timeouts",
                cluster.kick_timeouts,
                "Kicks to other nodes not acknowledged within --cluster-timeout.",
            ),
            (
                "subscriber_restarts",
                cluster.subscriber_restarts,
                "Subscriber connections replaced because this node's own probes stopped arriving.",
            ),
            (
                "resyncs",
                cluster.resyncs,
                "Times this node rewrote its entries after joining "
                "(Redis back, a new subscriber, a stall past its TTL, Redis lost its data).",
            ),
            (
                "redis_resets",
                cluster.redis_resets,
                "Times Redis was found to have lost its data (a new epoch).",
            ),
        ):
            yield CounterMetricFamily(f"pomelo_cluster_{name}", help_, value=value)


# HTTP


class MetricsResource(Resource):
    """C{GET} answers the registry of a L{ConnectorMetrics}: the Prometheus text format, or
    OpenMetrics when the scraper's C{Accept} header asks for it (as C{prometheus_client}'s own
    exporters do)."""

    isLeaf = True

    def __init__(self, metrics: ConnectorMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        from prometheus_client.exposition import choose_encoder

        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        return encoder(self.metrics.registry)


class HealthResource(Resource):
    """C{GET} answers C{200 ok} while serving, C{503 draining} once a drain has begun.

    In cluster mode, a second line gives the cluster's state (C{cluster: up} or
    C{cluster: down (why)}); a cluster that is down makes the answer C{503} only when
    C{cluster_required} (C{--healthz-requires-redis}): by default the process still serves
    its own clients, so a balancer should keep sending it traffic.

    @ivar cluster: C{None}, or a callable answering (up, why) for the cluster's state.
    """

    isLeaf = True

    def __init__(self, draining: Callable[[], bool]) -> None:
        super().__init__()
        self.draining = draining
        self.cluster: Callable[[], tuple[bool, str]] | None = None
        self.cluster_required = False

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        status, code = b"ok\n", 200
        if self.draining():
            status, code = b"draining\n", 503
        if self.cluster is not None:
            up, why = self.cluster()
            status += b"cluster: up\n" if up else f"cluster: down ({why})\n".encode()
            if not up and self.cluster_required:
                code = 503
        request.setResponseCode(code)
        return status


def metrics_site(
    metrics: ConnectorMetrics, draining: Callable[[], bool], health: HealthResource | None = None
) -> Site:
    """A twisted.web site serving C{/metrics} and C{/healthz} (C{health}, or a
    L{HealthResource} on C{draining}), without an access log."""
    from twisted.web.server import Site

    class MetricsSite(Site):
        """A site without an access log."""

        noisy = False

        def log(self, request: HTTPRequest) -> None:
            pass  # a scrape every few seconds would drown the log

    root = Resource()
    root.putChild(b"metrics", MetricsResource(metrics))
    root.putChild(b"healthz", health or HealthResource(draining))
    return MetricsSite(root)
