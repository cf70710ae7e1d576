"""Property-based fuzzing of everything that parses client bytes, through the real protocol objects.

Every example builds a fresh connector on a C{task.Clock} and one connection the way a listening
port does: C{PomeloConnectorFactory.buildProtocol} -> L{HybridProtocol} (admission, the sniffer)
-> the raw TCP framer or Autobahn (and the connector's own WebSocket frame reader), or TLS first
-> L{HybridSocket}. The client's bytes arrive in arbitrary chunks (one byte at a time included),
sometimes with pauses, sometimes with the client ceasing to read part-way; then the client goes
quiet, drops the connection, or lingers, and the clock is moved from deadline to deadline: first
byte, handshake, ACK, heartbeat, the abort after a graceful close, Autobahn's opening and
closing handshake timeouts.

What must hold for every example (issue #4, protocol.md §15.2 and §20 item 43):

  - no exception escapes a protocol callback or a timer, and nothing is logged as a failure;
  - the connection is never stuck: with a silent client, the server has closed the transport
    once every deadline has passed, and aborted it if the client stopped reading (a graceful
    close cannot finish then);
  - once the transport reports the loss, nothing is left: no socket, no session, no admitted
    connection, no per-address count, no timer of ours (Autobahn's own closing-handshake timer
    may outlive the connection by a second, and must then fire harmlessly);
  - what the server wrote is well formed and is what the classification calls for (nothing for
    garbage, the 400/431 answers, whole packages starting with the handshake answer on TCP,
    an HTTP answer then unmasked frames of whole packages on WebSocket);
  - valid requests are each answered once, in order, whatever the split and the request rate;
  - the same WebSocket frames give the same answers in one read (the connector's own frame
    reader) and cut anywhere (Autobahn's).

The strategies: arbitrary bytes; "plausible" streams (package headers with random types,
lengths and bodies; a valid handshake and ACK, then garbage; requests with side effects; HTTP
request heads with random methods, versions and headers; a WebSocket upgrade, then random
frames: masked or not, fragmented, control frames, text, reserved bits, lying and oversized
lengths); TLS records on a port with C{tls=}, and a real TLS session carrying any of the others.

The tests marked C{todo} show bugs found this way, reported with their reproduction.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import ssl, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.demo import make_app
from pomelo_twisted.protocol.message import (
    MessageType,
    decode_message,
    encode_message,
    encode_varint,
)
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.hybrid import (
    HEAD_TOO_LARGE_ANSWER,
    NOT_A_WEBSOCKET_ANSWER,
    PomeloConnectorFactory,
    load_tls_options,
)
from pomelo_twisted.server.limits import OutboundGuard
from pomelo_twisted.server.websocket import PomeloWebSocketProtocol
from tests.support.tls import make_certificate

PEER = IPv4Address("TCP", "192.0.2.7", 50000)

# --- configurations ---------------------------------------------------------------------------

#: The defaults: dictionary and protobuf on, every limit and deadline as shipped.
DEFAULT = ConnectorConfig()
#: Small limits, so that random lengths and rates cross them often.
TIGHT = ConnectorConfig(
    heartbeat=1,
    use_dict=True,
    use_protobuf=True,
    max_package_size=300,
    max_handshake_size=120,
    max_http_head_size=200,
    first_byte_timeout=2,
    handshake_timeout=3,
    ack_timeout=2,
    kick_close_timeout=1,
    max_outbound_buffer=600,
    max_requests_per_second=2,
    request_burst=2,
)
#: JSON only (no dictionary, no protobuf), as protocol.md §19.
PLAIN = ConnectorConfig(use_dict=False, use_protobuf=False, heartbeat=2, heartbeat_timeout=5)

configs = st.sampled_from([DEFAULT, TIGHT, PLAIN])

#: However the client behaves, the server must have closed the connection within this much clock
#: time after the client went quiet (the longest chain of default deadlines is about 50 s).
HORIZON = 300.0
#: And within this many timer firings (a timer that keeps re-arming itself is a stuck state too).
MAX_STEPS = 500

# --- client bytes -----------------------------------------------------------------------------

ENTRY = "connector.entryHandler.entry"
ROUTES = [
    ENTRY,
    "connector.entryHandler.echo",
    "connector.entryHandler.bind",
    "connector.entryHandler.push",
    "connector.entryHandler.notify",
    "connector.entryHandler.broadcast",
    "connector.entryHandler.kick",
    "connector.entryHandler.proto",
    "connector.entryHandler.missing",
    "connector.entryHandler.constructor",
    "connector.entryHandler.__init__",
    "connector.entryHandler._app",
    "connector.x",
    "a.b.c.d",
    "",
    "\u00e9\u00e8.\U0001f600.x",
]


def package(type_: int, body: bytes = b"", length: int | None = None) -> bytes:
    """A package header (with C{length}, the real one by default) and C{body}."""
    n = len(body) if length is None else length
    return bytes([type_ & 0xFF]) + (n & 0xFFFFFF).to_bytes(3, "big") + body


def handshake_body(sys_: Any = None, user: Any = None) -> bytes:
    body = {"sys": {"type": "fuzz", "version": "0.1.0"} if sys_ is None else sys_, "user": user}
    return json.dumps(body).encode()


HANDSHAKE = package(1, handshake_body(user={}))
ACK = package(2)
HEARTBEAT = package(3)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def json_bytes(draw: Any) -> bytes:
    """JSON text as Python writes it (NaN and huge integers included), sometimes damaged."""
    value = draw(json_values)
    text = json.dumps(value).encode()
    if draw(st.integers(0, 5)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


def varint_bytes() -> st.SearchStrategy[bytes]:
    """Message ids: valid varints (over 32 bits too), overlong and unterminated ones."""
    return st.one_of(
        st.integers(0, 2**40).map(encode_varint),
        st.binary(min_size=1, max_size=7).map(lambda b: bytes(x | 0x80 for x in b)),
        st.binary(max_size=3),
    )


@st.composite
def message_bytes(draw: Any) -> bytes:
    """The body of a DATA package: a request or notify, valid or not."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=40))
    route = draw(st.sampled_from(ROUTES))
    body = draw(st.one_of(json_bytes(), st.binary(max_size=30), st.just(b"{}")))
    kind = draw(st.integers(0, 9))
    if kind < 6:  # well formed
        mtype = MessageType.REQUEST if kind < 4 else MessageType.NOTIFY
        mid = draw(st.integers(1, 2**32 - 1)) if mtype is MessageType.REQUEST else 0
        compress = draw(st.booleans())
        if compress:
            return encode_message(mtype, mid, draw(st.integers(1, 20)), body)
        return encode_message(mtype, mid, route, body)
    # Hand made: any flag byte (gzip bit, other types), lying route lengths, odd ids.
    flag = draw(st.integers(0, 255))
    raw_route = route.encode()
    out = bytes([flag]) + draw(varint_bytes())
    if flag & 1:
        out += draw(st.binary(min_size=0, max_size=2))
    else:
        out += bytes([draw(st.integers(0, 255)) if draw(st.booleans()) else len(raw_route) & 0xFF])
        out += raw_route
    return out + body


