"""Hostile (and a few merely odd) raw Twisted clients for L{tests.e2e.test_hostile}.

Each client is a plain C{Protocol}: it misbehaves in one way, records what the server sent, and
fires C{done} when its connection is gone, whoever closed it. C{check()} then says whether the
server answered as docs/security.md and protocol.md §2.3/§15.2 require: C{None} when it did, a
description of what went wrong otherwise. None of them depends on timing beyond "the server
closes the connection eventually": the test bounds that.
"""

from __future__ import annotations

import json
import random
import socket
import struct
from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from pomelo_twisted.protocol.message import MessageType, decode_message, encode_message
from pomelo_twisted.server.hybrid import HEAD_TOO_LARGE_ANSWER, NOT_A_WEBSOCKET_ANSWER
from tests.support.transports import client_frame

HANDSHAKE_BODY = json.dumps({"sys": {"type": "hostile", "version": "0.0.1"}, "user": {}}).encode()


def package(type_: int, body: bytes = b"") -> bytes:
    return bytes([type_]) + len(body).to_bytes(3, "big") + body


def request(mid: int, route: str, body: bytes = b"{}") -> bytes:
    return package(4, encode_message(MessageType.REQUEST, mid, route, body))


HANDSHAKE = package(1, HANDSHAKE_BODY)
ACK = package(2)
HEARTBEAT = package(3)
ENTRY = "connector.entryHandler.entry"
ECHO = "connector.entryHandler.echo"

