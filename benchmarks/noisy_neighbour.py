#!/usr/bin/env python3
"""Noisy neighbour: do well-behaved clients keep their latency while one address floods?

    python3 benchmarks/noisy_neighbour.py                      # this checkout, 20 s
    python3 benchmarks/noisy_neighbour.py --source /tmp/base   # another checkout of the code

What it does (everything on loopback, bounded):

 1. builds benchmarks/loadgen.c with gcc -O2 into a scratch folder;
 2. starts ``twistd -n pomelo-connector --listen tcp:PORT:interface=127.0.0.1`` with
    ``PYTHONPATH=--source`` (default: this checkout), its log in the scratch folder;
 3. starts the flood: ``--flooders`` (500) raw TCP connections from 127.0.0.1, closed loop
    with ``--flood-inflight`` (20) requests in flight each, far over the default rate of 100
    a second per connection;
 4. once the flood is set up, starts the well-behaved clients from another loopback address
    (``--bind 127.0.0.2``): ``--clients`` (50) connections, ``--rate`` (20) requests a second
    each, paced; they measure latency (write of a request to read of its response) over
    ``--seconds`` (20);
 5. prints one JSON object: the well-behaved clients' p50/p99/max and errors, the flood's
    answers (ok and 429) and how many flooding connections the server closed, the server's CPU
    over the window and how much its log grew; then stops both load generators and the
    server.

With ``--no-flood`` it measures the well-behaved clients alone (the baseline).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def log(msg: str) -> None:
    print(f"[noisy {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a drain), then SIGKILL if it has not gone within 15 s."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"the server did not listen on {port} within {timeout} s")


def build_loadgen(scratch: Path) -> Path:
    binary = scratch / "loadgen"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(HERE / "loadgen.c")], check=True)
    return binary


def start_server(args: argparse.Namespace, port: int, logfile: Path) -> subprocess.Popen[bytes]:
    command = [
        str(Path(args.python).parent / "twistd"),
        *os.environ.get("NOISY_TWISTD_ARGS", "").split(),
        "-n",
        "--pidfile=",
        "--logfile",
        str(logfile),
        "pomelo-connector",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        *args.server_arg,
    ]
    log(f"server: PYTHONPATH={args.source} {' '.join(command)}")
    env = {**os.environ, "PYTHONPATH": args.source}  # twistd finds the checkout's plugin
    return subprocess.Popen(command, cwd=args.source, env=env, stdin=subprocess.DEVNULL)


def loadgen(binary: Path, port: int, pid: int, *options: str) -> subprocess.Popen[str]:
    command = [str(binary), "--port", str(port), "--transport", "tcp", "--pid", str(pid)]
    return subprocess.Popen(
        [*command, *options],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_setup(process: subprocess.Popen[str], timeout: float) -> str:
    """Read the load generator's stderr until it reports its set-up done."""
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            raise SystemExit("a load generator exited during set-up")
        if "setup done" in line:
            return line.strip()
    raise SystemExit("a load generator did not finish its set-up in time")


def result(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"no result from a load generator: {err[-2000:]}")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(ROOT), help="the checkout to run the server from")
    parser.add_argument(
        "--python", default=sys.executable, help="the virtualenv's python; its twistd is used"
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--flooders", type=int, default=500)
    parser.add_argument("--flood-inflight", type=int, default=20)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s per client")
    parser.add_argument("--bind", default="127.0.0.2", help="the well-behaved clients' address")
    parser.add_argument("--no-flood", action="store_true")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="one more pomelo-connector argument"
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="noisy-neighbour-"))
    binary = build_loadgen(scratch)
    port = free_port()
    logfile = scratch / "server.log"
    server = start_server(args, port, logfile)
    flood: subprocess.Popen[str] | None = None
    clients: subprocess.Popen[str] | None = None
    try:
        wait_port(port, 30)
        if not args.no_flood:
            flood = loadgen(
                binary,
                port,
                server.pid,
                "--host",
                "127.0.0.1",
                "--conns",
                str(args.flooders),
                "--inflight",
                str(args.flood_inflight),
                "--warmup",
                "0",
                "--seconds",
                str(args.seconds + 2),  # the clients' set-up, warm-up and window
            )
            log(f"flood: {wait_setup(flood, 120)}")
        log_before = logfile.stat().st_size
        clients = loadgen(
            binary,
            port,
            server.pid,
            "--host",
            "127.0.0.1",
            "--bind",
            args.bind,
            "--conns",
            str(args.clients),
            "--inflight",
            "4",
            "--rate",
            str(args.rate),
            "--warmup",
            "1",
            "--seconds",
            str(args.seconds),
        )
        log(f"clients: {wait_setup(clients, 120)}")
        good = result(clients, args.seconds + 60)
        log_growth = logfile.stat().st_size - log_before
        bad: dict[str, Any] = {}
        if flood is not None:
            answers = result(flood, 60)
            bad = {
                "flood_answers": answers["requests"],
                "flood_answers_429_or_error": answers["bad_responses"],
                "flood_alive_at_end": answers["alive"],
                "flood_closed_by_server": answers["closed_by_peer"],
            }
        report = {
            "source": args.source,
            "flooders": 0 if args.no_flood else args.flooders,
            "flood_inflight": args.flood_inflight,
            "clients": args.clients,
            "rate_per_client": args.rate,
            "seconds": good["seconds"],
            "good_requests": good["requests"],
            "good_p50_ms": good["p50_us"] / 1000,
            "good_p99_ms": good["p99_us"] / 1000,
            "good_max_ms": good["max_us"] / 1000,
            "good_errors": good["errors"],
            "good_alive": good["alive"],
            "server_cpu": good.get("server_cpu"),
            "server_log_growth_bytes": log_growth,
            **bad,
        }
        print(json.dumps(report), flush=True)
    finally:
        for process in (clients, flood):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        stop_server(server)
        if os.environ.get("NOISY_KEEP") is None:
            subprocess.run(["rm", "-rf", str(scratch)], check=False)


if __name__ == "__main__":
    main()