@st.composite
def protobuf_message(draw: Any) -> bytes:
    """A request on the demo's protobuf route whose body is protobuf-shaped garbage."""
    fields = []
    for _ in range(draw(st.integers(0, 6))):
        tag = draw(st.integers(0, 12))
        wire = draw(st.integers(0, 7))
        fields.append(encode_varint((tag << 3) | wire))
        fields.append(
            draw(st.one_of(st.integers(0, 2**70).map(encode_varint), st.binary(max_size=9)))
        )
    return encode_message(
        MessageType.REQUEST,
        draw(st.integers(1, 1000)),
        "connector.entryHandler.proto",
        b"".join(fields),
    )


@st.composite
def handshake_package(draw: Any) -> bytes:
    """A handshake: valid, odd (sys falsy, versions, rsa), not JSON, or lying about its size."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return HANDSHAKE
    if kind == 1:
        fields = draw(
            st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "type": json_values,
                        "version": json_values,
                        "dictVersion": json_values,
                        "protoVersion": json_values,
                        "rsa": json_values,
                    },
                ),
            )
        )
        return package(1, handshake_body(fields, draw(json_values)))
    if kind == 2:
        return package(1, draw(json_bytes()))
    if kind == 3:
        return package(1, draw(st.binary(max_size=40)))
    body = handshake_body(user=draw(json_values))
    return package(1, body, draw(st.integers(0, 0xFFFFFF)))


def _request(mid: int, route: str, body: bytes) -> bytes:
    return package(
        4, encode_message(MessageType.REQUEST, mid, "connector.entryHandler." + route, body)
    )


#: Requests with side effects: binding, kicking that uid (a KICK, then a graceful close), pushes,
#: broadcasts, and echoes big enough to fill TIGHT's outbound cap when the client stops reading.
SCRIPTED = [
    _request(90, "bind", b'{"uid":"u1"}'),
    _request(91, "bind", b'{"uid":"u1"}') + _request(92, "kick", b'{"uid":"u1","reason":"x"}'),
    _request(93, "kick", b'{"uid":"u1"}'),
    _request(94, "push", b'{"a":1}'),
    _request(95, "broadcast", b'{"text":"hi"}'),
    package(4, encode_message(MessageType.NOTIFY, 0, "connector.entryHandler.notify", b"{}")),
    _request(96, "echo", b'{"x":"' + b"e" * 200 + b'"}') * 4,
    _request(97, "proto", b"\x08\x01\x12\x01a"),
]


@st.composite
def any_package(draw: Any) -> bytes:
    """One package: any type byte (weighted to 1-5), any length, any body."""
    if draw(st.integers(0, 7)) == 0:
        return draw(st.sampled_from(SCRIPTED))
    type_ = draw(st.one_of(st.integers(1, 5), st.integers(1, 5), st.integers(0, 255)))
    if type_ == 1:
        return draw(handshake_package())
    if type_ == 4:
        body = draw(st.one_of(message_bytes(), protobuf_message()))
    elif type_ in (2, 3):
        body = draw(st.one_of(st.just(b""), st.binary(max_size=8)))
    else:
        body = draw(st.binary(max_size=30))
    length = None
    if draw(st.integers(0, 4)) == 0:  # lie about the length
        length = draw(st.one_of(st.integers(0, 600), st.just(0xFFFFFF), st.integers(0, 0xFFFFFF)))
    return package(type_, body, length)


@st.composite
def package_stream(draw: Any) -> bytes:
    """A raw TCP stream: often a valid handshake and ACK first, then packages, then garbage."""
    prefix = draw(
        st.sampled_from(
            [b"", HANDSHAKE, HANDSHAKE + ACK, HANDSHAKE + ACK, HANDSHAKE + ACK + HEARTBEAT]
        )
    )
    packages = draw(st.lists(any_package(), max_size=6))
    tail = draw(st.one_of(st.just(b""), st.binary(max_size=20)))
    return prefix + b"".join(packages) + tail


@st.composite
def mutated(draw: Any, base: st.SearchStrategy[bytes]) -> bytes:
    """C{base}, sometimes with a few bytes flipped, inserted, deleted or cut off."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 3)) if draw(st.booleans()) else 0):
        op = draw(st.integers(0, 3))
        at = draw(st.integers(0, len(data)))
        if op == 0 and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == 2:
            del data[at : at + draw(st.integers(1, 4))]
        else:
            del data[at:]
    return bytes(data)


# HTTP

UPGRADE_LINES = [
    b"Host: 127.0.0.1:3010",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Version: 13",
]
EXTRA_LINES = [
    b"Sec-WebSocket-Protocol: pomelo, binary",
    b"Sec-WebSocket-Protocol: ",
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
    b"Sec-WebSocket-Extensions: x-webkit-deflate-frame",
    b"Origin: http://example.com",
    b"Origin: null",
    b"Cookie: a=b",
    b"Connection: keep-alive, Upgrade",
    b"Upgrade: WebSocket",
    b"Sec-WebSocket-Version: 8",
    b"Sec-WebSocket-Key: short",
    b"Host: ",
    b"X-Forwarded-For: 10.0.0.1",
    b"Content-Length: 5",
    b"Transfer-Encoding: chunked",
    b": no name",
    b"no colon",
    b" folded continuation",
    b"X-Latin1: \xe9\xff\x00",
]

header_line = st.one_of(
    st.sampled_from(UPGRADE_LINES + EXTRA_LINES),
    st.builds(
        lambda name, value: name + b": " + value,
        st.binary(min_size=1, max_size=12),
        st.binary(max_size=30),
    ),
    st.text(max_size=30).map(lambda s: s.encode("utf-8")),
)


