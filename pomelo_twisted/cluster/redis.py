"""A thin adapter over txredisapi: one ordered command connection and one subscriber.

What it adds to txredisapi 1.6 (docs in /work/shared/docs/cluster.md §4.1):

  - every call fails at once with L{ClusterUnavailable} while Redis is down, and after
    C{timeout} seconds when Redis does not answer (txredisapi would queue it silently);
  - the subscriber subscribes again each time it reconnects (txredisapi forgets);
  - C{on_up}/C{on_down} tell the cluster when both connections are usable, so it can resync;
  - replies are never turned into numbers (C{convertNumbers=False}: uid ``"007"`` stays so).

txredisapi imports the global reactor: import this module only once the reactor is installed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import txredisapi
from twisted.application.internet import ClientService
from twisted.internet.defer import (
    Deferred,
    FirstError,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..services.cluster import ClusterError, ClusterUnavailable
from .url import RedisURL

__all__ = ["RedisLink"]

_log = Logger()


def _translate(failure: Failure, where: RedisURL) -> Failure:
    """txredisapi's connection errors as L{ClusterUnavailable}, Redis errors as L{ClusterError}."""
    if isinstance(failure.value, FirstError):
        failure = failure.value.subFailure
    if failure.check(ClusterError):
        return failure
    if failure.check(txredisapi.ConnectionError):
        return Failure(ClusterUnavailable(f"Redis at {where}: {failure.getErrorMessage()}"))
    if failure.check(txredisapi.ResponseError):
        return Failure(ClusterError(f"Redis at {where} answered: {failure.getErrorMessage()}"))
    return failure


class _Factory(Factory):
    """Builds the link's protocols, and gives txredisapi the factory hooks it calls on a
    failed AUTH or SELECT (C{stopTrying}, C{connectionError}, C{isLazy})."""

    isLazy = False
    noisy = False

    def __init__(self, link: RedisLink, kind: str, protocol: type[Any], charset: str | None):
        self.link = link
        self.kind = kind
        self.protocol_class = protocol
        self.charset = charset

    def buildProtocol(self, addr: Any) -> Any:
        url = self.link.url
        proto = self.protocol_class(
            charset=self.charset,
            password=url.password,
            dbid=url.db or None,
            convertNumbers=False,
            username=url.username,
        )
        proto.factory = self
        proto.link_kind = self.kind
        return proto

    def stopTrying(self) -> None:
        """txredisapi: AUTH or SELECT failed; retrying cannot help."""

    def connectionError(self, why: str) -> None:
        self.link._fatal(why)


class _CommandProtocol(txredisapi.RedisProtocol):
    def connectionLost(self, why: Failure) -> None:
        super().connectionLost(why)
        self.factory.link._lost(self)


