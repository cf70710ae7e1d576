"""The bare-Twisted ceiling: the least a Twisted server can do per Pomelo request.

A stock L{Protocol} on the epoll reactor (or an Autobahn L{WebSocketServerProtocol} for
``--transport ws``) that speaks just enough Pomelo for the load generator:

  - a HANDSHAKE gets one fixed answer (heartbeat 3 s and a one-route dictionary, so clients
    compress the route exactly as they do against the real servers);
  - the ACK gets a HEARTBEAT, as Pomelo sends one on the ACK; each HEARTBEAT gets one back;
  - each DATA request gets the fixed response body C{{"code":200,"msg":"game server is ok."}}
    under the request's id. Parsing stops at the id: the route and body are never read.

No sessions, no timers, no logging, no validation beyond the package header. Answers to one
read go out in one write (TCP) or one binary message per package (WebSocket, as Pomelo does).
Whatever a real Twisted connector does on top of this costs extra, so this is the ceiling
for any of them on this machine.

    python ceiling.py --port 14020 --transport tcp
    python ceiling.py --port 14030 --transport ws
"""

from __future__ import annotations

import argparse
import json
import sys

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor  # noqa: E402
from twisted.internet.endpoints import serverFromString  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402

ROUTE = "connector.entryHandler.entry"
BODY = b'{"code":200,"msg":"game server is ok."}'
HEARTBEAT = b"\x03\x00\x00\x00"


def package(ptype: int, body: bytes) -> bytes:
    n = len(body)
    return bytes((ptype, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF)) + body


def handshake_answer(heartbeat: int) -> bytes:
    sys_ = {
        "heartbeat": heartbeat,
        "dict": {ROUTE: 1},
        "routeToCode": {ROUTE: 1},
        "codeToRoute": {"1": ROUTE},
        "dictVersion": "ceiling",
        "useDict": True,
    }
    return package(1, json.dumps({"code": 200, "sys": sys_}, separators=(",", ":")).encode())


# Response = DATA header + flag 0x04 (RESPONSE) + id varint + BODY. Precomputed for 1-byte ids.
_SMALL = [package(4, bytes((0x04, i)) + BODY) for i in range(128)]


def response(msg_id: int) -> bytes:
    if msg_id < 128:
        return _SMALL[msg_id]
    ident = bytearray()
    while True:
        b = msg_id & 0x7F
        msg_id >>= 7
        if msg_id:
            ident.append(b | 0x80)
        else:
            ident.append(b)
            break
    return package(4, b"\x04" + bytes(ident) + BODY)


def answer(data: bytes, start: int, hs: bytes, out: list[bytes]) -> int:
    """Append the answers to the whole packages in data[start:]; return where the rest starts."""
    end = len(data)
    off = start
    while end - off >= 4:
        ptype = data[off]
        blen = (data[off + 1] << 16) | (data[off + 2] << 8) | data[off + 3]
        nxt = off + 4 + blen
        if nxt > end:
            break
        if ptype == 4:
            flag = data[off + 4]
            if flag >> 1 & 7 == 0:  # REQUEST: read the id varint, nothing else
                i = off + 5
                b = data[i]
                msg_id = b & 0x7F
                shift = 7
                while b & 0x80:
                    i += 1
                    b = data[i]
                    msg_id |= (b & 0x7F) << shift
                    shift += 7
                if msg_id:
                    out.append(response(msg_id))
        elif ptype == 3 or ptype == 2:
            out.append(HEARTBEAT)
        elif ptype == 1:
            out.append(hs)
        else:
            raise ValueError(f"package type {ptype}")
        off = nxt
    return off


class CeilingTCP(Protocol):
    _buf = b""

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        if self._buf:
            data = self._buf + data
        out: list[bytes] = []
        try:
            off = answer(data, 0, self.factory.hs, out)
        except (ValueError, IndexError):
            self.transport.abortConnection()
            return
        self._buf = data[off:]
        if out:
            self.transport.write(b"".join(out))


def tcp_factory(hs: bytes) -> Factory:
    f = Factory.forProtocol(CeilingTCP)
    f.hs = hs
    return f


def ws_factory(hs: bytes) -> Factory:
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    class CeilingWS(WebSocketServerProtocol):
        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            out: list[bytes] = []
            try:
                off = answer(payload, 0, hs, out)
            except (ValueError, IndexError):
                off = -1
            if off != len(payload):
                self.dropConnection(abort=True)
                return
            for pkg in out:
                self.sendMessage(pkg, isBinary=True)

    f = WebSocketServerFactory(reactor=reactor)
    f.protocol = CeilingWS
    f.setProtocolOptions(autoPingInterval=0, failByDrop=True, webStatus=False)
    return f


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=14020)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--transport", choices=["tcp", "ws"], default="tcp")
    p.add_argument("--heartbeat", type=int, default=3)
    p.add_argument("--backlog", type=int, default=511)
    a = p.parse_args()
    hs = handshake_answer(a.heartbeat)
    factory = tcp_factory(hs) if a.transport == "tcp" else ws_factory(hs)
    desc = f"tcp:{a.port}:interface={a.host}:backlog={a.backlog}"
    d = serverFromString(reactor, desc).listen(factory)

    def ready(port: object) -> None:
        print(f"ceiling: {a.transport} on {a.host}:{a.port} ({type(reactor).__name__})",
              file=sys.stderr, flush=True)

    def failed(f: object) -> None:
        print(f"ceiling: cannot listen: {f}", file=sys.stderr, flush=True)
        reactor.stop()

    d.addCallbacks(ready, failed)
    reactor.run()


if __name__ == "__main__":
    main()
