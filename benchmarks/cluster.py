#!/usr/bin/env python3
"""Cluster mode's costs: what a push, a broadcast and a kick-old login cost through Redis.

    cd <checkout> && python benchmarks/cluster.py            # ~1 min
    python benchmarks/cluster.py --seconds 1                  # quicker, noisier

Starts its own redis-server (no persistence) on a free port, then two cluster nodes
(L{RedisCluster}) in this one process on pomelo-epoll, each with its own session service and
in-memory sessions (no sockets: what is measured is the cluster's path, not the clients'):

  - push round trip, from node A's ``app.cluster.push_by_uids`` to the package handed to the
    session's connection, the uid on A itself (same node) or on B (cross node), with 1, 100
    and 1,000 pushes in flight;
  - broadcast from A to 10,000 sessions, 5,000 on each node, until the last one has it;
  - a kick-old login: a uid bound on one node binds on the other, which kicks the old session
    and waits for the acknowledgement (``app.cluster.bind`` under ``--kick-old``).

Beside each time: CPU per operation of this process (both nodes) and of redis-server, which
share the machine's cores with everything else (not pinned). Writes
benchmarks/results/cluster-<timestamp>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pomelo_twisted.ops.reactor import install  # noqa: E402

install()

from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from zope.interface import implementer  # noqa: E402

from pomelo_twisted.cluster.node import RedisCluster  # noqa: E402
from pomelo_twisted.protocol.codec import ServerCodec  # noqa: E402
from pomelo_twisted.services.channel import ChannelService  # noqa: E402
from pomelo_twisted.services.interfaces import ISessionConnection  # noqa: E402
from pomelo_twisted.services.session import Session, SessionService  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402  (the benchmark runs from the checkout)

TICK = os.sysconf("SC_CLK_TCK")


@implementer(ISessionConnection)
class Sink:
    """A session's connection that counts what it is sent and calls C{on_package}."""

    def __init__(self, service: SessionService) -> None:
        self.service = service
        self.received = 0
        self.on_package: Callable[[], None] | None = None
        self.session: Session | None = None

    def sendPackage(self, package: bytes) -> bool:
        self.received += 1
        if self.on_package is not None:
            self.on_package()
        return True

    def kick(self, reason: str | None) -> None:
        session, self.session = self.session, None
        if session is not None:
            self.service.remove(session.id, reason)

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40000)


def connect(service: SessionService) -> tuple[Session, Sink]:
    sink = Sink(service)
    session = sink.session = service.create(sink)
    return session, sink


