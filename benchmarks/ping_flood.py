#!/usr/bin/env python3
"""A WebSocket client that pings as fast as it can and never reads: is it cut off, at what cost?

    python3 benchmarks/ping_flood.py                      # this checkout
    python3 benchmarks/ping_flood.py --source /tmp/base   # another checkout of the code

It starts ``twistd -n pomelo-connector`` on a loopback port (as benchmarks/noisy_neighbour.py
does), reads the server's VmRSS, opens one WebSocket connection with a 4 KiB receive buffer,
shakes hands (upgrade, Pomelo handshake, ACK), then sends 125-byte pings in 64 KiB writes, with
a heartbeat package every second so that no deadline ends the connection, and never reads
again. It stops when the server cuts the connection off, when ``--megabytes`` (150) are sent, or
after ``--seconds`` (60). A thread samples the server's VmRSS every 20 ms. One JSON line: bytes
and pings sent, whether and how the connection was cut off, the server's RSS before, at its peak
and after, in MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from noisy_neighbour import ROOT, free_port, log, start_server, stop_server, wait_port

MASK = bytes.fromhex("a1 b2 c3 d4")
UPGRADE = (
    "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
HANDSHAKE = b'{"sys":{"type":"ping-flood","version":"0.0.1"}}'


def frame(payload: bytes, opcode: int) -> bytes:
    """One final, masked client frame (payloads under 126 bytes)."""
    assert len(payload) < 126
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + MASK + masked


def package(kind: int, body: bytes = b"") -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """The highest VmRSS of C{pid} seen while running."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return
            self.done.wait(0.02)


def read_until(sock: socket.socket, marker: bytes, limit: int = 65536) -> bytes:
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit(f"the server closed during set-up: {data[:200]!r}")
        data += chunk
    return data


def flood(port: int, megabytes: float, seconds: float) -> dict[str, object]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: small window
    sock.connect(("127.0.0.1", port))
    sock.settimeout(10)
    sock.sendall(UPGRADE.format(port=port).encode())
    read_until(sock, b"\r\n\r\n")
    sock.sendall(frame(package(1, HANDSHAKE), 2))
    read_until(sock, b'"code":200')
    sock.sendall(frame(package(2), 2))
    ping = frame(b"p" * 125, 9)
    chunk = ping * (65536 // len(ping))
    heartbeat = frame(package(3), 2)
    sent = 0
    cut_off = ""
    started = time.monotonic()
    next_heartbeat = started + 1
    limit = megabytes * 1024 * 1024
    try:
        while sent < limit and time.monotonic() - started < seconds:
            sock.sendall(chunk)
            sent += len(chunk)
            if time.monotonic() >= next_heartbeat:
                sock.sendall(heartbeat)
                next_heartbeat += 1
    except (ConnectionResetError, BrokenPipeError) as e:
        cut_off = type(e).__name__
    except TimeoutError:
        cut_off = "the server stopped reading (send timed out)"
    elapsed = time.monotonic() - started
    sock.close()
    return {
        "sent_mib": round(sent / 1048576, 2),
        "pings_sent": sent // len(ping),
        "seconds": round(elapsed, 2),
        "cut_off": bool(cut_off),
        "cut_off_by": cut_off or None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(ROOT), help="the checkout to run the server from")
    parser.add_argument(
        "--python", default=sys.executable, help="the virtualenv's python; its twistd is used"
    )
    parser.add_argument("--megabytes", type=float, default=150.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--server-arg", action="append", default=[], help="one more pomelo-connector argument"
    )
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ping-flood-"))
    port = free_port()
    server = start_server(args, port, scratch / "server.log")
    try:
        wait_port(port, 30)
        time.sleep(1)
        before = rss_kib(server.pid)
        sampler = Sampler(server.pid)
        sampler.start()
        log(f"flooding with pings: up to {args.megabytes} MiB or {args.seconds} s")
        report = flood(port, args.megabytes, args.seconds)
        time.sleep(1)
        sampler.done.set()
        sampler.join()
        after = rss_kib(server.pid)
        peak = max(sampler.peak, after)
        report |= {
            "source": args.source,
            "server_rss_before_mib": round(before / 1024, 1),
            "server_rss_peak_mib": round(peak / 1024, 1),
            "server_rss_after_mib": round(after / 1024, 1),
            "server_rss_growth_mib": round((peak - before) / 1024, 1),
        }
        print(json.dumps(report), flush=True)
    finally:
        stop_server(server)
        if os.environ.get("NOISY_KEEP") is None:
            for path in scratch.iterdir():
                path.unlink()
            scratch.rmdir()


if __name__ == "__main__":
    main()
