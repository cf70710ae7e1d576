"""SIGTERM at random moments, alone or in bursts, to a real C{twistd pomelo-connector} under
connection churn that logs (a close line per connection, a WARN per refusal over the per-address
cap): every process must exit within the drain deadline (Twisted issue #7736 hung 2 in 200).

Two runs in three log through an observer that writes under a lock (C{twistd --logger}), as
file and queue observers do: there, Twisted's own handler hangs on most bursts and on some
single signals. The other runs log as twistd does by default.

Bounded everywhere: a process that does not exit in time is killed and reported.
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tests.support.signals import (
    churn,
    exited_within,
    handshake_once,
    listening_port,
    start,
    twistd,
)

#: Process starts, half on pomelo-epoll and half on Twisted's epoll; 1 to 2.5 s each.
RUNS = 16
#: Threads that connect, handshake and close in a loop: more than the per-address cap.
CHURNERS = 6
PER_IP_CAP = 4
DRAIN_TIMEOUT = 1.0
#: How long after the drain timeout a process may take to exit on a busy machine.
MARGIN = 9.0
#: Seconds a process may take to start listening and answer its first handshake.
STARTUP = 30.0

_log = Logger()


class SignalStressTests(SynchronousTestCase):
    def test_every_process_exits(self) -> None:
        seed = int.from_bytes(os.urandom(4), "big")
        rng = random.Random(seed)
        times: list[float] = []
        failures: list[str] = []
        self.handshakes = self.refusals = self.closes = 0
        for run in range(RUNS):
            reactor = "epoll" if run % 2 else None
            burst = rng.randrange(2, 21) if run % 4 >= 2 else 1
            locked = run // 4 % 3 != 1
            outcome = self.one_run(rng, reactor, burst, locked, Path(tempfile.mkdtemp()))
            if isinstance(outcome, str):
                setup = f"{reactor or 'pomelo-epoll'}, {burst} signals, locked log: {locked}"
                failures.append(f"run {run} ({setup}): {outcome}")
            else:
                times.append(outcome)
        _log.info(
            "signal stress (seed {seed}): {runs} runs, {exits} exited, max {max:.2f} s to exit; "
            "{handshakes} handshakes, {closes} close lines, {refusals} refusals logged",
            seed=seed,
            runs=RUNS,
            exits=len(times),
            max=max(times, default=0.0),
            handshakes=self.handshakes,
            closes=self.closes,
            refusals=self.refusals,
        )
        if failures:
            summary = "\n".join(failure.splitlines()[0] for failure in failures)
            self.fail(
                f"seed {seed}: {len(failures)} of {RUNS} runs failed:\n{summary}\n\n"
                f"the first one's log:\n{failures[0]}"
            )
        self.assertGreater(self.closes, RUNS, "too little churn to mean anything")

    def one_run(
        self, rng: random.Random, reactor: str | None, burst: int, locked: bool, where: Path
    ) -> float | str:
        """Start, churn, signal; the seconds from the first signal to the exit, or what failed."""
        log = where / "twistd.log"
        logger = ["--logger=tests.support.signals.locked_stdout"] if locked else []
        command = [
            *twistd(*logger, reactor=reactor),
            *("pomelo-connector", "--listen", "tcp:0:interface=127.0.0.1"),
            *("--drain-timeout", str(DRAIN_TIMEOUT), "--max-connections-per-ip", str(PER_IP_CAP)),
        ]
        process = start(command, log)
        self.addCleanup(exited_within, process, 0)
        port = listening_port(log, STARTUP)
        if port is None or not _answers(port, STARTUP):
            exited_within(process, 0)
            return "did not start:\n" + log.read_text()
        stop = threading.Event()
        handshakes: list[int] = []
        threads = [
            threading.Thread(target=churn, args=(port, stop, handshakes), daemon=True)
            for _ in range(CHURNERS)
        ]
        for thread in threads:
            thread.start()
        try:
            time.sleep(rng.uniform(0.05, 0.4))
            signalled = time.monotonic()
            for _ in range(burst):
                try:
                    process.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    break
                time.sleep(rng.uniform(0, 0.003))
            status = exited_within(process, DRAIN_TIMEOUT + MARGIN)
            took = time.monotonic() - signalled
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
        text = log.read_text("utf-8", "replace")
        self.handshakes += len(handshakes)
        self.refusals += text.count("refusing ")
        self.closes += text.count("connection closed: ")
        if status is None:
            return f"hung: killed after {took:.1f} s ({len(handshakes)} handshakes)\n{text}"
        if status != -signal.SIGTERM:
            return f"exit status {status}\n{text}"
        if "Server Shut Down." not in text or "Received SIGTERM, shutting down." not in text:
            return f"no clean shutdown in the log\n{text}"
        return took


def _answers(port: int, timeout: float) -> bool:
    """Whether a handshake gets an answer within C{timeout} (the reactor runs by then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if handshake_once(port):
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False
