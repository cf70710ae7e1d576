#!/usr/bin/env python3
"""Instructions per request, in memory: a deterministic cost of the request path.

Wall-clock benchmarks on this VM move whole rounds by a third; counting instructions does not.
This runs N demo ``entry`` requests through the connector (hybrid protocol, TCP framer,
socket, commands, handler, answer, the per-turn flush) on a fake transport and a Clock, under
``valgrind --tool=callgrind``, and prints (instructions with N requests - with none) / N.

    python3 benchmarks/instructions.py                 # this checkout
    python3 benchmarks/instructions.py --source DIR    # another tree (e.g. git archive REV)

The driver imports either layout of the package (the flat modules before the re-house, or
``pomelo_twisted.server``), so one command compares a revision with the checkout.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

DRIVER = r"""
import sys
n = int(sys.argv[1])
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
try:
    from pomelo_twisted.server.connector import Connector
    from pomelo_twisted.server.config import ConnectorConfig
    from pomelo_twisted.server.hybrid import PomeloConnectorFactory
except ImportError:
    from pomelo_twisted.connector import Connector
    from pomelo_twisted.config import ConnectorConfig
    from pomelo_twisted.hybrid import PomeloConnectorFactory
from pomelo_twisted.demo import make_app

clock = Clock()
# The limits off, as benchmarks/run.py runs the server (a revision may lack the per-IP one).
try:
    config = ConnectorConfig(
        heartbeat=0, max_requests_per_second=None, max_requests_per_second_per_ip=None
    )
except TypeError:
    config = ConnectorConfig(heartbeat=0, max_requests_per_second=None)
connector = Connector(make_app(), clock, config)
factory = PomeloConnectorFactory(connector)
peer = IPv4Address("TCP", "127.0.0.1", 40000)
protocol = factory.buildProtocol(peer)
transport = StringTransport(peerAddress=peer)
protocol.makeConnection(transport)
body = b'{"sys":{"type":"bench","version":"1"}}'
protocol.dataReceived(bytes([1, 0, 0, len(body)]) + body)
clock.advance(0)
protocol.dataReceived(bytes([2, 0, 0, 0]))
clock.advance(0)
transport.clear()
# a REQUEST (flag 0) with id 1 and the entry route by its dictionary code, body {}
code = connector.dictionary.route_to_code("connector.entryHandler.entry")
message = bytes([0x01, 0x01, code >> 8, code & 0xFF]) + b"{}"
package = bytes([4, 0, 0, len(message)]) + message
for _ in range(n):
    protocol.dataReceived(package)
    clock.advance(0)
assert transport.value().count(b'"code":200') == n, transport.value()[:200]
"""


def instructions(source: Path, python: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        driver = Path(scratch) / "driver.py"
        driver.write_text(DRIVER)
        env = {**os.environ, "PYTHONPATH": str(source), "PYTHONHASHSEED": "0"}
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                python,
                str(driver),
                str(n),
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=1800,
        )
        text = out.read_text()
    match = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(
        r"^totals:\s+(\d+)", text, re.M
    )
    assert match, "no total in callgrind's output"
    return int(match.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", default=str(Path(__file__).resolve().parent.parent))
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--requests", type=int, default=2000)
    a = p.parse_args()
    source = Path(a.source).resolve()
    base = instructions(source, a.python, 0)
    full = instructions(source, a.python, a.requests)
    print(
        f"{source}: {(full - base) / a.requests:,.0f} instructions per request "
        f"({a.requests} requests)"
    )


if __name__ == "__main__":
    main()