@st.composite
def http_head(draw: Any) -> bytes:
    """An HTTP request head: any method, target, version and headers; often a real upgrade."""
    method = draw(
        st.one_of(
            st.sampled_from(
                [b"GET", b"GET", b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"]
            ),
            st.sampled_from([b"G", b"GE", b"GETX", b"CONNECT", b"PRI"]),
            st.binary(min_size=1, max_size=8).map(lambda b: bytes([0x41 + b[0] % 26]) + b[1:]),
        )
    )
    target = draw(
        st.sampled_from([b"/", b"/ws", b"*", b"", b"http://x/", b"/%00", b"/" + b"a" * 150])
    )
    version = draw(
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b""])
    )
    if draw(st.booleans()):
        lines = list(UPGRADE_LINES)
        for _ in range(draw(st.integers(0, 3))):
            op = draw(st.integers(0, 2))
            if op == 0 and lines:
                del lines[draw(st.integers(0, len(lines) - 1))]
            else:
                lines.insert(draw(st.integers(0, len(lines))), draw(header_line))
    else:
        lines = draw(st.lists(header_line, max_size=6))
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
    head = method + b" " + target + b" " + version + eol + b"".join(line + eol for line in lines)
    end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"", b"\n", b"\r"]))
    return head + end


@st.composite
def http_stream(draw: Any) -> bytes:
    return draw(mutated(http_head())) + draw(
        st.one_of(st.just(b""), st.binary(max_size=20), package_stream())
    )


# WebSocket

UPGRADE = b"GET / HTTP/1.1\r\n" + b"".join(line + b"\r\n" for line in UPGRADE_LINES) + b"\r\n"


