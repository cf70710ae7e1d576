"""Helpers of the shutdown-signal tests: a log observer that a signal can catch holding its lock,
a child program to run under it, a twistd command line, and a Pomelo TCP client that churns.

Every child process writes its log to a file, never to a pipe: a pipe nobody reads fills up
and blocks the writer, which would look like the very hang under test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.logger import ILogObserver, formatEventAsClassicLogText
from zope.interface import implementer

from tests.support.processes import twistd_command

#: The worktree root: children run there, so they import this checkout.
ROOT = Path(__file__).resolve().parents[2]

#: What the observer writes just before it raises the signal while it holds its lock.
HOLDING = "holding the log lock: raising SIGTERM"


@implementer(ILogObserver)
class HoldingObserver:
    """Write each event to a file descriptor under a lock, as a file or queue observer does.

    On the first event that C{trigger} accepts it raises SIGTERM on its own process while it
    holds the lock. C{signal.raise_signal} runs the Python handler before it returns, so the
    handler runs right there, under the lock: a handler that logs (Twisted's) then waits for
    the lock forever, which is Twisted issue #7736 made deterministic.
    """

    def __init__(self, fd: int, trigger: Callable[[dict[str, Any]], bool]) -> None:
        self._fd = fd
        self._trigger = trigger
        self._lock = threading.Lock()
        self._fired = False

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:  # formatting included, as the standard library's logging handlers do
            text = formatEventAsClassicLogText(event) or ""
            os.write(self._fd, text.encode("utf-8", "replace"))
            if not self._fired and self._trigger(event):
                self._fired = True
                os.write(self._fd, f"{HOLDING}\n".encode())
                signal.raise_signal(signal.SIGTERM)


def is_close_line(event: dict[str, Any]) -> bool:
    """Whether C{event} is the per-connection close line of the connector."""
    return str(event.get("log_format", "")).startswith("connection closed:")


def on_close_line() -> HoldingObserver:
    """A twistd C{--logger} factory: stdout, raising SIGTERM within the first close line."""
    return HoldingObserver(1, is_close_line)


def locked_stdout() -> HoldingObserver:
    """A twistd C{--logger} factory: stdout under a lock, and no signal of its own."""
    return HoldingObserver(1, lambda event: False)


def twistd(*args: str, reactor: str | None = None) -> list[str]:
    """The command line of C{twistd -n pomelo-connector ARGS} from this checkout."""
    chosen = ["-r", reactor] if reactor else []
    return twistd_command(*chosen, *args)


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start C{command} in the worktree root with its output in the file C{log}."""
    with open(log, "wb") as out:
        return subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def wait_for(log: Path, text: str, timeout: float) -> str | None:
    """The log's first line containing C{text}, waiting up to C{timeout} seconds; or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text("utf-8", "replace").splitlines():
            if text in line:
                return line
        time.sleep(0.02)
    return None


def listening_port(log: Path, timeout: float) -> int | None:
    """The port twistd said it listens on ("... starting on PORT"), or None."""
    line = wait_for(log, "starting on ", timeout)
    return None if line is None else int(line.rsplit(" ", 1)[1])


def exited_within(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The process's exit status if it exits within C{timeout}; else None, and it is killed."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        return None


def _package(kind: int, body: bytes = b"") -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


HANDSHAKE = _package(1, json.dumps({"sys": {"type": "stress", "version": "0.1"}}).encode())
ACK = _package(2)


def handshake_once(port: int, timeout: float = 2.0) -> bool:
    """Connect over raw TCP, handshake, ack and close; whether the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(HANDSHAKE)
        answered = bool(s.recv(4096))
        if answered:
            s.sendall(ACK)
        return answered


def churn(port: int, stop: threading.Event, handshakes: list[int]) -> None:
    """Handshake and close, again and again, until C{stop} or the server stops answering.

    Each handshake that got an answer appends 1 to C{handshakes}. Connections over the
    server's per-address cap are refused (a WARN line each), which is part of the churn.
    """
    while not stop.is_set():
        try:
            if handshake_once(port):
                handshakes.append(1)
        except ConnectionRefusedError:
            return  # not listening any more: the drain has begun
        except OSError:
            pass  # refused over the cap (reset), or cut off by the drain


def child(mode: str) -> None:
    """A process that raises SIGTERM while its log observer holds its lock.

    C{mode} C{"stock"} keeps Twisted's handlers; C{"ours"} installs the connector's
    (L{install_shutdown_signals} with L{stop_on_signal}). The trigger is logged once the
    reactor runs, after either handler is in place.
    """
    from twisted.internet import reactor
    from twisted.logger import Logger, globalLogBeginner

    from pomelo_twisted.ops.signals import install_shutdown_signals, stop_on_signal

    observer = HoldingObserver(1, lambda event: event.get("log_namespace") == "trigger")
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    if mode == "ours":
        install_shutdown_signals(reactor, stop_on_signal(reactor))
    reactor.callWhenRunning(Logger(namespace="trigger").info, "the trigger")
    reactor.run()
    os.write(1, f"reactor stopped; exit signal {reactor._exitSignal}\n".encode())


if __name__ == "__main__":
    child(sys.argv[1])