def redis_cpu(pid: int) -> float:
    """redis-server's CPU seconds so far (user + system)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Meter:
    """CPU of this process and of Redis over one case."""

    def __init__(self, redis_pid: int) -> None:
        self.redis_pid = redis_pid
        self.cpu0 = time.process_time()
        self.redis0 = redis_cpu(redis_pid)
        self.wall0 = time.perf_counter()

    def done(self, ops: int, latencies: list[float]) -> dict[str, Any]:
        wall = time.perf_counter() - self.wall0
        cpu = time.process_time() - self.cpu0
        rcpu = redis_cpu(self.redis_pid) - self.redis0
        latencies = sorted(latencies)

        def pct(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3

        return {
            "ops": ops,
            "ops_per_s": ops / wall,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "mean_ms": statistics.fmean(latencies) * 1e3,
            "cpu_us_per_op": cpu / ops * 1e6,
            "redis_cpu_us_per_op": rcpu / ops * 1e6,
        }


async def make_node(url: str, server_id: str, policy: str = "allow") -> RedisCluster:
    sessions = SessionService(ServerCodec(None, None), server_id)
    node = RedisCluster(
        sessions, ChannelService(sessions), url, reactor, prefix="bench", policy=policy
    )
    node.startService()
    await node.started
    return node


async def push_case(
    a: RedisCluster, target: RedisCluster, inflight: int, seconds: float, redis_pid: int
) -> dict[str, Any]:
    """Keep C{inflight} pushes going from C{a} to uids on C{target}, for C{seconds}."""
    tag = "same" if target is a else "cross"
    latencies: list[float] = []
    done: defer.Deferred[None] = defer.Deferred()
    deadline = time.perf_counter() + seconds
    running = [0]
    meter: Meter | None = None

    def start(uid: str, sink: Sink) -> None:
        started = time.perf_counter()
        pending = [2]  # the push's Deferred and the package's arrival

        def one(_: object = None) -> None:
            pending[0] -= 1
            if pending[0]:
                return
            sink.on_package = None
            latencies.append(time.perf_counter() - started)
            if time.perf_counter() < deadline:
                start(uid, sink)
            else:
                running[0] -= 1
                if not running[0]:
                    done.callback(None)

        sink.on_package = one
        a.push_by_uids("onChat", {"n": 1}, [uid]).addCallback(one)

    sinks = []
    for i in range(inflight):
        session, sink = connect(target.session_service)
        uid = f"{tag}-{inflight}-{i}"
        await target.bind(session, uid)
        sinks.append((uid, sink))
    meter = Meter(redis_pid)
    running[0] = inflight
    for uid, sink in sinks:
        start(uid, sink)
    await done
    result = meter.done(len(latencies), latencies)
    for _, sink in sinks:
        sink.kick(None)
    return result


async def broadcast_case(
    a: RedisCluster, b: RedisCluster, sessions: int, seconds: float, redis_pid: int
) -> dict[str, Any]:
    sinks = [connect(node.session_service)[1] for node in (a, b) for _ in range(sessions // 2)]
    total = [0]
    target = [0]
    waiter: list[defer.Deferred[None]] = []

    def counted() -> None:
        total[0] += 1
        if total[0] == target[0] and waiter:
            waiter.pop().callback(None)

    for sink in sinks:
        sink.on_package = counted
    latencies: list[float] = []
    meter = Meter(redis_pid)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(latencies) < 5:
        target[0] += len(sinks)
        arrived: defer.Deferred[None] = defer.Deferred()
        waiter.append(arrived)
        started = time.perf_counter()
        await a.broadcast("onAll", {"n": len(latencies)})
        await arrived
        latencies.append(time.perf_counter() - started)
    result = meter.done(len(latencies), latencies)
    for sink in sinks:
        sink.kick(None)
    return result


async def kick_old_case(
    a: RedisCluster, b: RedisCluster, seconds: float, redis_pid: int
) -> dict[str, Any]:
    session, _ = connect(a.session_service)
    await a.bind(session, "k")
    latencies: list[float] = []
    meter = Meter(redis_pid)
    deadline = time.perf_counter() + seconds
    nodes = (b, a)
    while time.perf_counter() < deadline:
        node = nodes[len(latencies) % 2]
        session, _ = connect(node.session_service)
        started = time.perf_counter()
        await node.bind(session, "k")  # kicks the other node's session, acknowledged
        latencies.append(time.perf_counter() - started)
    return meter.done(len(latencies), latencies)


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| case | ops/s | p50 ms | p99 ms | CPU µs/op (both nodes) | Redis CPU µs/op |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['ops_per_s']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} "
            f"| {r['cpu_us_per_op']:,.0f} | {r['redis_cpu_us_per_op']:,.0f} |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> None:
    executable = shutil.which("redis-server") or "/usr/bin/redis-server"
    directory = tempfile.mkdtemp(prefix="pomelo-bench-redis-")
    server = RedisServer(executable, directory)
    server.start()
    assert server.process is not None
    redis = server.process
    try:
        url = server.url
        a = await make_node(url, "bench-a")
        b = await make_node(url, "bench-b")
        results: dict[str, dict[str, Any]] = {}
        for inflight in (1, 100, 1000):
            for target, label in ((a, "same node"), (b, "cross node")):
                name = f"push, {label}, {inflight} in flight"
                print(f"  {name} ...", file=sys.stderr, flush=True)
                results[name] = await push_case(a, target, inflight, args.seconds, redis.pid)
        name = f"broadcast to {args.sessions:,} sessions on 2 nodes"
        print(f"  {name} ...", file=sys.stderr, flush=True)
        results[name] = await broadcast_case(a, b, args.sessions, args.seconds, redis.pid)
        await a.stopService()
        await b.stopService()
        a = await make_node(url, "bench-ka", "kick-old")
        b = await make_node(url, "bench-kb", "kick-old")
        name = "kick-old login (kicks on the other node, acknowledged)"
        print(f"  {name} ...", file=sys.stderr, flush=True)
        results[name] = await kick_old_case(a, b, args.seconds, redis.pid)
        await a.stopService()
        await b.stopService()
    finally:
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)
    load = os.getloadavg()
    meta = {
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "seconds_per_case": args.seconds,
        "cpus": os.cpu_count(),
        "loadavg_after": load,
        "python": sys.version.split()[0],
        "redis": subprocess.run(
            [executable, "--version"], capture_output=True, text=True
        ).stdout.strip(),
    }
    md = table(results)
    print(md)
    print(f"\nload average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / f"cluster-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"wrote {path}", file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=3.0, help="per case (default 3)")
    p.add_argument("--sessions", type=int, default=10000, help="broadcast case (default 10000)")
    args = p.parse_args()
    task.react(lambda _: defer.ensureDeferred(run(args)))


if __name__ == "__main__":
    main()
