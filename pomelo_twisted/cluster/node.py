"""L{RedisCluster}: this process as one node of a cluster of connectors sharing a Redis.

A uid directory in Redis says which node holds each session (one hash field ``node|sid`` per
session, written on bind, unbind and close, kept atomic by Lua scripts); each node has a
pub/sub inbox and all share one broadcast channel. A push to many uids is encoded once by the
sender and costs one PUBLISH per node holding some of them. Nodes refresh a liveness key; every
node reaps the entries of nodes whose key expired. While Redis is unreachable every cluster
call fails at once with L{ClusterUnavailable} after doing its local half; when Redis comes
back the node subscribes again and rewrites its own entries from what it really holds.

Import only after the reactor is chosen (txredisapi imports the global reactor).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    FirstError,
    ensureDeferred,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..protocol.codec import ServerCodec
from ..services.channel import ChannelService
from ..services.cluster import (
    ClusterError,
    ClusterEvents,
    ClusterTimeout,
    ClusterUnavailable,
    check_policy,
    single_session_error,
)
from ..services.interfaces import ICluster
from ..services.session import Session, SessionError, SessionService
from . import scripts
from .envelope import EnvelopeError, decode_envelope, encode_envelope
from .redis import RedisLink
from .url import RedisURL, parse_redis_url

__all__ = [
    "KICK_BUCKETS",
    "KIND_NAMES",
    "DuplicateServerId",
    "MixedVersions",
    "RedisCluster",
    "codec_fingerprint",
]

_log = Logger()


class DuplicateServerId(ClusterError):
    """Another live node holds this server id."""


class MixedVersions(ClusterError):
    """A live node encodes pushes differently (other routes, dictionary or protos)."""


def codec_fingerprint(codec: ServerCodec) -> str:
    """What a push's bytes depend on: the dictionary's and the protos' versions (Pomelo's
    C{dictVersion}, which hashes every route and its code, and C{protos.version})."""
    dictionary = codec.dictionary.version if codec.dictionary is not None else None
    protos = codec.protobuf.version if codec.protobuf is not None else None
    digest = hashlib.sha1(orjson.dumps({"dict": dictionary, "protos": protos})).hexdigest()
    return digest[:16]


#: The envelope kinds as metrics name them (envelope.py has the letters).
KIND_NAMES: dict[str, str] = {
    "P": "push",
    "B": "broadcast",
    "K": "kick",
    "S": "kick_session",
    "A": "ack",
    "H": "probe",
}

#: Upper bounds (seconds) of the acknowledged kick round-trip histogram.
KICK_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _each(ds: list[Deferred[Any]]) -> None:
    """Wait for every one of C{ds}; raise the first failure's own error (a
    L{ClusterUnavailable} stays one, for the callers that tell it from a bug)."""
    try:
        await gatherResults(ds, consumeErrors=True)
    except FirstError as e:
        e.subFailure.raiseException()


def _split_field(field: str) -> tuple[str, int]:
    node, _, sid = field.rpartition("|")
    return node, int(sid)


class _Acks:
    """Acknowledgements awaited from some nodes for one request (a kick)."""

    def __init__(self, nodes: Iterable[str]) -> None:
        self.waiting = set(nodes)
        self.count = 0
        self.done: Deferred[int] = Deferred()
        self.timer: IDelayedCall | None = None

    def answered(self, node: str, count: int) -> None:
        if node in self.waiting:
            self.waiting.discard(node)
            self.count += count
            self.check()

    def check(self) -> None:
        if not self.waiting and not self.done.called:
            if self.timer is not None and self.timer.active():
                self.timer.cancel()
            self.done.callback(self.count)


@implementer(ICluster)
class RedisCluster(ClusterEvents, Service):
    """One node of a cluster backed by Redis (an C{IService}: start it before listening).

    @ivar node_id: C{<server id>#<8 hex>}, new for every process.
    @ivar policy: the session policy (C{allow}, C{reject-new}, C{kick-old}).
    @ivar started: fires once the node has claimed its server id and written its entries;
        fails with L{DuplicateServerId} when another live node holds the server id.

    Every later rewrite of its entries (L{resyncs}) ends with the C{resync} event.
    """

    def __init__(
        self,
        session_service: SessionService,
        channel_service: ChannelService,
        url: str | RedisURL,
        reactor: IReactorTime,
        *,
        password: str | None = None,
        prefix: str = "pomelo",
        policy: str | None = None,
        heartbeat: float = 2.0,
        timeout: float = 2.0,
        max_retry_delay: float = 2.0,
        mixed_versions: bool = False,
    ) -> None:
        super().__init__()
        self.session_service = session_service
        self.channel_service = channel_service
        self.reactor = reactor
        if isinstance(url, str):
            url = parse_redis_url(url, password)
        if policy is None:
            policy = "reject-new" if session_service.single_session else "allow"
        self.policy = check_policy(policy)
        if not prefix or any(c in prefix for c in " |"):
            raise ValueError(f"bad cluster prefix {prefix!r}")
        self.prefix = prefix
        self.server_id = session_service.server_id
        self.node_id = f"{self.server_id}#{uuid.uuid4().hex[:8]}"
        self.heartbeat = heartbeat
        self.ttl_ms = max(1, int(heartbeat * 3000))
        self.timeout = timeout
        self.mixed_versions = mixed_versions
        self.codec_fingerprint = codec_fingerprint(session_service.codec)
        self.info = orjson.dumps(
            {
                "server_id": self.server_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "codec": self.codec_fingerprint,
            }
        )
        self.inbox = self._key("in", self.node_id)
        self.all_channel = f"{prefix}:all"
        self.link = RedisLink(
            url,
            reactor,
            [self.inbox, self.all_channel],
            self._on_message,
            self._on_up,
            self._on_down,
            timeout=timeout,
            max_retry_delay=max_retry_delay,
            scripts=[s.source for s in self._scripts()],
        )
        self.started: Deferred[None] = Deferred()
        self.synced = False
        #: Envelopes received and dropped as malformed.
        self.dropped = 0
        #: Times the subscriber was restarted because the node's own probes stopped coming.
        self.subscriber_restarts = 0
        #: Times this node rewrote its entries after it joined: Redis back, a new subscriber,
        #: its liveness key expired (a stall), Redis lost its data.
        self.resyncs = 0
        #: The value of C{P:epoch} this node knows; a new one means Redis lost its data.
        self.epoch: str | None = None
        #: Times Redis was found to have lost its data (a new epoch).
        self.redis_resets = 0
        #: Redis lost its data and this node's rewrite of it has not succeeded yet (it was
        #: cut short by a disconnection): the next rewrite must write it all back.
        self._data_lost = False
        #: Envelopes published and received, by kind (C{KIND_NAMES}' keys).
        self.published = dict.fromkeys(KIND_NAMES, 0)
        self.received = dict.fromkeys(KIND_NAMES, 0)
        #: Acknowledged kicks to other nodes: count per C{KICK_BUCKETS} bound (and +Inf), sum.
        self.kick_buckets = [0] * (len(KICK_BUCKETS) + 1)
        self.kick_seconds = 0.0
        #: Kicks to other nodes not acknowledged in time.
        self.kick_timeouts = 0
        #: Live nodes in C{P:nodes}, as seen at this node's last heartbeat (this one included).
        self.nodes_seen = 0
        #: Global channels of the uids bound here, as added through this node: written back
        #: when Redis lost its data.
        self._memberships: dict[str, set[str]] = {}
        self._inbox_bytes = self.inbox.encode()
        self._inbox_seen = reactor.seconds()
        self._deaf_suspected = False
        #: Publishes to a node's inbox that nobody read (the node died, not yet reaped).
        self.undelivered = 0
        self._claim_deadline: float | None = None
        self._beat = LoopingCall(self._heartbeat)
        self._beat.clock = reactor
        self._ids = itertools.count(1)
        self._acks: dict[str, _Acks] = {}
        self._bound: dict[int, str] = {}  # sid -> uid, as written to the directory
        self._binding: set[int] = set()  # sids bound through bind(): written by its script
        self._warned_plain_bind = False
        session_service.on("bind_session", self._on_bind)
        session_service.on("unbind_session", self._on_unbind)
        session_service.on("close_session", self._on_close)

    @staticmethod
    def _scripts() -> list[scripts.Script]:
        return [
            scripts.BIND,
            scripts.CODEC_CHECK,
            scripts.HEARTBEAT,
            scripts.PUSH,
            scripts.REAP,
            scripts.REAP_DEAD,
            scripts.RESYNC,
            scripts.SESSIONS,
            scripts.UNBIND,
        ]

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{name}"

    def _eval(self, script: scripts.Script, keys: list[str], args: list[Any]) -> Deferred[Any]:
        return self.link.evalsha(script.sha, script.source, keys, args)

    def _publish(self, channel: str, kind: str, envelope: bytes) -> Deferred[int]:
        self.published[kind] += 1
        return self.link.publish(channel, envelope)

    # Lifecycle

    def startService(self) -> None:
        super().startService()
        self.link.start()

    def stopService(self) -> Deferred[None]:
        """Graceful stop: remove this node's entries at once, then close the connections."""
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self._beat.running:
            self._beat.stop()
        for acks in list(self._acks.values()):
            if not acks.done.called:
                acks.done.errback(ClusterUnavailable("the cluster node is stopping"))
        if self.link.up and self.synced:
            try:
                await self._eval(
                    scripts.REAP,
                    [
                        self._key("n", self.node_id),
                        f"{self.prefix}:nodes",
                        self._key("s", self.server_id),
                    ],
                    [self.prefix, self.node_id],
                )
            except ClusterError as e:
                _log.warn("could not remove this node's entries: {error}", error=str(e))
        self.synced = False
        await self.link.stop()

    def _on_up(self) -> None:
        self._inbox_seen = self.reactor.seconds()
        self._deaf_suspected = False
        ensureDeferred(self._sync()).addErrback(self._sync_failed)

    def _sync_failed(self, failure: Failure) -> None:
        """Redis went away again (or the node is stopping) during a resync: the next time the
        link comes up resyncs; anything else is a bug, logged with its traceback."""
        if failure.check(ClusterError):
            _log.warn("resync with Redis failed: {error}", error=failure.getErrorMessage())
        else:
            _log.failure("resync with Redis failed", failure)

    def _on_down(self, reason: str) -> None:
        self.synced = False

    async def _claim(self) -> tuple[str, bool, bool]:
        """Claim the server id and refresh the liveness key: (the id's holder, whether this
        node's liveness key was still there, whether Redis lost data that this node has not
        written back yet)."""
        owner, alive, epoch = await self._eval(
            scripts.HEARTBEAT,
            [
                self._key("s", self.server_id),
                self._key("n", self.node_id),
                f"{self.prefix}:nodes",
                f"{self.prefix}:epoch",
            ],
            [self.node_id, self.ttl_ms, self.info, uuid.uuid4().hex],
        )
        known, self.epoch = self.epoch, str(epoch)
        if known is not None and known != self.epoch:
            self._data_lost = True  # until a rewrite with the channels has succeeded
            self.redis_resets += 1
            _log.warn(
                "Redis at {url} lost its data (epoch {old} -> {new}): rewriting this node's "
                "entries and {channels} global channel memberships",
                url=str(self.link.url),
                old=known,
                new=self.epoch,
                channels=sum(len(c) for c in self._memberships.values()),
            )
        return str(owner), bool(int(alive)), self._data_lost

    async def _check_codec(self) -> None:
        """Refuse to join (L{MixedVersions}) if a live node encodes pushes differently: the
        nodes forward each other's encoded bytes, which its clients could not decode."""
        found = await self._eval(
            scripts.CODEC_CHECK, [f"{self.prefix}:nodes"], [self.prefix, self.codec_fingerprint]
        )
        if not found:
            return
        node, theirs = found
        message = (
            f"the live node {node!r} runs other routes or protos (codec {theirs}, this node "
            f"{self.codec_fingerprint}): every node must serve the same routes, dictionary "
            f"and protos"
        )
        if self.mixed_versions:
            _log.warn("{message}; joining anyway (--cluster-mixed-versions)", message=message)
            return
        raise MixedVersions(f"{message} (or give --cluster-mixed-versions)")

    async def _sync(self) -> None:
        """(Re)join: claim the server id, then rewrite this node's entries from local truth."""
        if not self.started.called:
            try:
                await self._check_codec()
            except MixedVersions as refused:
                _log.critical("{error}", error=str(refused))
                self.started.errback(refused)
                return
        owner, _, lost = await self._claim()
        if owner != self.node_id:
            now = self.reactor.seconds()
            if self._claim_deadline is None:
                self._claim_deadline = now + self.ttl_ms / 1000 + self.heartbeat
            if now < self._claim_deadline and not self.started.called:
                # a crashed predecessor's claim expires within one TTL: wait for it
                self.reactor.callLater(self.heartbeat / 2, self._retry_sync)
                return
            error = DuplicateServerId(
                f"server id {self.server_id!r} is already used by the live node {owner!r}: "
                f"give every connector process its own --server-id"
            )
            _log.critical("{error}", error=str(error))
            if not self.started.called:
                self.started.errback(error)
            return
        resync = self.started.called  # else this is the first join
        if resync:
            self.resyncs += 1
        await self._rewrite(lost)
        _log.info(
            "cluster node {node} {joined} with {count} bound sessions",
            node=self.node_id,
            joined="resynced" if resync else "joined",
            count=len(self._bound),
        )
        if not self._beat.running:
            self._beat.start(self.heartbeat, now=False).addErrback(
                lambda f: _log.failure("cluster heartbeat stopped", f)
            )
        if resync:
            self._emit("resync", "redis-empty" if lost else "reconnected")
        else:
            self.started.callback(None)

    async def _rewrite(self, channels: bool = False) -> None:
        """Replace what the directory says about this node with the sessions it holds; with
        C{channels}, also add back the global channel memberships of its uids.

        The sessions change while the rewrite is in flight: binds, unbinds and closes made
        while the node is not synced write nothing, and a C{bind()} whose script ran before
        the rewrite is bound here only after the sessions were read. So the rewrite reads the
        sessions again at its end and writes the difference, then counts as synced at once:
        the one ordered command connection runs every later write after these. (A diff, not
        a second full rewrite, which logins arriving all the time would keep redoing.)
        """
        pairs: list[Any] = []
        self.session_service.for_each_bound_session(
            lambda s: pairs.extend((s.id, s.uid)) if s.uid is not None else None
        )
        written = {int(pairs[i]): pairs[i + 1] for i in range(0, len(pairs), 2)}
        self._bound = dict(written)
        await self._eval(
            scripts.RESYNC,
            [self._key("n", self.node_id), f"{self.prefix}:nodes", self._key("ni", self.node_id)],
            [self.prefix, self.node_id, self.ttl_ms, self.info, _now_ms(), *pairs],
        )
        if channels:
            # No such care needed here: channel_* calls fail while the node is not synced,
            # and each one's write runs in Redis before its local record changes.
            by_channel: dict[str, list[str]] = {}
            for uid, names in self._memberships.items():
                for name in names:
                    by_channel.setdefault(name, []).append(uid)
            await _each(
                [
                    self.link.call("SADD", self._key("c", name), *uids)
                    for name, uids in by_channel.items()
                ]
            )
        changes = [
            self._unbind_script(self.node_id, sid, uid)
            for sid, uid in written.items()
            if self._bound.get(sid) != uid
        ]
        changes += [
            self._bind_script(sid, uid, "allow")
            for sid, uid in self._bound.items()
            if written.get(sid) != uid
        ]
        self.synced = True
        await _each(changes)
        if channels:
            self._data_lost = False

    def _retry_sync(self) -> None:
        if self.link.up and self.running:
            self._on_up()

    async def _heartbeat_once(self) -> None:
        owner, alive, lost = await self._claim()
        if owner != self.node_id:
            _log.critical(
                "server id {server_id!r} was taken over by node {owner!r}",
                server_id=self.server_id,
                owner=owner,
            )
        elif lost:
            self.resyncs += 1
            await self._rewrite(channels=True)
            self._emit("resync", "redis-empty")
        elif not alive:
            # stalled longer than the TTL: the others may have reaped this node's entries
            self.resyncs += 1
            _log.warn(
                "cluster node {node} was silent longer than its TTL: rewriting its entries",
                node=self.node_id,
            )
            await self._rewrite()
            self._emit("resync", "stalled")
        dead = await self._eval(scripts.REAP_DEAD, [f"{self.prefix}:nodes"], [self.prefix])
        for node in dead or ():
            _log.info("reaped the entries of dead cluster node {node}", node=node)
        silent = self.reactor.seconds() - self._inbox_seen
        if silent <= 2 * self.heartbeat + self.timeout:
            self._deaf_suspected = False
        elif not self._deaf_suspected:
            # After a stall of this process, timers run before the sockets are read: the
            # probes may be waiting unread. Confirm at the next heartbeat, after a read.
            self._deaf_suspected = True
        else:
            # probes are published every heartbeat: a subscriber that delivers none of them
            # is wedged (connected, yet receiving nothing); a new connection fixes that
            self._deaf_suspected = False
            self.subscriber_restarts += 1
            self.synced = False  # deaf until the new subscriber is up and the entries rewritten
            _log.warn(
                "no message in this node's inbox for {silent:.1f} s: restarting the subscriber",
                silent=silent,
            )
            self.link.restart_subscriber()
            return
        self.nodes_seen = int(await self.link.call("SCARD", f"{self.prefix}:nodes"))
        await self._publish(self.inbox, "H", encode_envelope("H", {"from": self.node_id}))

    def _heartbeat(self) -> Deferred[None] | None:
        if not (self.link.up and self.synced):
            return None

        def failed(f: Any) -> None:
            if self.running:  # not a heartbeat cut short by a stop
                _log.warn("cluster heartbeat failed: {error}", error=f.getErrorMessage())

        return ensureDeferred(self._heartbeat_once()).addErrback(failed)

    def _check_up(self) -> None:
        if not (self.link.up and self.synced):
            detail = f" ({self.link.error})" if self.link.error else ""
            raise ClusterUnavailable(f"Redis at {self.link.url} is unreachable{detail}")

    # Directory upkeep, from the session service's events

    def _background(self, d: Deferred[Any], what: str) -> None:
        def failed(f: Any) -> None:
            # a write lost while Redis is down is redone by the resync when it is back
            _log.warn("cluster {what} not recorded: {error}", what=what, error=f.getErrorMessage())

        d.addErrback(failed)

    def _on_bind(self, session: Session) -> None:
        uid = session.uid
        if uid is None:
            return
        self._bound[session.id] = uid
        if session.id in self._binding:
            return  # bind() has written it already
        if self.policy != "allow" and not self._warned_plain_bind:
            self._warned_plain_bind = True
            _log.warn(
                "session.bind() only binds locally; use app.cluster.bind() so that the "
                "{policy} session policy applies across the cluster",
                policy=self.policy,
            )
        if self.link.up and self.synced:
            self._background(self._bind_script(session.id, uid, "allow"), "bind")

    def _on_unbind(self, session: Session) -> None:
        self._forget(session.id)

    def _on_close(self, session: Session, reason: Any) -> None:
        self._forget(session.id)

    def _forget(self, sid: int) -> None:
        uid = self._bound.pop(sid, None)
        if uid is not None and not self.session_service.get_by_uid(uid):
            self._memberships.pop(uid, None)
        if uid is not None and self.link.up and self.synced:
            self._background(self._unbind_script(self.node_id, sid, uid), "unbind")

    def _bind_script(self, sid: int, uid: str, policy: str) -> Deferred[Any]:
        return self._eval(
            scripts.BIND,
            [self._key("u", uid), self._key("ni", self.node_id)],
            [self.prefix, self.node_id, sid, uid, policy, _now_ms()],
        )

    def _unbind_script(self, node: str, sid: int, uid: str) -> Deferred[Any]:
        return self._eval(
            scripts.UNBIND,
            [self._key("u", uid), self._key("ni", node)],
            [f"{node}|{sid}", f"{sid} {uid}"],
        )

    # ICluster: sessions

    def bind(self, session: Session, uid: str) -> Deferred[None]:
        return ensureDeferred(self._bind(session, uid))

    async def _bind(self, session: Session, uid: str) -> None:
        if not isinstance(uid, str) or not uid:
            raise TypeError(f"uid must be a non-empty str, not {uid!r}")
        if session.closed:
            raise SessionError(f"session does not exist, sid: {session.id}", session.id, uid)
        if session.uid == uid:
            return
        if session.uid is not None:
            raise SessionError(
                f"session has already bound with {session.uid}", session.id, session.uid
            )
        self._check_up()
        self._binding.add(session.id)
        try:
            accepted, holders = await self._bind_script(session.id, uid, self.policy)
            if not accepted:
                raise single_session_error(session.id, uid)
            remote: list[tuple[str, int]] = []
            if self.policy == "kick-old":
                for field in holders:
                    node, sid = _split_field(field)
                    if node == self.node_id:
                        self.session_service.kick_by_session_id(sid, "kick")
                    else:
                        remote.append((node, sid))
            try:
                self.session_service.bind(session.id, uid)
            except SessionError:
                # closed meanwhile: take back what the script wrote
                await self._unbind_script(self.node_id, session.id, uid)
                raise
        finally:
            self._binding.discard(session.id)
        if remote:
            kicks = [
                ensureDeferred(self._kick_remote_session(node, sid, uid, "kick"))
                for node, sid in remote
            ]
            try:
                await gatherResults(kicks, consumeErrors=True)
            except Exception as e:  # the new session is bound; the old ones were told
                _log.warn("kick-old: {error}", error=str(e))

    def unbind(self, session: Session, uid: str) -> Deferred[None]:
        try:
            self.session_service.unbind(session.id, uid)  # the listener updates the directory
        except SessionError as e:
            return fail(e)
        return succeed(None)

    async def _sessions(self, uids: list[str]) -> dict[str, list[tuple[str, int]]]:
        """The live (node, sid) of each uid."""
        self._check_up()
        table = await self._eval(scripts.SESSIONS, [], [self.prefix, *uids])
        return {
            uid: [_split_field(f) for f in fields] for uid, fields in zip(uids, table, strict=True)
        }

    def get_sids_by_uid(self, uid: str) -> Deferred[list[tuple[str, int]]]:
        async def run() -> list[tuple[str, int]]:
            return (await self._sessions([uid]))[uid]

        return ensureDeferred(run())

    def get_status_by_uids(self, uids: list[str]) -> Deferred[dict[str, bool]]:
        async def run() -> dict[str, bool]:
            table = await self._sessions(list(dict.fromkeys(uids)))
            return {uid: bool(table[uid]) for uid in uids}

        return ensureDeferred(run())

    # ICluster: push and broadcast

    def push_by_uids(self, route: str, msg: Any, uids: list[str]) -> Deferred[list[str]]:
        return ensureDeferred(self._push(route, msg, uids))

    async def _push(self, route: str, msg: Any, uids: Iterable[str]) -> list[str]:
        uids = list(dict.fromkeys(uids))
        if not uids:
            raise ValueError("uids should not be empty")
        package = self.session_service.encode_push_package(route, msg)
        return await self._push_package(package, uids)

    async def _push_package(self, package: bytes, uids: list[str]) -> list[str]:
        """Send to this node's sessions, then (one round trip: the PUSH script looks the
        uids up and publishes) to every other live node holding some of them."""
        local_missing = set(self.session_service.send_package_by_uids(package, uids))
        try:
            self._check_up()
            found, published, unread = await self._eval(
                scripts.PUSH, [], [self.prefix, self.node_id, package, *uids]
            )
        except ClusterUnavailable as e:
            raise ClusterUnavailable(f"{e}; pushed to this node's sessions only") from None
        self.published["P"] += int(published)
        self.undelivered += int(unread)  # nodes that died before they were reaped
        reached = set(found)
        reached.update(uid for uid in uids if uid not in local_missing)
        return [uid for uid in uids if uid not in reached]

    def broadcast(self, route: str, msg: Any, binded: bool = False) -> Deferred[int]:
        async def run() -> int:
            package = self.session_service.encode_push_package(route, msg)
            self.session_service.broadcast_package(package, binded)
            try:
                self._check_up()
                header = {"from": self.node_id, "binded": bool(binded)}
                count = await self._publish(
                    self.all_channel, "B", encode_envelope("B", header, package)
                )
            except ClusterUnavailable as e:
                raise ClusterUnavailable(f"{e}; broadcast to this node's sessions only") from None
            return int(count)

        return ensureDeferred(run())

    # ICluster: kick

    def kick(self, uid: str, reason: str = "kick") -> Deferred[int]:
        return ensureDeferred(self._kick(uid, reason))

    async def _kick(self, uid: str, reason: str) -> int:
        local = self.session_service.kick(uid, reason)
        try:
            table = await self._sessions([uid])
        except ClusterUnavailable as e:
            raise ClusterUnavailable(f"{e}; kicked {local} session(s) on this node only") from None
        nodes = {node for node, _ in table[uid] if node != self.node_id}
        if not nodes:
            return local
        remote = await self._request(nodes, "K", {"uid": uid, "reason": reason})
        return local + remote

    def kick_by_session(self, node: str, sid: int, reason: str = "kick") -> Deferred[bool]:
        if node == self.node_id:
            return succeed(self.session_service.kick_by_session_id(sid, reason))
        return ensureDeferred(self._kick_remote_session(node, sid, None, reason)).addCallback(bool)

    async def _kick_remote_session(self, node: str, sid: int, uid: str | None, reason: str) -> int:
        header: dict[str, Any] = {"sid": sid, "reason": reason}
        if uid is not None:
            header["uid"] = uid
        return await self._request({node}, "S", header)

    async def _request(self, nodes: set[str], kind: str, header: dict[str, Any]) -> int:
        """Send C{kind} to each node's inbox; sum their acknowledged counts.

        A node whose inbox nobody reads (dead, not yet reaped) counts 0 at once.
        @raise ClusterTimeout: some nodes did not answer within the timeout.
        """
        self._check_up()
        request_id = f"{next(self._ids)}"
        acks = self._acks[request_id] = _Acks(nodes)
        envelope = encode_envelope(kind, {**header, "from": self.node_id, "id": request_id})

        def expire() -> None:
            if not acks.done.called:
                self.kick_timeouts += 1
                missing = sorted(acks.waiting)
                acks.done.errback(
                    ClusterTimeout(
                        f"no acknowledgement in {self.timeout} s from {', '.join(missing)}",
                        acks.count,
                        missing,
                    )
                )

        acks.timer = self.reactor.callLater(self.timeout, expire)
        started = self.reactor.seconds()
        try:
            for node in nodes:
                count = await self._publish(self._key("in", node), kind, envelope)
                if not count:
                    self.undelivered += 1
                    acks.answered(node, 0)
                    uid = header.get("uid")
                    if kind == "S" and uid:  # nobody holds that session: drop the stale field
                        await self._unbind_script(node, header["sid"], uid)
            count = await acks.done
            elapsed = self.reactor.seconds() - started
            self.kick_buckets[bisect_left(KICK_BUCKETS, elapsed)] += 1
            self.kick_seconds += elapsed
            return count
        finally:
            if acks.timer.active():
                acks.timer.cancel()
            del self._acks[request_id]

    # ICluster: global channels

    def channel_add(self, name: str, uid: str) -> Deferred[None]:
        async def run() -> None:
            if not isinstance(uid, str) or not uid:
                raise TypeError(f"uid must be a non-empty str, not {uid!r}")
            self._check_up()
            await self.link.call("SADD", self._key("c", name), uid)
            if self.session_service.get_by_uid(uid):
                self._memberships.setdefault(uid, set()).add(name)

        return ensureDeferred(run())

    def channel_leave(self, name: str, uid: str) -> Deferred[bool]:
        async def run() -> bool:
            self._check_up()
            names = self._memberships.get(uid)
            if names is not None:
                names.discard(name)
            return bool(await self.link.call("SREM", self._key("c", name), uid))

        return ensureDeferred(run())

    def channel_members(self, name: str) -> Deferred[list[str]]:
        async def run() -> list[str]:
            self._check_up()
            return list(await self.link.call("SMEMBERS", self._key("c", name)))

        return ensureDeferred(run())

    def channel_push(self, name: str, route: str, msg: Any) -> Deferred[list[str]]:
        async def run() -> list[str]:
            package = self.session_service.encode_push_package(route, msg)
            self._check_up()
            members = list(await self.link.call("SMEMBERS", self._key("c", name)))
            if not members:
                return []
            return await self._push_package(package, members)

        return ensureDeferred(run())

    def channel_destroy(self, name: str) -> Deferred[None]:
        async def run() -> None:
            self._check_up()
            for names in self._memberships.values():
                names.discard(name)
            await self.link.call("DEL", self._key("c", name))

        return ensureDeferred(run())

    # Inbox

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel == self._inbox_bytes:
            self._inbox_seen = self.reactor.seconds()
            self._deaf_suspected = False
        try:
            envelope = decode_envelope(data)
        except EnvelopeError as e:
            self.dropped += 1
            _log.warn("dropped a message on {channel!r}: {error}", channel=channel, error=str(e))
            return
        kind = envelope.kind
        header = envelope.header
        sender = header.get("from")
        if sender == self.node_id and kind != "H":
            return  # our own broadcast
        if kind in self.received:
            self.received[kind] += 1
        handler = self._handlers.get(kind)
        if handler is None or not isinstance(sender, str):
            return  # a probe, or a kind that has no business here
        try:
            handler(self, sender, header, envelope.payload)
        except (KeyError, TypeError, ValueError) as e:
            self.dropped += 1
            _log.warn("dropped a bad {kind} envelope: {error}", kind=kind, error=str(e))

    def _handle_push(self, sender: str, header: dict[str, Any], payload: bytes) -> None:
        uids = header["uids"]
        if not isinstance(uids, list) or not all(isinstance(u, str) for u in uids):
            raise TypeError("uids must be a list of str")
        self.session_service.send_package_by_uids(payload, uids)

    def _handle_broadcast(self, sender: str, header: dict[str, Any], payload: bytes) -> None:
        self.session_service.broadcast_package(payload, bool(header.get("binded")))

    def _handle_kick(self, sender: str, header: dict[str, Any], payload: bytes) -> None:
        count = self.session_service.kick(str(header["uid"]), str(header.get("reason", "kick")))
        self._ack(sender, header["id"], count)

    def _handle_kick_session(self, sender: str, header: dict[str, Any], payload: bytes) -> None:
        sid = int(header["sid"])
        found = self.session_service.kick_by_session_id(sid, str(header.get("reason", "kick")))
        uid = header.get("uid")
        if not found and isinstance(uid, str) and self.link.up:
            self._background(self._unbind_script(self.node_id, sid, uid), "stale entry removal")
        self._ack(sender, header["id"], int(found))

    def _handle_ack(self, sender: str, header: dict[str, Any], payload: bytes) -> None:
        acks = self._acks.get(str(header["id"]))
        if acks is not None:
            acks.answered(sender, int(header["n"]))

    def _ack(self, to: str, request_id: Any, count: int) -> None:
        envelope = encode_envelope("A", {"from": self.node_id, "id": request_id, "n": count})
        if self.link.up:
            self._background(self._publish(self._key("in", to), "A", envelope), "acknowledgement")

    _handlers: dict[str, Callable[[RedisCluster, str, dict[str, Any], bytes], None]] = {
        "P": _handle_push,
        "B": _handle_broadcast,
        "K": _handle_kick,
        "S": _handle_kick_session,
        "A": _handle_ack,
    }