class _SubscriberProtocol(txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
        self.factory.link._message(channel, message)

    def connectionLost(self, why: Failure) -> None:
        super().connectionLost(why)
        self.factory.link._lost(self)


class RedisLink:
    """Two connections to one Redis, each kept up by a C{ClientService}.

    @ivar up: whether both connections are usable (subscribed, scripts loaded).
    """

    def __init__(
        self,
        url: RedisURL,
        reactor: IReactorTime,
        channels: Sequence[str],
        on_message: Callable[[bytes, bytes], object],
        on_up: Callable[[], object],
        on_down: Callable[[str], object],
        timeout: float = 2.0,
        max_retry_delay: float = 2.0,
        scripts: Sequence[bytes] = (),
    ) -> None:
        self.url = url
        self.reactor = reactor
        self.channels = list(channels)
        self.timeout = timeout
        self.max_retry_delay = max_retry_delay
        self.scripts = list(scripts)
        self._on_message = on_message
        self._on_up = on_up
        self._on_down = on_down
        self._cmd: Any = None
        self._sub: Any = None
        self.up = False
        self.error: str | None = None
        self._services: list[ClientService] = []
        self._rejected = {"command": 0, "subscriber": 0}

    def _endpoint(self) -> IStreamClientEndpoint:
        url = self.url
        endpoint: IStreamClientEndpoint
        if url.path is not None:
            endpoint = UNIXClientEndpoint(self.reactor, url.path, timeout=self.timeout)
        else:
            endpoint = HostnameEndpoint(self.reactor, url.host, url.port, timeout=self.timeout)
            if url.tls:
                trust = None
                if url.ca_file is not None:
                    with open(url.ca_file, "rb") as f:
                        trust = Certificate.loadPEM(f.read())
                endpoint = wrapClientTLS(optionsForClientTLS(url.host, trust), endpoint)
        return endpoint

    def _retry(self, kind: str, attempt: int) -> float:
        """0.1 s doubling up to C{max_retry_delay}, with jitter: Redis back, link back soon.

        ClientService forgets failed attempts once a TCP connection is made, so connections
        refused afterwards (a wrong password) are counted here, not to retry in a tight loop.
        """
        attempt = max(attempt, self._rejected[kind])
        delay = min(self.max_retry_delay, 0.1 * 2 ** min(attempt, 20))
        return float(delay * random.uniform(0.8, 1.0))

    def start(self) -> None:
        """Start connecting both connections (again and again until L{stop})."""
        for kind, protocol, charset in (
            ("command", _CommandProtocol, "utf-8"),
            ("subscriber", _SubscriberProtocol, None),
        ):
            service = ClientService(
                self._endpoint(),
                _Factory(self, kind, protocol, charset),
                retryPolicy=partial(self._retry, kind),
                clock=self.reactor,
                prepareConnection=self._prepare,
            )
            self._services.append(service)
            service.startService()

    def stop(self) -> Deferred[Any]:
        """Close both connections and stop reconnecting."""
        services, self._services = self._services, []
        self.up = False
        stops = [maybeDeferred(s.stopService) for s in services]
        d: Deferred[Any] = Deferred()
        remaining = [len(stops)]
        if not stops:
            return succeed(None)

        def one(_: Any) -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                d.callback(None)

        for s in stops:
            s.addBoth(one)
        return d

    def _with_timeout(self, d: Deferred[Any], proto: Any, what: str) -> Deferred[Any]:
        """C{d}, failing with L{ClusterUnavailable} after C{timeout}; a timed-out connection
        is aborted, so that a Redis that stopped answering is reconnected."""
        out: Deferred[Any] = Deferred()

        def expire() -> None:
            if not out.called:
                message = f"Redis at {self.url}: no answer to {what} in {self.timeout} s"
                out.errback(ClusterUnavailable(message))
                transport = getattr(proto, "transport", None)
                if transport is not None:
                    transport.abortConnection()

        def done(result: Any) -> None:
            if not out.called:
                if isinstance(result, Failure):
                    out.errback(_translate(result, self.url))
                else:
                    out.callback(result)

        def stop_timer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        timer = self.reactor.callLater(self.timeout, expire)
        out.addBoth(stop_timer)
        d.addBoth(done)
        return out

    def _prepare(self, proxy: Any) -> None:
        """ClientService's prepareConnection: start AUTH/SELECT (txredisapi), then SCRIPT LOAD
        or SUBSCRIBE; the connection counts once L{_made}. A connection that fails this is
        closed, and ClientService reconnects.

        Nothing is returned for ClientService to wait on: a connection lost while it waits
        raises automat's NoTransition inside ClientService (Twisted 24-26), which is what
        happens when txredisapi drops a connection whose AUTH failed.
        """
        proto = proxy._protocol  # ClientService hands over a proxy

        def ready(_: Any) -> Deferred[Any]:
            if proto.link_kind == "command":
                step, what = _all([proto.script_load(s) for s in self.scripts]), "SCRIPT LOAD"
            else:
                step, what = proto.subscribe(self.channels), "SUBSCRIBE"
            preparing = proto.preparing = self._with_timeout(step, proto, what)
            return preparing.addCallback(lambda _: self._made(proto))

        def reject(failure: Failure) -> None:
            self._rejected[proto.link_kind] += 1
            _log.debug(
                "Redis {kind} connection not usable: {error}",
                kind=proto.link_kind,
                error=failure.getErrorMessage(),
            )
            transport = getattr(proto, "transport", None)
            if transport is not None:
                transport.abortConnection()

        d = proto.preparing = self._with_timeout(proto.whenConnected(), proto, "AUTH/SELECT")
        d.addCallback(ready).addErrback(reject)

    def _made(self, proto: Any) -> None:
        self._rejected[proto.link_kind] = 0
        if proto.link_kind == "command":
            self._cmd = proto
        else:
            self._sub = proto
        if not self.up and self._cmd is not None and self._sub is not None:
            self.up = True
            self.error = None
            _log.info("Redis at {url} is up", url=str(self.url))
            self._on_up()

    def _lost(self, proto: Any) -> None:
        preparing = getattr(proto, "preparing", None)
        if preparing is not None and not preparing.called:  # lost before it was usable
            preparing.errback(ClusterUnavailable(f"Redis at {self.url}: connection lost"))
        if proto is self._cmd:
            self._cmd = None
        elif proto is self._sub:
            self._sub = None
        else:
            return
        if self.up:
            self.up = False
            reason = f"the {proto.link_kind} connection to Redis at {self.url} was lost"
            _log.warn("{reason}; reconnecting", reason=reason)
            self._on_down(reason)

    def restart_subscriber(self) -> None:
        """Drop the subscriber connection (it reconnects and subscribes again): for one that
        looks connected but delivers nothing, as after some failovers."""
        sub = self._sub
        if sub is not None and sub.transport is not None:
            sub.transport.abortConnection()

    def _fatal(self, why: str) -> None:
        """AUTH or SELECT was refused: say so once; the service keeps retrying (the password
        file may be fixed), every call fails meanwhile."""
        if self.error != why:
            _log.error("Redis at {url}: {why}", url=str(self.url), why=why)
        self.error = why

    def _message(self, channel: bytes, message: bytes) -> None:
        try:
            self._on_message(channel, message)
        except Exception:
            _log.failure("handling a message on {channel!r} failed", channel=channel)

    def _unavailable(self) -> Deferred[Any]:
        detail = f" ({self.error})" if self.error else ""
        return fail(ClusterUnavailable(f"Redis at {self.url} is unreachable{detail}"))

    def call(self, *args: Any) -> Deferred[Any]:
        """Run one command on the ordered command connection."""
        proto = self._cmd
        if proto is None or not self.up:
            return self._unavailable()
        return self._with_timeout(maybeDeferred(proto.execute_command, *args), proto, args[0])

    def evalsha(
        self, sha: str, script: bytes, keys: Sequence[str], args: Sequence[Any]
    ) -> Deferred[Any]:
        """Run a script loaded at connect (L{scripts}); EVAL it if Redis lost it (SCRIPT FLUSH)."""

        def again(failure: Failure) -> Deferred[Any]:
            failure.trap(ClusterError)
            if "NOSCRIPT" not in failure.getErrorMessage():
                return failure  # type: ignore[return-value]
            return self.call("EVAL", script, len(keys), *keys, *args)

        d = self.call("EVALSHA", sha, len(keys), *keys, *args)
        return d.addErrback(again)

    def publish(self, channel: str, message: bytes) -> Deferred[int]:
        """PUBLISH; fires with how many subscribers received it."""
        return self.call("PUBLISH", channel, message)


def _all(ds: list[Deferred[Any]]) -> Deferred[Any]:
    """Fires when every one of C{ds} has, with the first failure if any."""
    return gatherResults(ds, consumeErrors=True) if ds else succeed([])
