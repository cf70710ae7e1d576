"""Cluster mode for ``twistd pomelo-connector``: build C{app.cluster} from the options and
run the connector and its cluster node as one service (docs/cluster.md)."""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..server.connector import Connector
from ..services.cluster import LocalCluster

__all__ = ["ClusteredService", "attach_cluster"]

_log = Logger()


class ClusteredService(MultiService):
    """The cluster node and the connector service: the node starts first (cluster calls fail
    with C{ClusterUnavailable} until Redis answers) and stops last, after the drain, so that
    the kicked clients' closes reach the directory before the node removes its entries."""

    def __init__(self, cluster: Any, connector_service: IService, reactor: Any) -> None:
        super().__init__()
        self.cluster = cluster
        self.connector_service = connector_service
        self.reactor = reactor
        cluster.setServiceParent(self)
        connector_service.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self.cluster.started.addErrback(self._refused)

    def _refused(self, failure: Failure) -> None:
        """A duplicate server id: the node said why (one critical line); stop the process."""
        if self.reactor.running:
            self.reactor.stop()

    def stopService(self) -> Deferred[None]:
        async def stop() -> None:
            self.running = False
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
