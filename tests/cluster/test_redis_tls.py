"""Cluster mode over TLS (rediss://), trusting the server by --redis-ca, against a real
redis-server serving TLS."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import TestCase

from pomelo_twisted.cluster.url import parse_redis_url
from pomelo_twisted.services.cluster import ClusterUnavailable
from tests.support.cluster import connect, start_node, until
from tests.support.redis import start_redis
from tests.support.tls import make_certificate


class RedisTLSTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        key, self.certificate, _ = make_certificate(os.path.abspath(self.mktemp()))
        self.redis = start_redis(self, tls=(key, self.certificate))

    async def node(self, server_id: str, ca: str | None, start: bool = True) -> Any:
        url = parse_redis_url(f"rediss://127.0.0.1:{self.redis.tls_port}/0")
        return await start_node(self, url._replace(ca_file=ca), server_id, start=start)

    def test_push_and_kick_over_tls(self) -> Deferred[None]:
        async def run() -> None:
            a = await self.node("conn-a", self.certificate)
            b = await self.node("conn-b", self.certificate)
            session, conn = connect(a.session_service)
            await a.bind(session, "ua")
            self.assertEqual(await b.push_by_uids("onChat", {"n": 1}, ["ua"]), [])
            await until(lambda: conn.pushes() == [("onChat", {"n": 1})], what="push over TLS")
            self.assertEqual(await b.kick("ua"), 1)

        return ensureDeferred(run())

    def test_untrusted_server_is_unavailable(self) -> Deferred[None]:
        """Without the CA the certificate is not trusted: every connection is refused at the TLS
        handshake, the link never comes up, and calls fail fast."""

        async def run() -> None:
            a = await self.node("conn-a", None, start=False)
            await until(lambda: a.link._rejected["command"] >= 2, what="two refused attempts")
            self.assertFalse(a.link.up)
            await self.assertFailure(a.kick("u"), ClusterUnavailable)
            trusted = await self.node("conn-b", self.certificate, start=False)
            await until(lambda: trusted.link.up, what="the same server trusted by its CA")

        return ensureDeferred(run())
