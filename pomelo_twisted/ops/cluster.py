"""Cluster mode for ``twistd pomelo-connector``: build C{app.cluster} from the options and
run the connector and its cluster node as one service (docs/cluster.md)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..server.connector import Connector
from ..services.cluster import LocalCluster

__all__ = ["ClusteredService", "attach_cluster"]

_log = Logger()


def _exit_status(status: int) -> None:
    """Make the process exit with C{status} once twistd is done (it always exits 0 after the
    reactor stops): the last exit handler, after the log and the pid file were closed."""

    def leave() -> None:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)

    atexit.register(leave)


class ClusteredService(MultiService):
    """The cluster node and the connector service. The node starts first; the connector
    listens only once the node has joined, so that a process refused by the cluster (a
    duplicate C{--server-id}, other routes or protos) never takes a client: it logs one
    critical line and exits with status 1. While Redis is unreachable the node keeps trying
    and the connector waits. The node stops last, after the drain, so that the kicked clients'
    closes reach the directory before the node removes its entries.

    Ports are bound after twistd's privileged start: with C{--redis}, ports below 1024 need
    the capability to bind them (C{CAP_NET_BIND_SERVICE}) rather than twistd's C{--uid}.
    """

    def __init__(
        self, cluster: Any, connector_service: IService, reactor: Any, exit_on_refusal: bool = True
    ) -> None:
        super().__init__()
        self.cluster = cluster
        self.connector_service = connector_service
        self.reactor = reactor
        self.exit_on_refusal = exit_on_refusal
        #: Set when the cluster refused this node (why), or the ports could not be bound.
        self.refused: str | None = None
        cluster.setServiceParent(self)
        connector_service.setServiceParent(self)

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        self.cluster.privilegedStartService()

    def startService(self) -> None:
        Service.startService(self)
        self.cluster.startService()
        self.cluster.started.addCallbacks(self._admitted, self._refused)

    def _admitted(self, _: object) -> None:
        if not self.running:
            return
        try:
            self.connector_service.privilegedStartService()
            self.connector_service.startService()
        except BaseException as e:  # _clearly's SystemExit: a port that cannot be bound
            _log.critical("{error}", error=str(e))
            self._stop_process(str(e))

    def _refused(self, failure: Failure) -> None:
        """The node said why (one critical line); stop the process, exit status 1."""
        self._stop_process(failure.getErrorMessage())

    def _stop_process(self, why: str) -> None:
        self.refused = why
        if self.exit_on_refusal:
            _exit_status(1)
            if self.reactor.running:
                self.reactor.stop()
            else:
                self.reactor.callWhenRunning(self.reactor.stop)

    def stopService(self) -> Deferred[None]:
        async def stop() -> None:
            self.running = False
            if self.connector_service.running:
                await self.connector_service.stopService()
            await self.cluster.stopService()

        return ensureDeferred(stop())


def _watch(cluster: Any, service: IService, required: bool) -> None:
    """With --metrics: the cluster's metrics on /metrics, its state on /healthz."""
    metrics = getattr(service, "metrics", None)
    health = getattr(service, "health", None)
    if metrics is None or health is None:
        return
    from .metrics import ClusterMetrics

    ClusterMetrics(cluster, metrics.registry)

    def state() -> tuple[bool, str]:
        if cluster.link.up and cluster.synced:
            return True, ""
        return False, cluster.link.error or ("joining" if cluster.link.up else "unreachable")

    health.cluster = state
    health.cluster_required = required


def attach_cluster(options: Any, connector: Connector, reactor: Any, service: IService) -> IService:
    """Set C{app.cluster} from the cluster options; return the service to run."""
    app = connector.app
    if options["redis"] is None:
        if options["kick-old"]:
            app.cluster = LocalCluster(
                connector.session_service, connector.channel_service, "kick-old"
            )
        return service
    from ..cluster.node import RedisCluster  # imports txredisapi: the reactor is installed

    cluster = RedisCluster(
        connector.session_service,
        connector.channel_service,
        options["redis-url"],
        reactor,
        prefix=options["redis-prefix"],
        policy="kick-old" if options["kick-old"] else None,
        heartbeat=options["cluster-heartbeat"],
        timeout=options["cluster-timeout"],
        mixed_versions=bool(options["cluster-mixed-versions"]),
    )
    app.cluster = cluster
    _watch(cluster, service, bool(options["healthz-requires-redis"]))
    _log.info(
        "cluster mode: node {node} on {url}, session policy {policy}",
        node=cluster.node_id,
        url=str(options["redis-url"]),
        policy=cluster.policy,
    )
    return ClusteredService(cluster, service, reactor)