UPGRADE = (
    b"GET / HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


def server_messages(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole (unmasked) server frames at the start of C{data} as (opcode, payload), and the
    rest."""
    frames = []
    offset = 0
    while len(data) - offset >= 2:
        n = data[offset + 1] & 0x7F
        head = 2
        if n == 126:
            head = 4
            n = int.from_bytes(data[offset + 2 : offset + 4], "big")
        elif n == 127:
            head = 10
            n = int.from_bytes(data[offset + 2 : offset + 10], "big")
        if len(data) - offset < head + n:
            break
        frames.append((data[offset] & 0x0F, data[offset + head : offset + head + n]))
        offset += head + n
    return frames, data[offset:]


def websocket_packages(data: bytes) -> list[tuple[int, bytes]] | None:
    """The packages in the binary messages after a 101 answer, or C{None} without one."""
    if not data.startswith(b"HTTP/1.1 101 "):
        return None
    _, _, frames = data.partition(b"\r\n\r\n")
    messages, _ = server_messages(frames)
    packages = []
    for opcode, payload in messages:
        if opcode == 2:
            packages.extend(split_packages(payload)[0])
    return packages


def split_packages(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole packages at the start of C{data}, and the rest."""
    packages = []
    offset = 0
    while len(data) - offset >= 4:
        length = int.from_bytes(data[offset + 1 : offset + 4], "big")
        if len(data) - offset - 4 < length:
            break
        packages.append((data[offset], data[offset + 4 : offset + 4 + length]))
        offset += 4 + length
    return packages, data[offset:]


def handshake_code(data: bytes) -> Any:
    """The code of the handshake answer at the start of C{data}, or why there is none."""
    packages, _ = split_packages(data)
    if not packages or packages[0][0] != 1:
        return f"no handshake answer: {data[:60]!r}"
    return json.loads(packages[0][1]).get("code")


class HostileClient(Protocol):
    """The common part: what was received, and C{done} when the connection is gone."""

    kind = "hostile"

    #: The shortest of the server's deadlines, in seconds (set by the test).
    deadline = 2.0

    def __init__(self, reactor: IReactorTime, rng: random.Random) -> None:
        self.reactor = reactor
        self.rng = rng
        self.received = b""
        self.done: Deferred[HostileClient] = Deferred()
        self.lost_reason: Failure | None = None
        self.connected_at = self.lost_at = 0.0
        #: Something worth counting apart in the summary, set by C{check()}.
        self.note: str | None = None
        self._calls: list[Any] = []

    def later(self, delay: float, f: Any, *args: Any) -> None:
        """A timer that is cancelled with the connection (no DelayedCall outlives a client)."""
        self._calls = [c for c in self._calls if c.active()]
        self._calls.append(self.reactor.callLater(delay, self._guarded, f, *args))

    def _guarded(self, f: Any, *args: Any) -> None:
        if self.lost_reason is None:
            f(*args)

    def connectionMade(self) -> None:
        self.connected_at = self.reactor.seconds()
        self.start()

    def start(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost_at = self.reactor.seconds()
        self.lost_reason = reason
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        self.done.callback(self)

    def check(self) -> str | None:
        """C{None} if the server did what it must; otherwise what it did instead."""
        return None

    def expect_nothing(self) -> str | None:
        if self.received:
            return f"expected nothing, got {self.received[:80]!r}"
        return None


class Idle(HostileClient):
    """Connects and says nothing: aborted at the first-byte deadline, nothing sent."""

    kind = "idle"

    def check(self) -> str | None:
        return self.expect_nothing()


class Garbage(HostileClient):
    """Random bytes. A first byte that is neither a package type nor an uppercase letter (nor
    TLS, on a plain port) is aborted at once with nothing sent; the rest closes at a deadline or
    on a protocol error."""

    kind = "garbage"

    def start(self) -> None:
        n = self.rng.randint(1, 300)
        self.sent = bytes(self.rng.getrandbits(8) for _ in range(n))
        self.transport.write(self.sent)

    def check(self) -> str | None:
        first = self.sent[0]
        if first == 0x16:  # a TLS record, on a port with tls=: at most a TLS alert comes back
            if self.received and self.received[0] != 0x15:
                return f"not a TLS alert: {self.received[:40]!r}"
            return None
        if not (0x01 <= first <= 0x05 or 0x41 <= first <= 0x5A):
            return self.expect_nothing()
        return None


class OversizeHeader(HostileClient):
    """A package header announcing 16 MiB (C{04 ff ff ff}, or a handshake that big): aborted
    when the header is read, nothing buffered; after a handshake, only its answers came."""

    kind = "oversize"

    def start(self) -> None:
        self.variant = self.rng.randrange(3)
        if self.variant == 0:
            self.transport.write(b"\x04\xff\xff\xff")
        elif self.variant == 1:
            self.transport.write(b"\x01\xff\xff\xff" + b"x" * self.rng.randint(0, 2000))
        else:
            self.transport.write(HANDSHAKE + ACK + b"\x04\xff\xff\xff" + b"y" * 1000)

    def check(self) -> str | None:
        if self.variant < 2:
            return self.expect_nothing()
        # The oversized header came in the same read as the handshake: aborted before the
        # answers were written, or just after them.
        if self.received and handshake_code(self.received) != 200:
            return f"bad answer before the abort: {self.received[:80]!r}"
        return None


class HalfHandshake(HostileClient):
    """Sends a handshake and never the ACK: answered, then closed at the ACK deadline."""

    kind = "half_handshake"

    def start(self) -> None:
        self.transport.write(HANDSHAKE)

    def check(self) -> str | None:
        code = handshake_code(self.received)
        if code != 200:
            return f"handshake not answered with 200: {code}"
        packages, rest = split_packages(self.received)
        if len(packages) != 1 or rest:
            return f"more than the handshake answer: {self.received[:120]!r}"
        return None


class ByteAtATime(HostileClient):
    """A valid handshake, ACK and request, one byte per reactor turn, on raw TCP or as a
    WebSocket upgrade and frames: all answered.

    Each stage has its deadline (the whole HTTP head: the first-byte one), and a reactor turn
    takes longer on a loaded machine: a client still trickling when the server closes it, at
    least a deadline after it connected, was cut off as it should be (counted apart)."""

    kind = "byte_at_a_time"

    def start(self) -> None:
        self.ws = self.rng.random() < 0.5
        stream = [HANDSHAKE, ACK, request(1, ENTRY)]
        if self.ws:
            self.data = UPGRADE + b"".join(client_frame(p) for p in stream)
        else:
            self.data = b"".join(stream)
        self.offset = 0
        self.later(0, self.step)

    def step(self) -> None:
        self.transport.write(self.data[self.offset : self.offset + 1])
        self.offset += 1
        if self.offset < len(self.data):
            self.later(0, self.step)

    def packages(self) -> list[tuple[int, bytes]]:
        if self.ws:
            return websocket_packages(self.received) or []
        return split_packages(self.received)[0]

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if any(t == 4 for t, _ in self.packages()):
            self.transport.loseConnection()  # answered: leave

    def check(self) -> str | None:
        problem = self.check_answers()
        if problem is None:
            return None
        trickling = self.offset < len(self.data)
        if trickling and self.lost_at - self.connected_at >= 0.9 * self.deadline:
            self.note = "cut off at a deadline"
            return None
        return problem

    def check_answers(self) -> str | None:
        packages = self.packages()
        types = [t for t, _ in packages]
        if types[:2] != [1, 3] or json.loads(packages[0][1]).get("code") != 200:
            return f"handshake and first heartbeat missing: {self.received[:200]!r}"
        responses = [decode_message(body) for t, body in packages if t == 4]
        if len(responses) != 1 or responses[0].id != 1:
            return f"request not answered once: {responses}"
        if json.loads(responses[0].body) != {"code": 200, "msg": "game server is ok."}:
            return f"wrong answer: {responses[0].body!r}"
        return None


class Reset(HostileClient):
    """Leaves abruptly: at once, mid-handshake, or mid-request; half of them with a real TCP
    reset (SO_LINGER 0), the rest with a plain abortive close."""

    kind = "reset"

    def start(self) -> None:
        self.variant = self.rng.randrange(4)
        if self.rng.random() < 0.5:
            sock = getattr(self.transport, "socket", None)
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if self.variant == 0:
            self.transport.abortConnection()
        elif self.variant == 1:
            self.transport.write(HANDSHAKE[: self.rng.randint(1, len(HANDSHAKE) - 1)])
            self.later(self.rng.random() * 0.2, self.transport.abortConnection)
        elif self.variant == 2:
            self.transport.write(
                HANDSHAKE + ACK + request(1, ECHO, b'{"a":' + b"1" * 500 + b"}")[:200]
            )
            self.later(self.rng.random() * 0.2, self.transport.abortConnection)
        else:
            self.transport.write(UPGRADE[: self.rng.randint(1, len(UPGRADE))])
            self.later(self.rng.random() * 0.2, self.transport.abortConnection)


class _Flooding:
    """Writes a batch every 0.25 s while its own transport's write buffer is not full (it is
    the streaming producer of its writes), so that a slow server does not make it hoard."""

    write_blocked = False

    def start_flooding(self) -> None:
        self.transport.registerProducer(self, True)
        self.flood()

    def flood(self) -> None:
        if not self.write_blocked:
            self.transport.writeSequence(self.batch())
        self.later(0.25, self.flood)

    # IPushProducer, for our own writes
    def pauseProducing(self) -> None:
        self.write_blocked = True

    def resumeProducing(self) -> None:
        self.write_blocked = False

    def stopProducing(self) -> None:
        self.write_blocked = True


class NeverReads(_Flooding, HostileClient):
    """Shakes hands, then stops reading and asks for big echoes (with heartbeats, so that no
    deadline ends it): the slow-reader cap (max_outbound_buffer) must abort it. It keeps
    writing, which is how it notices the abort (a write after the reset fails)."""

    kind = "never_reads"
    body = b'{"pad":"' + b"p" * 60_000 + b'"}'

    def start(self) -> None:
        self.transport.write(HANDSHAKE)
        self.mid = 0
        self.paused = False

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if not self.paused and handshake_code(self.received) == 200:
            self.paused = True
            self.transport.write(ACK)
            self.transport.pauseProducing()  # no more reads from here on
            self.start_flooding()

    def batch(self) -> list[bytes]:
        batch = [HEARTBEAT]
        for _ in range(40):
            self.mid += 1
            batch.append(request(self.mid, ECHO, self.body))
        return batch

    def check(self) -> str | None:
        if not self.paused:
            return f"never got to stop reading: {self.received[:80]!r}"
        return None


class NeverReadsWebSocket(_Flooding, HostileClient):
    """L{NeverReads} over WebSocket: masked frames in, the same cap on the way out."""

    kind = "never_reads_ws"
    body = NeverReads.body

    def start(self) -> None:
        self.transport.write(UPGRADE + client_frame(HANDSHAKE))
        self.mid = 0
        self.paused = False

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        packages = websocket_packages(self.received)
        if not self.paused and packages and packages[0][0] == 1:
            self.paused = True
            self.transport.write(client_frame(ACK))
            self.transport.pauseProducing()
            self.start_flooding()

    def batch(self) -> list[bytes]:
        batch = [client_frame(HEARTBEAT)]
        for _ in range(40):
            self.mid += 1
            batch.append(client_frame(request(self.mid, ECHO, self.body)))
        return batch

    def check(self) -> str | None:
        if not self.paused:
            return f"never got to stop reading: {self.received[:120]!r}"
        return None


class KickedWhileNotReading(HostileClient):
    """Stops reading, asks for about 3.6 MB of echoes, then for its own kick: the graceful
    close after the KICK cannot finish while the client reads nothing, so the server must cut
    it off (after kick_close_timeout, or at the slow-reader cap, or at once if the kernel
    buffers took everything). It writes a heartbeat every 0.25 s to notice the end."""

    kind = "kicked_not_reading"

    def start(self) -> None:
        self.transport.write(HANDSHAKE)
        self.paused = False

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if not self.paused and handshake_code(self.received) == 200:
            self.paused = True
            self.transport.pauseProducing()
            uid = b'{"uid":"kicked-%d"}' % self.rng.getrandbits(48)
            body = NeverReads.body
            self.transport.writeSequence(
                [ACK, request(1, "connector.entryHandler.bind", uid)]
                + [request(2 + i, ECHO, body) for i in range(60)]
                + [request(99, "connector.entryHandler.kick", uid)]
            )
            self.tick()

    def tick(self) -> None:
        self.transport.write(HEARTBEAT)
        self.later(0.25, self.tick)

    def check(self) -> str | None:
        if not self.paused:
            return f"never got to stop reading: {self.received[:80]!r}"
        return None


class Flooder(HostileClient):
    """Shakes hands, then pipelines 500 requests in one write, over the request rate (a burst
    of 200): every one is answered once, in order, with its id: 200, or 429 past the bucket."""

    kind = "flooder"
    count = 500

    def start(self) -> None:
        self.transport.write(
            HANDSHAKE + ACK + b"".join(request(i, ENTRY) for i in range(1, self.count + 1))
        )

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        packages, _ = split_packages(self.received)
        if sum(1 for t, _ in packages if t == 4) >= self.count:
            self.transport.loseConnection()

    def check(self) -> str | None:
        packages, rest = split_packages(self.received)
        responses = [decode_message(body) for t, body in packages if t == 4]
        ids = [r.id for r in responses]
        if ids != list(range(1, self.count + 1)) or rest:
            return f"answered ids {ids[:5]}...{ids[-5:]} ({len(ids)}), rest {rest[:20]!r}"
        codes = [json.loads(r.body)["code"] for r in responses]
        if set(codes) - {200, 429} or codes[:200] != [200] * 200:
            return f"codes {Counter(codes)}, first 200 not all 200"
        return None


class HalfClose(HostileClient):
    """Sends a handshake (maybe an ACK and a request), then half-closes (FIN) while still
    reading: the server takes the EOF as the end of the connection."""

    kind = "half_close"

    def start(self) -> None:
        self.transport.write(
            self.rng.choice([b"", HANDSHAKE, HANDSHAKE + ACK + request(1, ENTRY), UPGRADE])
        )
        self.transport.loseWriteConnection()


class HTTPJunk(HostileClient):
    """HTTP that is no WebSocket upgrade: another method (400), a plain GET (426), a head over
    max_http_head_size (431), or a head that never ends (aborted at the deadline, nothing
    sent)."""

    kind = "http"

    def start(self) -> None:
        self.variant = self.rng.randrange(5)
        if self.variant == 0:
            method = self.rng.choice([b"POST", b"PUT", b"DELETE", b"OPTIONS", b"HEAD", b"PATCH"])
            self.transport.write(
                method + b" /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            )
        elif self.variant == 1:
            self.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        elif self.variant == 2:
            self.transport.write(b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 9000)
        elif self.variant == 3:
            self.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        else:
            self.data = b"POST / HTTP/1.1\r\nHost: slow\r\n"
            self.offset = 0
            self.trickle()

    def trickle(self) -> None:
        # Slowloris: a byte every 0.3 s; the first-byte deadline covers the whole head.
        self.transport.write(self.data[self.offset : self.offset + 1])
        self.offset = (self.offset + 1) % len(self.data)
        self.later(0.3, self.trickle)

    def check(self) -> str | None:
        if self.variant == 0:
            ok = self.received == NOT_A_WEBSOCKET_ANSWER
        elif self.variant == 1:
            ok = self.received.startswith(b"HTTP/1.1 426 ")
        elif self.variant == 2:
            ok = self.received == HEAD_TOO_LARGE_ANSWER
        else:
            ok = self.received == b""
        return None if ok else f"variant {self.variant}: got {self.received[:100]!r}"


class HalfWebSocket(HostileClient):
    """Upgrades, then never sends the Pomelo handshake (or sends garbage frames, or stays
    silent after the server's close frame): the handshake deadline closes it with 1000, or
    Autobahn fails it on the garbage."""

    kind = "ws_half"

    def start(self) -> None:
        self.variant = self.rng.randrange(2)
        self.transport.write(UPGRADE)
        if self.variant == 1:
            junk = bytes(self.rng.getrandbits(8) for _ in range(self.rng.randint(1, 40)))
            self.transport.write(junk)

    def check(self) -> str | None:
        if not self.received.startswith(b"HTTP/1.1 101 "):
            return f"no upgrade: {self.received[:80]!r}"
        if self.variant == 0 and not self.received.endswith(b"\x88\x02\x03\xe8"):
            return f"no close frame 1000 at the handshake deadline: {self.received[-40:]!r}"
        return None


class TLSGarbage(HostileClient):
    """A TLS record header, then garbage (on a port with C{tls=}): the TLS layer fails it; at
    most a TLS alert comes back."""

    kind = "tls_garbage"

    def start(self) -> None:
        junk = bytes(self.rng.getrandbits(8) for _ in range(self.rng.randint(0, 300)))
        self.transport.write(b"\x16\x03\x01" + junk)

    def check(self) -> str | None:
        if self.received and self.received[0] != 0x15:
            return f"not a TLS alert: {self.received[:40]!r}"
        return None


class TLSStall(HostileClient):
    """A real ClientHello, then nothing: the TLS handshake and the first decrypted byte must
    come within a fresh first-byte deadline, so the server aborts it."""

    kind = "tls_stall"
    #: Set by the test: the first flight of a real TLS client.
    client_hello = b""

    def start(self) -> None:
        hello = self.client_hello
        self.transport.write(hello[: self.rng.randint(1, len(hello))])

    def check(self) -> str | None:
        if self.received and self.received[0] not in (0x15, 0x16):
            return f"not TLS: {self.received[:40]!r}"
        return None


#: Every kind, with how many of each the test starts, and whether it speaks TLS first (through
#: Twisted's TLS client, to a port with C{tls=}: its bytes are then the decrypted stream).
KINDS: list[tuple[type[HostileClient], int, bool]] = [
    (Idle, 120, False),
    (Garbage, 400, False),
    (OversizeHeader, 150, False),
    (HalfHandshake, 150, False),
    (ByteAtATime, 60, False),
    (Reset, 300, False),
    (NeverReads, 12, False),
    (NeverReadsWebSocket, 8, False),
    (KickedWhileNotReading, 8, False),
    (Flooder, 20, False),
    (HalfClose, 60, False),
    (HTTPJunk, 200, False),
    (HalfWebSocket, 120, False),
    (TLSGarbage, 40, False),
    (TLSStall, 30, False),
    (Idle, 15, True),
    (Garbage, 30, True),
    (HalfHandshake, 15, True),
    (ByteAtATime, 10, True),
    (NeverReads, 4, True),
    (KickedWhileNotReading, 3, True),
    (Flooder, 4, True),
    (HTTPJunk, 15, True),
]
