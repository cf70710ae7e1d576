#!/usr/bin/env python3
"""Which reactor should pomelo-twisted run on? The evidence, side by side.

Runs ``twistd pomelo-connector`` on each reactor in turn (rounds interleaved, same pinning,
load generator and shapes as benchmarks/run.py, whose machinery it reuses):

  - ``pomelo-epoll``: the default of ``twistd pomelo-connector`` (pomelo_twisted/reactor.py);
  - ``epoll``: Twisted's own epoll reactor (``twistd -r epoll``);
  - ``asyncio-uvloop``: Twisted's asyncio reactor on a uvloop event loop (uvloop is
    pip-installed into the benchmark Python's environment when missing).

    python3 benchmarks/reactors.py                   # 3 rounds, TCP and WebSocket, 100x1 and 1000x1
    python3 benchmarks/reactors.py --rounds 5 --transports tcp

It prints, and writes to benchmarks/results/<timestamp>-reactors.json and .md, the median
requests/s and p99 of each reactor and its ratio to pomelo-epoll. Environment: as run.py
(TWISTD, BENCH_PYTHON, BENCH_SCRATCH, BENCH_PORT_BASE).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (benchmarks/run.py, beside this file)

REACTORS = ("pomelo-epoll", "epoll", "asyncio-uvloop")
UVLOOP_TWISTD = (
    "import sys, uvloop; from twisted.internet import asyncioreactor; "
    "asyncioreactor.install(uvloop.new_event_loop()); "
    "from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
)


class ReactorServer(bench.Server):
    """``twistd pomelo-connector`` on a chosen reactor."""

    reactor = "pomelo-epoll"

    def command(self) -> tuple[list[str], Path, dict[str, str]]:
        cmd, cwd, env = super().command()
        twistd = cmd.index(self.bench.twistd)
        if self.reactor == "asyncio-uvloop":
            cmd[twistd : twistd + 1] = [self.bench.python, "-c", UVLOOP_TWISTD]
        else:
            cmd[twistd + 1 : twistd + 1] = ["-r", self.reactor]
        return cmd, cwd, env


def ensure_uvloop(python: str) -> None:
    if subprocess.run([python, "-c", "import uvloop"], capture_output=True).returncode:
        bench.log(f"installing uvloop into {python}'s environment")
        subprocess.run([python, "-m", "pip", "install", "-q", "uvloop"], check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--shapes", default="100x1,1000x1")
    p.add_argument("--transports", default="tcp,ws")
    p.add_argument("--reactors", default=",".join(REACTORS))
    p.add_argument("--cpus", default="0,1")
    p.add_argument("--pause", type=float, default=1.0)
    args = p.parse_args()
    args.servers = ["ours"]
    args.idle_conns, args.idle_hold = 0, 0.0
    reactors = args.reactors.split(",")
    shapes, transports = args.shapes.split(","), args.transports.split(",")

    b = bench.Bench(args)
    b.prepare()
    if "asyncio-uvloop" in reactors:
        ensure_uvloop(b.python)
    bench.Server = ReactorServer  # type: ignore[misc]  # measure() builds its server by this name
    for rnd in range(1, args.rounds + 1):
        for shape in shapes:
            for transport in transports:
                for reactor in reactors:
                    ReactorServer.reactor = reactor
                    b.measure(rnd, "ours", transport, shape)
                    b.runs[-1]["reactor"] = reactor
                    bench.log(f"   ^ reactor {reactor}")

    valid = [r for r in b.runs if r.get("valid")]
    lines = [
        "| transport | conns x in flight | reactor | req/s | vs pomelo-epoll | p99 ms |",
        "|---|---|---|--:|--:|--:|",
    ]
    summary: dict[str, Any] = {}
    for transport in transports:
        for shape in shapes:
            base = None
            for reactor in reactors:
                runs = [
                    r for r in valid
                    if (r["transport"], r["shape"], r["reactor"]) == (transport, shape, reactor)
                ]
                if not runs:
                    continue
                rps = statistics.median(r["rps"] for r in runs)
                p99 = statistics.median(r["p99_us"] for r in runs) / 1000
                base = rps if reactor == reactors[0] else base
                ratio = f"{rps / base:.2f}" if base else "-"
                summary[f"{transport} {shape} {reactor}"] = {"rps": rps, "p99_ms": p99,
                                                             "rounds": len(runs)}
                lines.append(f"| {transport} | {shape.replace('x', ' x ')} | {reactor} | "
                             f"{rps:,.0f} | {ratio} | {p99:.2f} |")
    table = "\n".join(lines)
    print(table)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{stamp}-reactors.md").write_text(table + "\n")
    (out / f"{stamp}-reactors.json").write_text(json.dumps(
        {"argv": sys.argv[1:], "summary": summary, "runs": b.runs}, indent=1))
    bench.log(f"results: {out / f'{stamp}-reactors.json'} and .md")


if __name__ == "__main__":
    main()