def ws_frame(
    payload: bytes,
    opcode: int = 2,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x12\x34\x56\x78",
    length: int | None = None,
    length_form: int = 0,
) -> bytes:
    """One frame. C{length} lies about the payload length; C{length_form} forces the 16-bit (1)
    or 64-bit (2) length encoding even for short payloads."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)
    mask_bit = 0x80 if mask is not None else 0
    if length_form == 0 and n < 126:
        head = bytes([first, mask_bit | n])
    elif length_form <= 1 and n < 0x10000:
        head = bytes([first, mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, mask_bit | 127]) + (n & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


ws_payload = st.one_of(
    st.just(HANDSHAKE),
    st.just(ACK),
    st.just(HEARTBEAT),
    any_package(),
    st.lists(any_package(), min_size=2, max_size=3).map(b"".join),  # several per message
    package_stream(),
    st.binary(max_size=40),
)

close_payload = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=1),
    st.builds(
        lambda code, reason: code.to_bytes(2, "big") + reason,
        st.sampled_from(
            [1000, 1001, 1002, 1003, 1005, 1006, 1009, 1015, 999, 2999, 3000, 4999, 5000, 65535]
        ),
        st.one_of(st.just(b""), st.text(max_size=10).map(str.encode), st.binary(max_size=10)),
    ),
    st.binary(min_size=126, max_size=130),  # too long for a control frame
)


@st.composite
def frame_group(draw: Any) -> bytes:
    """A message (maybe fragmented, maybe with a control frame between fragments) or a control
    frame, or a frame with random header bits and lying lengths."""
    mask = draw(
        st.one_of(st.binary(min_size=4, max_size=4), st.just(b"\x00\x00\x00\x00"), st.none())
    )
    if draw(st.integers(0, 9)) == 0:
        mask = None  # unmasked client frames are a protocol error
    elif mask is None:
        mask = b"\x12\x34\x56\x78"
    kind = draw(st.integers(0, 9))
    if kind <= 3:  # one binary (or text) message
        opcode = draw(st.sampled_from([2, 2, 2, 1]))
        return ws_frame(draw(ws_payload), opcode, mask=mask, length_form=draw(st.integers(0, 2)))
    if kind <= 5:  # fragmented
        payload = draw(ws_payload)
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), min_size=1, max_size=3)))
        parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        frames = []
        for i, part in enumerate(parts):
            opcode = draw(st.sampled_from([2, 1])) if i == 0 else 0
            frames.append(ws_frame(part, opcode, fin=i == len(parts) - 1, mask=mask))
            if draw(st.integers(0, 4)) == 0:
                frames.append(ws_frame(draw(st.binary(max_size=8)), 9, mask=mask))  # a ping between
        if draw(st.integers(0, 5)) == 0:
            frames.reverse()
        return b"".join(frames)
    if kind == 6:  # ping or pong
        return ws_frame(draw(st.binary(max_size=130)), draw(st.sampled_from([9, 10])), mask=mask)
    if kind == 7:  # close
        return ws_frame(draw(close_payload), 8, mask=mask)
    # Anything: reserved opcodes and bits, lying or huge lengths.
    return ws_frame(
        draw(st.binary(max_size=20)),
        draw(st.integers(0, 15)),
        fin=draw(st.booleans()),
        rsv=draw(st.integers(0, 7)),
        mask=mask,
        length=draw(
            st.one_of(
                st.integers(0, 200), st.integers(0, 2**64 - 1), st.just(2**63), st.just(70000)
            )
        ),
        length_form=draw(st.integers(0, 2)),
    )


@st.composite
def ws_stream(draw: Any) -> bytes:
    """An upgrade (usually the canonical one), a handshake and ACK maybe, then random frames."""
    upgrade = UPGRADE if draw(st.integers(0, 3)) else draw(http_head())
    prefix = draw(
        st.sampled_from(
            [
                b"",
                ws_frame(HANDSHAKE),
                ws_frame(HANDSHAKE) + ws_frame(ACK),
                ws_frame(HANDSHAKE) + ws_frame(ACK),
            ]
        )
    )
    frames = draw(st.lists(frame_group(), max_size=5))
    return upgrade + draw(mutated(st.just(prefix + b"".join(frames))))


# Splits and pacing


@st.composite
def split(draw: Any, data: bytes, pauses: bool = False) -> list[tuple[bytes, float]]:
    """C{data} cut at arbitrary points (one byte at a time included), each chunk followed by a
    pause: 0 (the end of a reactor turn) unless C{pauses}."""
    if data and draw(st.integers(0, 9)) == 0:
        cuts = list(range(1, len(data)))  # byte at a time
    else:
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data))), max_size=8))))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    chunks = [c for c in chunks if c]  # a real transport never delivers b""
    if not pauses or not chunks:
        return [(chunk, 0.0) for chunk in chunks]
    # A few pauses, at chunks picked at random (drawing one per chunk is slow byte by byte).
    delays = [0.0] * len(chunks)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(chunks) - 1))
        delays[at] = draw(st.sampled_from([0.4, 1.5, 4.0, 20.0]))
    return list(zip(chunks, delays, strict=True))


#: How the client ends: silent (waits for the server), drops the connection, or stays silent and
#: lingers after the server closed (the close only takes effect much later).
endings = st.sampled_from(["silent", "silent", "drop", "linger"])


# --- the harness ------------------------------------------------------------------------------


class FuzzTransport(StringTransport):
    """A StringTransport that records when the server closed it, and tolerates what Autobahn and
    the TCP protocol call on real sockets (C{unregisterProducer} with no producer, noDelay).

    @ivar reader_stopped: the client stopped reading, so the write buffer stays full: a graceful
        close (C{loseConnection}) then never completes, only an abort ends the connection.
    """

    closed_at: float | None = None
    lost = False
    reader_stopped = False

    def __init__(self, clock: task.Clock) -> None:
        super().__init__(peerAddress=PEER)
        self.clock = clock

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def loseConnection(self) -> None:
        if self.closed_at is None:
            self.closed_at = self.clock.seconds()
        super().loseConnection()

    def abortConnection(self) -> None:
        if self.closed_at is None:
            self.closed_at = self.clock.seconds()
        super().abortConnection()

    def write(self, data: bytes) -> None:
        if not self.lost:  # a real transport drops writes once the connection is gone
            super().write(data)


@dataclass
class Outcome:
    """What one example did, for the checks and for a readable failure."""

    config: ConnectorConfig
    fed: bytes = b""
    output: bytes = b""
    closed_at: float | None = None
    aborted: bool = False
    ending: str = ""
    #: Stuck in the state of the bug L{WebSocketTests.test_close_frame_from_a_stopped_reader}
    #: shows (reported): tolerated here so that the property keeps looking for other bugs.
    known_bug: bool = False


class FuzzCase(SynchronousTestCase):
    """Runs examples through a fresh connector each."""

    def new_connector(
        self, config: ConnectorConfig, tls: Any = None
    ) -> tuple[task.Clock, Connector, PomeloConnectorFactory]:
        clock = task.Clock()
        connector = Connector(make_app(), clock, config)
        return clock, connector, PomeloConnectorFactory(connector, tls=tls)

    def drain(
        self,
        clock: task.Clock,
        closed: Any,
        pump: iosim.IOPump | None = None,
        known_bug: Any = None,
    ) -> bool:
        """Move the clock from timer to timer until C{closed()}; fail if that never happens,
        unless C{known_bug()} says the connection is stuck in the state of a reported bug (then
        return C{False})."""
        start = clock.seconds()
        for _ in range(MAX_STEPS):
            if closed():
                return True
            calls = clock.getDelayedCalls()
            if not calls:
                break
            when = min(call.getTime() for call in calls)
            if when - start > HORIZON:
                break
            clock.advance(max(0.0, when - clock.seconds()))
            if pump is not None:
                pump.flush()
        if closed():
            return True
        if known_bug is not None and known_bug():
            return False
        pending = sorted((c.getTime() - start, repr(c.func)) for c in clock.getDelayedCalls())
        self.fail(f"stuck: the server never closed the connection; pending timers {pending}")

    @staticmethod
    def linger(clock: task.Clock, seconds: float) -> None:
        """Fire, in order, every timer due in the next C{seconds}."""
        end = clock.seconds() + seconds
        for _ in range(MAX_STEPS):
            calls = clock.getDelayedCalls()
            when = min((c.getTime() for c in calls), default=end + 1)
            if when > end:
                return
            clock.advance(max(0.0, when - clock.seconds()))

    def run_example(
        self,
        config: ConnectorConfig,
        chunks: list[tuple[bytes, float]],
        ending: str,
        pause_reader_after: int | None = None,
        tls: Any = None,
    ) -> Outcome:
        """Feed C{chunks} to one connection, end it as C{ending} says, and check the aftermath."""
        clock, connector, factory = self.new_connector(config, tls)
        outcome = Outcome(config, ending=ending)
        with capturedLogs() as events:
            transport = FuzzTransport(clock)
            protocol = factory.buildProtocol(PEER)
            protocol.makeConnection(transport)
            fed = []
            for i, (chunk, delay) in enumerate(chunks):
                if transport.disconnecting:
                    break  # Twisted stops reading once the connection is being closed
                protocol.dataReceived(chunk)
                fed.append(chunk)
                clock.advance(0)  # the end of the reactor turn: the connector's writes
                if pause_reader_after == i and isinstance(transport.producer, OutboundGuard):
                    # The client stops reading: its transport's buffer is full from now on.
                    transport.reader_stopped = True
                    transport.producer.pauseProducing()
                if delay:
                    clock.advance(delay)
            outcome.fed = b"".join(fed)

            if ending == "drop" and not transport.disconnecting:
                transport.lost = True
                protocol.connectionLost(Failure(ConnectionLost("the client went away")))
            else:
                # Closed: aborted, or closed gracefully to a client that still reads (one that
                # does not must be aborted in the end: its close cannot finish).
                outcome.known_bug = not self.drain(
                    clock,
                    lambda: (
                        transport.disconnected
                        or (transport.disconnecting and not transport.reader_stopped)
                    ),
                    known_bug=lambda: autobahn_dropped_gracefully(protocol, transport),
                )
                if ending == "linger":
                    # The close takes a while to get through (a full socket buffer): the
                    # timers due in the next minute fire first.
                    self.linger(clock, 60.0)
                transport.lost = True
                reason = ConnectionAborted() if transport.disconnected else ConnectionDone()
                protocol.connectionLost(Failure(reason))
            self.settle(clock)
            outcome.output = transport.value()
            outcome.closed_at = transport.closed_at
            outcome.aborted = transport.disconnected
        self.assertClean(connector, clock, events)
        return outcome

    def settle(self, clock: task.Clock) -> None:
        """After the connection is lost no timer is left: ours are cancelled with the
        connection, and so is Autobahn's closing-handshake deadline (ExactTimersMixin), which
        Autobahn itself leaves armed."""
        clock.advance(0)
        self.assertEqual(clock.getDelayedCalls(), [], "timers left")

    def assertClean(self, connector: Connector, clock: task.Clock, events: list[Any]) -> None:
        """Nothing logged as a failure, and nothing left of the connection."""
        failures = [
            formatEvent(e) + "\n" + e["log_failure"].getTraceback()
            for e in events
            if "log_failure" in e
        ]
        self.assertEqual(failures, [], "failures were logged")
        self.assertEqual(connector.sockets, set(), "sockets left")
        self.assertEqual(connector.session_service.sessions_count, 0, "sessions left")
        self.assertEqual(connector.connection_count, 0, "connection count not back to 0")
        self.assertEqual(
            connector.connections_from(PEER.host), 0, "per-address count not back to 0"
        )
        self.assertEqual(clock.getDelayedCalls(), [], "timers left")

    # The checks of what the server wrote.

    def check_output(
        self, outcome: Outcome, chunks: list[tuple[bytes, float]], tls: bool = False
    ) -> None:
        """The server's bytes match the classification of the client's first bytes."""
        config = outcome.config
        stream = outcome.fed
        if not stream:
            self.assertEqual(outcome.output, b"")
            return
        first = stream[0]
        if first == 0x16 and tls:
            return  # TLS records: the decrypted side is checked by the TLS tests
        if 0x01 <= first <= 0x05:
            self.check_packages(outcome.output, outcome)
            return
        if not 0x41 <= first <= 0x5A:
            # Neither a package type nor HTTP: aborted on the first read, nothing sent.
            self.assertEqual(outcome.output, b"")
            self.assertTrue(outcome.aborted)
            self.assertEqual(outcome.closed_at, 0.0)
            return
        verdict = http_verdict(stream, config.max_http_head_size)
        timely = sum(delay for _, delay in chunks[:-1]) < (config.first_byte_timeout or 1e9)
        if verdict == "pending":
            self.assertEqual(outcome.output, b"")
            if outcome.ending != "drop":
                self.assertTrue(outcome.aborted)  # the first-byte deadline
        elif not timely:
            return  # the deadline may have struck first
        elif verdict == "400":
            self.assertEqual(outcome.output, NOT_A_WEBSOCKET_ANSWER)
            self.assertFalse(outcome.aborted)
        elif verdict == "431":
            self.assertEqual(outcome.output, HEAD_TOO_LARGE_ANSWER)
            self.assertFalse(outcome.aborted)
        else:
            self.check_websocket(outcome)

    def check_packages(self, output: bytes, outcome: Outcome) -> None:
        """Whole server packages: a handshake answer first, then heartbeats, data and a kick."""
        packages = parse_packages(output)
        if not packages:
            return
        types = [t for t, _ in packages]
        self.assertEqual(types[0], 1, f"first package is not the handshake answer: {packages[:3]}")
        self.assertNotIn(1, types[1:], "two handshake answers")
        self.assertTrue(set(types) <= {1, 3, 4, 5}, types)
        answer = json.loads(packages[0][1])
        if answer["code"] != 200:
            self.assertIn(answer["code"], (500, 501))
            self.assertEqual(len(packages), 1, "packages after a refused handshake")
        if 5 in types:
            self.assertEqual(types.index(5), len(types) - 1, "packages after a KICK")

    def check_websocket(self, outcome: Outcome) -> None:
        """An HTTP answer; after a 101, unmasked frames: binary ones of whole packages."""
        output = outcome.output
        self.assertTrue(output.startswith(b"HTTP/1.1 "), output[:80])
        head, sep, rest = output.partition(b"\r\n\r\n")
        self.assertTrue(sep, output[:200])
        if not head.startswith(b"HTTP/1.1 101 "):
            self.assertEqual(rest, b"", "bytes after a refused upgrade")
            return
        frames = parse_frames(rest)
        data = b""
        for i, (fin, rsv, opcode, payload) in enumerate(frames):
            self.assertTrue(fin and not rsv, frames)
            self.assertIn(opcode, (2, 8, 10), frames)
            if opcode == 2:
                parse_packages(payload)  # whole packages in every message
                data += payload
            elif opcode == 8:
                self.assertEqual(i, len(frames) - 1, "frames after the close frame")
                self.assertNotEqual(len(payload), 1)
                self.assertLessEqual(len(payload), 125)
        self.check_packages(data, outcome)


def autobahn_dropped_gracefully(protocol: Any, transport: FuzzTransport) -> bool:
    """Whether Autobahn closed the connection gracefully by itself (C{dropConnection(abort=
    False)}: after a client's close frame, or a second protocol error while closing), and the
    client does not read, so that the close cannot finish: the reported bug that
    L{WebSocketTests.test_close_frame_from_a_stopped_reader} shows (nothing aborts it later)."""
    inner = getattr(protocol, "_inner", None)
    return (
        isinstance(inner, PomeloWebSocketProtocol)
        and inner.state == WebSocketProtocol.STATE_CLOSED
        and transport.reader_stopped
        and transport.disconnecting
        and not transport.disconnected
    )


def http_verdict(stream: bytes, limit: int) -> str:
    """What the sniffer must do with a stream starting with an uppercase letter (hybrid.py)."""
    if len(stream) < 4 and b"GET ".startswith(stream):
        return "pending"
    if stream.find(b"\r\n\r\n", 0, limit) < 0:
        return "431" if len(stream) >= limit else "pending"
    return "ws" if stream.startswith(b"GET ") else "400"


def parse_packages(data: bytes) -> list[tuple[int, bytes]]:
    """Split C{data} into whole packages; fail on a partial one."""
    out = []
    offset = 0
    while offset < len(data):
        assert len(data) - offset >= 4, f"partial package header at {offset}: {data[offset:]!r}"
        length = int.from_bytes(data[offset + 1 : offset + 4], "big")
        end = offset + 4 + length
        assert end <= len(data), f"partial package at {offset}: {data[offset : offset + 40]!r}"
        out.append((data[offset], data[offset + 4 : end]))
        offset = end
    return out


def parse_frames(data: bytes) -> list[tuple[bool, int, int, bytes]]:
    """Split C{data} into whole, unmasked server frames."""
    frames = []
    offset = 0
    while offset < len(data):
        assert len(data) - offset >= 2, data[offset:]
        b0, b1 = data[offset], data[offset + 1]
        assert not b1 & 0x80, "a masked server frame"
        n = b1 & 0x7F
        offset += 2
        if n == 126:
            n = int.from_bytes(data[offset : offset + 2], "big")
            offset += 2
        elif n == 127:
            n = int.from_bytes(data[offset : offset + 8], "big")
            offset += 8
        assert offset + n <= len(data), "a partial server frame"
        frames.append((bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, data[offset : offset + n]))
        offset += n
    return frames


# --- the properties ---------------------------------------------------------------------------


@st.composite
def arbitrary_bytes(draw: Any) -> bytes:
    """Any bytes, often after a first byte the sniffer cares about."""
    first = draw(
        st.one_of(
            st.just(b""),
            st.sampled_from(
                [
                    b"\x01",
                    b"\x02",
                    b"\x03",
                    b"\x04",
                    b"\x05",
                    b"G",
                    b"GET ",
                    b"P",
                    b"\x16",
                    b"\x00",
                    b"\xff",
                    b"<",
                ]
            ),
        )
    )
    return first + draw(st.binary(max_size=120))


class ArbitraryBytesTests(FuzzCase):
    @settings(max_examples=400)
    @given(st.data(), configs, endings)
    def test_any_bytes_any_split(self, data: Any, config: ConnectorConfig, ending: str) -> None:
        """Any byte string, cut anywhere, with pauses of up to 20 s between the pieces."""
        stream = data.draw(arbitrary_bytes())
        chunks = data.draw(split(stream, pauses=True))
        outcome = self.run_example(config, chunks, ending)
        self.check_output(outcome, chunks)


class PackageStreamTests(FuzzCase):
    @settings(max_examples=400)
    @given(st.data(), configs, endings, st.one_of(st.none(), st.integers(0, 4)))
    def test_tcp_streams(
        self, data: Any, config: ConnectorConfig, ending: str, pause: int | None
    ) -> None:
        """Package streams (valid handshakes, random types, lengths and bodies, garbage after),
        any split; sometimes the client stops reading part-way (the slow-reader cap)."""
        stream = data.draw(mutated(package_stream()))
        chunks = data.draw(split(stream))
        outcome = self.run_example(config, chunks, ending, pause_reader_after=pause)
        self.check_output(outcome, chunks)

    @settings(max_examples=60)
    @given(st.data(), configs)
    def test_valid_prefix_is_answered(self, data: Any, config: ConnectorConfig) -> None:
        """Whatever follows, a valid handshake and ACK at the start get their answer and the
        first heartbeat, however the stream is split."""
        rest = data.draw(st.lists(any_package(), max_size=4).map(b"".join))
        # The answers leave at the end of the reactor turn: a protocol error in the same read
        # aborts the connection before they do (the abort drops what the turn had not written).
        chunks = data.draw(split(HANDSHAKE + ACK)) + data.draw(split(rest))
        outcome = self.run_example(config, chunks, "silent")
        packages = parse_packages(outcome.output)
        self.assertGreaterEqual(len(packages), 2, packages)
        self.assertEqual(packages[0][0], 1)
        self.assertEqual(json.loads(packages[0][1])["code"], 200)
        self.assertEqual(packages[1], (3, b""))


@st.composite
def request_stream(draw: Any) -> tuple[bytes, list[int]]:
    """A handshake, the ACK, then well-formed requests, notifies and heartbeats; the ids of
    the requests, in order."""
    parts = [HANDSHAKE, ACK]
    ids = []
    routes = [r for r in ROUTES if not r.endswith(".kick")]  # a kick ends the connection
    for mid in range(1, draw(st.integers(1, 25)) + 1):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            parts.append(HEARTBEAT)
            continue
        # Under TIGHT's max_package_size (300), so that every request is legitimate.
        body = draw(st.one_of(st.just(b"{}"), json_bytes(), st.binary(max_size=20)))[:200]
        route: str | int = draw(st.sampled_from(routes))
        if draw(st.integers(0, 3)) == 0:
            route = draw(st.integers(1, 20))  # a dictionary code, known or not
        if kind == 1:
            message = encode_message(MessageType.NOTIFY, 0, route, body)
        else:
            message = encode_message(MessageType.REQUEST, mid, route, body)
            ids.append(mid)
        parts.append(package(4, message))
    return b"".join(parts), ids


class RequestTests(FuzzCase):
    @settings(max_examples=150)
    @given(st.data(), configs, request_stream())
    def test_every_request_answered_once(
        self, data: Any, config: ConnectorConfig, stream_ids: tuple[bytes, list[int]]
    ) -> None:
        """Valid requests on any route with any body, any split, past the request rate or not:
        each gets exactly one response with its id, in order (200, 500 or 429)."""
        stream, ids = stream_ids
        chunks = data.draw(split(stream))
        outcome = self.run_example(config, chunks, "silent")
        answered = []
        for type_, body in parse_packages(outcome.output):
            if type_ == 4:
                message = decode_message(body)
                if message.type is MessageType.RESPONSE:
                    answered.append(message.id)
        self.assertEqual(answered, ids)


class HTTPTests(FuzzCase):
    @settings(max_examples=300)
    @given(st.data(), configs, endings)
    def test_http_heads(self, data: Any, config: ConnectorConfig, ending: str) -> None:
        """HTTP request heads with random methods, targets, versions and headers, any split."""
        stream = data.draw(http_stream())
        chunks = data.draw(split(stream))
        outcome = self.run_example(config, chunks, ending)
        self.check_output(outcome, chunks)


class WebSocketTests(FuzzCase):
    @settings(max_examples=400)
    @given(st.data(), configs, endings, st.one_of(st.none(), st.integers(0, 4)))
    def test_frames(
        self, data: Any, config: ConnectorConfig, ending: str, pause: int | None
    ) -> None:
        """An upgrade, then random frames: masked or not, fragmented, control frames, text,
        reserved bits and opcodes, lying and oversized lengths; any split."""
        stream = data.draw(ws_stream())
        chunks = data.draw(split(stream))
        outcome = self.run_example(config, chunks, ending, pause_reader_after=pause)
        self.check_output(outcome, chunks)

    def test_close_frame_from_a_stopped_reader(self) -> None:
        """BUG: a WebSocket client stops reading (its write buffer stays full, under the
        slow-reader cap) and sends a close frame. Autobahn answers it and closes gracefully
        (C{dropConnection(abort=False)}), which cannot finish while the client reads nothing.
        The connector's later abort (heartbeat timeout, then C{kick_close_timeout}) calls
        C{PomeloWebSocketProtocol.abortConnection} -> C{dropConnection(abort=True)}, which
        Autobahn skips: its state is already CLOSED. Nothing else ever aborts it: the socket, the
        admitted connection and its buffered bytes stay until the client goes away. (The same
        happens after a second protocol error while closing.) Over real sockets:
        L{tests.e2e.test_hostile.StuckCloseTests}."""
        frames = [UPGRADE, ws_frame(HANDSHAKE), ws_frame(ACK)]
        clock, _, factory = self.new_connector(DEFAULT)
        transport = FuzzTransport(clock)
        protocol = factory.buildProtocol(PEER)
        protocol.makeConnection(transport)
        for chunk in frames:
            protocol.dataReceived(chunk)
            clock.advance(0)
        transport.reader_stopped = True
        transport.producer.pauseProducing()  # the client stops reading
        protocol.dataReceived(ws_frame(b"\x03\xe8", 8))  # a close frame, 1000
        clock.advance(0)
        self.linger(clock, 60.0)
        self.assertTrue(transport.disconnected, "never aborted")


@st.composite
def clean_ws_stream(draw: Any) -> bytes:
    """An upgrade and frames a correct client may send (no protocol error, so no abort whose
    effect depends on turn boundaries): binary messages of valid packages, whole or fragmented,
    several packages in one message, pings, unsolicited pongs; maybe a text frame or a close
    at the end. Lengths are minimally encoded (see L{WebSocketTests.test_non_minimal_length})."""
    masks = st.binary(min_size=4, max_size=4)
    frames = [ws_frame(HANDSHAKE, mask=draw(masks)), ws_frame(ACK, mask=draw(masks))]
    for mid in range(1, draw(st.integers(0, 12)) + 1):
        route = draw(st.sampled_from(["entry", "echo", "push", "notify"]))
        body = json.dumps({"pad": "x" * draw(st.sampled_from([0, 5, 100, 200]))}).encode()
        if route == "notify":
            payload = package(
                4, encode_message(MessageType.NOTIFY, 0, "connector.entryHandler.notify", body)
            )
        else:
            payload = _request(mid, route, body)
        kind = draw(st.integers(0, 9))
        if kind <= 4:
            frames.append(ws_frame(payload, mask=draw(masks)))
        elif kind == 5:
            frames.append(ws_frame(HEARTBEAT, mask=draw(masks)))
        elif kind == 6:
            frames.append(ws_frame(draw(st.binary(max_size=125)), 9, mask=draw(masks)))
        elif kind == 7:
            cut = draw(st.integers(0, len(payload)))
            frames.append(ws_frame(payload[:cut], 2, fin=False, mask=draw(masks)))
            if draw(st.booleans()):
                frames.append(ws_frame(b"p", 9, mask=draw(masks)))
            frames.append(ws_frame(payload[cut:], 0, mask=draw(masks)))
        elif kind == 8:
            frames.append(ws_frame(payload + HEARTBEAT, mask=draw(masks)))
        else:
            frames.append(ws_frame(draw(st.binary(max_size=20)), 10, mask=draw(masks)))
    if draw(st.integers(0, 4)) == 0:
        frames.append(ws_frame(b'{"route":"x"}', 1, mask=draw(masks)))
    # No close frame: see WebSocketSplitTests.test_answers_before_a_close_frame.
    return UPGRADE + b"".join(frames)


def server_messages(output: bytes) -> dict[int, list[bytes]]:
    """The payloads of the server's frames after its 101 answer, by opcode."""
    head, _, rest = output.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    out: dict[int, list[bytes]] = {}
    for _, _, opcode, payload in parse_frames(rest):
        out.setdefault(opcode, []).append(payload)
    return out


class WebSocketSplitTests(FuzzCase):
    """Complete frames in one read take the connector's own frame reader; frames cut across
    reads take Autobahn's. Both must give the same answers."""

    def outputs(
        self, config: ConnectorConfig, chunks: list[tuple[bytes, float]]
    ) -> dict[int, list[bytes]]:
        return server_messages(self.run_example(config, chunks, "silent").output)

    @settings(max_examples=200)
    @given(st.data(), configs, clean_ws_stream())
    def test_split_is_irrelevant(self, data: Any, config: ConnectorConfig, stream: bytes) -> None:
        """The same frames in one read and cut anywhere (often byte by byte): the same binary
        messages, pongs and close frames, in the same order."""
        whole = self.outputs(config, [(stream, 0.0)])
        cut = self.outputs(config, data.draw(split(stream)))
        self.assertEqual(cut, whole)
        self.assertTrue(whole.get(2), "not even the handshake was answered")

    def test_non_minimal_length(self) -> None:
        """BUG: a frame whose 16-bit length field holds a length under 126 (RFC 6455 §5.2: the
        minimal encoding MUST be used). When the whole frame is in one read, the connector's
        own reader (C{PomeloWebSocketProtocol._readSimpleFrames}) accepts it; when it is cut
        across reads, Autobahn fails the connection with 1002 "invalid data frame length (not
        using minimal length encoding)". The same client bytes are served or refused depending
        on TCP segmentation."""
        frame = ws_frame(HANDSHAKE, length_form=1)
        self.assertEqual(frame[:4], b"\x82\xfe\x00\x3d")  # 61 bytes, in the 16-bit form
        whole = self.run_example(DEFAULT, [(UPGRADE, 0.0), (frame, 0.0)], "silent").output
        cut = self.run_example(
            DEFAULT, [(UPGRADE, 0.0), (frame[:5], 0.0), (frame[5:], 0.0)], "silent"
        ).output
        self.assertEqual(whole, cut)

    def test_answers_before_a_close_frame(self) -> None:
        """BUG: a client sends its handshake, the ACK and then a close frame (1000). When they
        arrive in separate reads, it gets the handshake answer and the heartbeat, then the
        close reply; when they arrive in one read, the answers (queued for the end of the
        reactor turn) are dropped: Autobahn answers the close frame at once and the flush then
        finds the WebSocket no longer open. The close frame came after the requests, so their
        answers should leave before the server's close frame, however the bytes were read
        (e.g. flush the socket in C{onCloseFrame} before Autobahn replies)."""
        frames = ws_frame(HANDSHAKE) + ws_frame(ACK) + ws_frame(b"\x03\xe8", 8)
        whole = server_messages(
            self.run_example(DEFAULT, [(UPGRADE + frames, 0.0)], "silent").output
        )
        cut = server_messages(
            self.run_example(
                DEFAULT, [(UPGRADE, 0.0), *[(bytes([b]), 0.0) for b in frames]], "silent"
            ).output
        )
        self.assertEqual([p[:1] for p in cut[2]], [b"\x01", b"\x03"])  # the answer, a heartbeat
        self.assertEqual(whole, cut)


# --- TLS ------------------------------------------------------------------------------------


class _Silent(Protocol):
    """The plaintext side of the in-memory TLS client: it only records what it gets."""

    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:
        self.lost = True


#: A TLS client in memory on a plain port with C{tls=}, the connector on a clock; run in a
#: subprocess (which must not import the global reactor; L{tests.server.test_tls} does, so nothing
#: of the tests is imported there).
_TLS_CLOCK_SCRIPT = """\
import sys
from twisted.internet import ssl, task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.demo import make_app
from pomelo_twisted.server.hybrid import PomeloConnectorFactory, load_tls_options

class Silent(Protocol):
    received = b""
    def dataReceived(self, data):
        self.received += data

peer = IPv4Address("TCP", {peer!r}, 50000)
clock = task.Clock()
factory = PomeloConnectorFactory(
    Connector(make_app(), clock), tls=load_tls_options({key!r}, {cert!r})
)
options = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM({pem!r}))
client_factory = TLSMemoryBIOFactory(options, True, Factory.forProtocol(Silent), clock=clock)
client, server, pump = iosim.connectedServerAndClient(
    lambda: factory.buildProtocol(peer), lambda: client_factory.buildProtocol(peer), clock=clock
)
pump.flush()
client.wrappedProtocol.transport.write({handshake!r})
for _ in range(3):
    pump.flush()
assert client.wrappedProtocol.received[:1] == b"\\x01", client.wrappedProtocol.received
assert "twisted.internet.reactor" not in sys.modules
"""


class TLSTests(FuzzCase):
    """The TLS sniffing of a plain port with C{tls=}: records, then what they carry."""

    tls_options: Any = None
    client_options: Any = None
    client_hello: bytes = b""

    def setUp(self) -> None:
        super().setUp()
        cls = type(self)
        if cls.tls_options is not None:
            return
        directory = tempfile.mkdtemp(prefix="pomelo-fuzz-")
        try:
            key, cert, pem = make_certificate(directory)
            cls.tls_options = load_tls_options(key, cert)
        finally:
            shutil.rmtree(directory)
        cls.client_options = ssl.optionsForClientTLS(
            "localhost", trustRoot=ssl.Certificate.loadPEM(pem)
        )
        # A real ClientHello, to mutate.
        client = TLSMemoryBIOFactory(
            cls.client_options, True, Factory.forProtocol(Protocol), clock=task.Clock()
        )
        hello = StringTransport()
        client.buildProtocol(PEER).makeConnection(hello)
        cls.client_hello = hello.value()
        assert cls.client_hello[:1] == b"\x16", cls.client_hello[:10]

    def use_clock_for_tls(self, factory: PomeloConnectorFactory, clock: task.Clock) -> None:
        """Work around the bug that L{test_tls_writes_on_the_connector_clock} shows: the TLS
        wrapper of a plain port schedules its writes on the global reactor, not the clock."""
        tls = factory.tlsFactory
        assert tls is not None
        factory.tlsFactory = TLSMemoryBIOFactory(
            self.tls_options, False, tls.wrappedFactory, clock=clock
        )

    def tls_session(
        self, factory: PomeloConnectorFactory, clock: task.Clock
    ) -> tuple[Any, Any, iosim.IOPump, _Silent]:
        """An in-memory TLS client connected to C{factory}, past the TLS handshake."""
        client_factory = TLSMemoryBIOFactory(
            self.client_options, True, Factory.forProtocol(_Silent), clock=clock
        )
        client, server, pump = iosim.connectedServerAndClient(
            lambda: factory.buildProtocol(PEER),
            lambda: client_factory.buildProtocol(PEER),
            clock=clock,
        )
        pump.flush()
        return client, server, pump, client.wrappedProtocol

    def round_trip(self, factory: PomeloConnectorFactory, clock: task.Clock) -> bytes:
        """Handshake, ACK and a request over TLS; what the client got back."""
        _, _, pump, plain = self.tls_session(factory, clock)
        plain.transport.write(
            HANDSHAKE + ACK + package(4, encode_message(MessageType.REQUEST, 7, ENTRY, b"{}"))
        )
        for _ in range(3):
            pump.flush()
        return plain.received

    def test_tls_session_round_trip(self) -> None:
        """The decrypted path works (with the clock work-around): the check that the fuzzing
        of decrypted streams below does reach the sniffer and the socket."""
        clock, connector, factory = self.new_connector(DEFAULT, self.tls_options)
        self.use_clock_for_tls(factory, clock)
        packages = parse_packages(self.round_trip(factory, clock))
        self.assertEqual([t for t, _ in packages], [1, 3, 4])
        self.assertEqual(decode_message(packages[2][1]).id, 7)
        self.assertEqual(len(connector.sockets), 1)

    def test_tls_writes_on_the_connector_clock(self) -> None:
        """BUG: hybrid.py builds C{TLSMemoryBIOFactory(tls, False, ...)} without
        C{clock=connector.reactor}, so Twisted falls back to the global reactor: building the
        factory imports (installs) it, and every write to a TLS client on a plain port waits
        for the global reactor's C{callLater(0)}. With the connector on a clock, the answers
        never come. (In a subprocess: the global reactor must not be touched here.)"""
        key, cert, pem = make_certificate(self.mktemp())
        code = _TLS_CLOCK_SCRIPT.format(
            key=key, cert=cert, pem=pem, handshake=HANDSHAKE, peer=PEER.host
        )
        env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, env=env, timeout=60
        )
        self.assertEqual(result.returncode, 0, result.stderr.decode()[-2000:])

    @settings(max_examples=150)
    @given(st.data(), st.sampled_from([DEFAULT, TIGHT]), endings)
    def test_tls_records(self, data: Any, config: ConnectorConfig, ending: str) -> None:
        """Mangled ClientHellos and random records after a 0x16 first byte."""
        stream = data.draw(
            st.one_of(
                mutated(st.just(self.client_hello)),
                st.binary(max_size=100).map(lambda b: b"\x16\x03\x01" + b),
                st.binary(max_size=60).map(lambda b: b"\x16" + b),
            )
        )
        chunks = data.draw(split(stream))
        outcome = self.run_example(config, chunks, ending, tls=self.tls_options)
        self.check_output(outcome, chunks, tls=True)

    @settings(max_examples=80)
    @given(
        st.data(),
        st.sampled_from([DEFAULT, TIGHT]),
        st.one_of(arbitrary_bytes(), mutated(package_stream()), http_stream(), ws_stream()),
        st.booleans(),
    )
    def test_decrypted_streams(
        self, data: Any, config: ConnectorConfig, stream: bytes, drop: bool
    ) -> None:
        """A real TLS session (in memory, iosim), carrying any of the other streams."""
        clock, connector, factory = self.new_connector(config, self.tls_options)
        self.use_clock_for_tls(factory, clock)
        chunks = data.draw(split(stream))
        with capturedLogs() as events:
            client, server, pump, plain = self.tls_session(factory, clock)
            for chunk, _ in chunks:
                if server.transport.disconnecting or plain.lost:
                    break
                plain.transport.write(chunk)
                pump.flush()
            if drop and not server.transport.disconnecting:
                client.transport.abortConnection()
                pump.flush()
            self.drain(clock, lambda: plain.lost, pump)
            pump.flush()
            self.settle(clock)
        self.assertClean(connector, clock, events)
        if stream[:1] and 0x01 <= stream[0] <= 0x05:
            parse_packages(plain.received)
