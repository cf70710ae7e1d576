"""The sans-IO PROXY protocol parser and forwarded-header reader (pomelo_twisted.server.proxy).

Byte-exact cases for PROXY v1 and v2 from HAProxy's specification (proxy-protocol.txt), every
way each can be wrong, and properties: arbitrary bytes only ever give a header, "need more"
or L{ProxyHeaderError}, and a decision made on a prefix never changes with more bytes.
"""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.server.proxy import (
    MAX_V1_HEADER,
    MAX_V2_BLOCK,
    V2_SIGNATURE,
    ForwardedError,
    ProxyHeader,
    ProxyHeaderError,
    TrustedProxies,
    forwarded_client,
    parse_proxy_header,
    proxy_signature,
)

V1_TCP4 = b"PROXY TCP4 192.0.2.7 203.0.113.5 56324 3010\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 3010\r\n"


def v2(command: int, family: int, block: bytes, length: int | None = None) -> bytes:
    """A v2 header: signature, version 2 and C{command}, C{family}, the block's length."""
    size = len(block) if length is None else length
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", size) + block


def v2_tcp4(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    block = (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )
    return v2(1, 0x11, block + tlvs)


def v2_tcp6(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    block = (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )
    return v2(1, 0x21, block + tlvs)


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


class SignatureTests(SynchronousTestCase):
    def test_v1_and_v2(self) -> None:
        self.assertIs(proxy_signature(b"PROXY "), True)
        self.assertIs(proxy_signature(b"PROXY TCP4 ..."), True)
        self.assertIs(proxy_signature(V2_SIGNATURE), True)
        self.assertIs(proxy_signature(V2_SIGNATURE + b"\x21"), True)

    def test_prefixes_undecided(self) -> None:
        """C{"P"} could still be an HTTP C{PUT}; C{"\\r"} the start of a v2 signature."""
        for signature in (b"PROXY ", V2_SIGNATURE):
            for i in range(len(signature)):
                self.assertIsNone(proxy_signature(signature[:i]), signature[:i])

    def test_others(self) -> None:
        for data in (b"PUT ", b"POST", b"GET ", b"\x01\x00\x00\x00", b"\x16\x03\x01", b"PROXY\t"):
            self.assertIs(proxy_signature(data), False, data)
        self.assertIs(proxy_signature(V2_SIGNATURE[:11] + b"X"), False)


class V1Tests(SynchronousTestCase):
    def test_tcp4(self) -> None:
        self.assertEqual(
            parse_proxy_header(V1_TCP4),
            ProxyHeader(1, len(V1_TCP4), ("192.0.2.7", 56324), ("203.0.113.5", 3010)),
        )

    def test_tcp6(self) -> None:
        header = parse_proxy_header(V1_TCP6)
        self.assertEqual(
            header, ProxyHeader(1, len(V1_TCP6), ("2001:db8::7", 56324), ("2001:db8::1", 3010))
        )

    def test_tcp6_canonical(self) -> None:
        """Addresses come out in their canonical text (what logs and the blocklist use)."""
        header = parse_proxy_header(b"PROXY TCP6 2001:DB8:0:0::7 ::1 1 2\r\n")
        assert header is not None
        self.assertEqual(header.source, ("2001:db8::7", 1))

    def test_unknown(self) -> None:
        """C{UNKNOWN}: the connection's own address stands; the rest of the line is ignored."""
        for line in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN 1.2.3.4 what ever\r\n"):
            self.assertEqual(parse_proxy_header(line), ProxyHeader(1, len(line), None, None))

    def test_client_bytes_left(self) -> None:
        """The client's own bytes after the header are not the parser's: see C{length}."""
        data = V1_TCP4 + b"\x01\x00\x00\x02{}"
        header = parse_proxy_header(data)
        assert header is not None
        self.assertEqual(data[header.length :], b"\x01\x00\x00\x02{}")

    def test_every_prefix_needs_more(self) -> None:
        for line in (V1_TCP4, V1_TCP6, b"PROXY UNKNOWN\r\n"):
            for i in range(len(line)):
                self.assertIsNone(parse_proxy_header(line[:i]), line[:i])

    def test_longest(self) -> None:
        """107 bytes with the CRLF are allowed; without a CRLF in them it is refused."""
        line = b"PROXY UNKNOWN " + b"x" * (MAX_V1_HEADER - 16) + b"\r\n"
        self.assertEqual(len(line), MAX_V1_HEADER)
        self.assertEqual(parse_proxy_header(line), ProxyHeader(1, MAX_V1_HEADER, None, None))
        self.assertIsNone(parse_proxy_header(line[:-1]))
        too_long = b"PROXY UNKNOWN " + b"x" * (MAX_V1_HEADER - 14)
        self.assertEqual(len(too_long), MAX_V1_HEADER)
        with self.assertRaisesRegex(ProxyHeaderError, "without CRLF in 107 bytes"):
            parse_proxy_header(too_long)
        with self.assertRaises(ProxyHeaderError):
            parse_proxy_header(too_long + b"\r\n")

    def test_longest_tcp6(self) -> None:
        big = "ffff:" * 7 + "ffff"
        line = f"PROXY TCP6 {big} {big} 65535 65535\r\n".encode()
        header = parse_proxy_header(line)
        assert header is not None
        self.assertEqual(header.source, (big, 65535))

    def test_bad(self) -> None:
        cases = {
            b"PROXY TCP4 192.0.2.7 203.0.113.5 56324 3010\n": "bare LF",
            b"PROXY TCP5 192.0.2.7 203.0.113.5 56324 3010\r\n": "not 'PROXY TCP4",
            b"PROXY TCP4 192.0.2.7  203.0.113.5 56324 3010\r\n": "not 'PROXY TCP4",
            b"PROXY TCP4 192.0.2.7 203.0.113.5 56324\r\n": "not 'PROXY TCP4",
            b"PROXY TCP4 192.0.2.7 203.0.113.5 56324 3010 \r\n": "not 'PROXY TCP4",
            b"PROXY tcp4 192.0.2.7 203.0.113.5 56324 3010\r\n": "not 'PROXY TCP4",
            b"PROXY \r\n": "not 'PROXY TCP4",
            b"PROXY TCP4 2001:db8::7 203.0.113.5 56324 3010\r\n": "not an IPv4 address",
            b"PROXY TCP6 192.0.2.7 2001:db8::1 56324 3010\r\n": "not an IPv6 address",
            b"PROXY TCP4 192.0.2.07 203.0.113.5 56324 3010\r\n": "not an IPv4 address",
            b"PROXY TCP4 192.0.2 203.0.113.5 56324 3010\r\n": "not an IPv4 address",
            b"PROXY TCP6 fe80::1%eth0 ::1 56324 3010\r\n": "not an IPv6 address",
            b"PROXY TCP4 192.0.2.7 203.0.113.5 65536 3010\r\n": "not a port",
            b"PROXY TCP4 192.0.2.7 203.0.113.5 -1 3010\r\n": "not a port",
            b"PROXY TCP4 192.0.2.7 203.0.113.5 1a 3010\r\n": "not a port",
            b"PROXY TCP4 192.0.2.7 203.0.113.5 000001 3010\r\n": "not a port",
            b"PROXY TCP4 192.0.2.7 203.0.113.5 56324 +3010\r\n": "not a port",
            b"PROXY TCP4 \xc3\xa9 203.0.113.5 56324 3010\r\n": "not ASCII",
            b"PROXY\r\n": "no PROXY protocol header",
            b"PROXZ TCP4": "no PROXY protocol header",
        }
        for data, message in cases.items():
            with self.assertRaisesRegex(ProxyHeaderError, message, msg=data):
                parse_proxy_header(data)

    def test_not_a_header(self) -> None:
        """A trusted proxy's connection must start with a header: anything else is refused."""
        for data in (b"GET / HTTP/1.1\r\n", b"\x01\x00\x00\x02", b"\x16\x03\x01", b"x"):
            with self.assertRaisesRegex(ProxyHeaderError, "no PROXY protocol header"):
                parse_proxy_header(data)


class V2Tests(SynchronousTestCase):
    def test_tcp4(self) -> None:
        data = v2_tcp4("192.0.2.7", "203.0.113.5", 56324, 3010)
        self.assertEqual(len(data), 28)
        self.assertEqual(
            parse_proxy_header(data),
            ProxyHeader(2, 28, ("192.0.2.7", 56324), ("203.0.113.5", 3010)),
        )

    def test_tcp6(self) -> None:
        data = v2_tcp6("2001:db8::7", "2001:db8::1", 56324, 3010)
        self.assertEqual(len(data), 52)
        self.assertEqual(
            parse_proxy_header(data),
            ProxyHeader(2, 52, ("2001:db8::7", 56324), ("2001:db8::1", 3010)),
        )

    def test_bytes_literal(self) -> None:
        """One header written out byte by byte, as the specification lays it out."""
        data = bytes.fromhex(
            "0d0a0d0a000d0a515549540a"  # signature
            "21"  # version 2, PROXY
            "11"  # AF_INET, STREAM
            "000c"  # 12 bytes of addresses
            "c0000207 cb007105"  # 192.0.2.7 -> 203.0.113.5
            "dc04 0bc2"  # 56324 -> 3010
        )
        header = parse_proxy_header(data + b"GET ")
        self.assertEqual(header, ProxyHeader(2, 28, ("192.0.2.7", 56324), ("203.0.113.5", 3010)))

    def test_tlvs_skipped(self) -> None:
        """TLVs (ALPN, authority, AWS's VPC endpoint, ...) follow the addresses and are skipped."""
        tlvs = tlv(0x01, b"h2") + tlv(0x02, b"game.example.com") + tlv(0xEA, b"\x01vpce-0abc")
        data = v2_tcp4("192.0.2.7", "203.0.113.5", 1, 2, tlvs) + b"\x01rest"
        header = parse_proxy_header(data)
        assert header is not None
        self.assertEqual(header.source, ("192.0.2.7", 1))
        self.assertEqual(data[header.length :], b"\x01rest")

    def test_local(self) -> None:
        """LOCAL (a balancer's health check): no client; family and block are ignored."""
        for family, block in ((0x00, b""), (0x11, b"\x00" * 12), (0xFF, b"anything")):
            data = v2(0, family, block)
            self.assertEqual(parse_proxy_header(data), ProxyHeader(2, len(data), None, None))

    def test_unspec_and_unix(self) -> None:
        """PROXY with no IP addresses: accepted, and the connection's own address stands."""
        for family, block in ((0x00, b""), (0x00, b"tlvs"), (0x31, b"/tmp/a".ljust(216, b"\0"))):
            data = v2(1, family, block)
            self.assertEqual(parse_proxy_header(data), ProxyHeader(2, len(data), None, None))

    def test_every_prefix_needs_more(self) -> None:
        for data in (
            v2_tcp4("192.0.2.7", "203.0.113.5", 1, 2),
            v2_tcp6("2001:db8::7", "::1", 1, 2, tlv(1, b"h2")),
            v2(0, 0, b""),
        ):
            for i in range(len(data)):
                self.assertIsNone(parse_proxy_header(data[:i]), data[:i])

    def test_largest_block(self) -> None:
        tlvs = tlv(0xE0, b"x" * (MAX_V2_BLOCK - 12 - 3))
        data = v2_tcp4("192.0.2.7", "203.0.113.5", 1, 2, tlvs)
        header = parse_proxy_header(data)
        assert header is not None
        self.assertEqual(header.length, 16 + MAX_V2_BLOCK)
        with self.assertRaisesRegex(ProxyHeaderError, "address block of 4097 bytes, over 4096"):
            parse_proxy_header(v2(1, 0x11, b"", length=MAX_V2_BLOCK + 1))

    def test_block_too_large_refused_on_its_length(self) -> None:
        """The length field alone is enough to refuse: nothing of the block is awaited."""
        with self.assertRaises(ProxyHeaderError):
            parse_proxy_header(v2(1, 0x11, b"", length=0xFFFF))

    def test_decided_at_the_first_bad_byte(self) -> None:
        """A bad version, command or family is refused as soon as its byte arrives."""
        for byte in (0x10, 0x11, 0x22, 0x2F, 0x31, 0x00, 0xFF):
            with self.assertRaisesRegex(ProxyHeaderError, "version and command byte"):
                parse_proxy_header(V2_SIGNATURE + bytes([byte]))
        for family in (0x12, 0x22, 0x32, 0x10, 0x13, 0x41, 0x01, 0xFF):
            with self.assertRaisesRegex(ProxyHeaderError, "family and protocol byte"):
                parse_proxy_header(V2_SIGNATURE + bytes([0x21, family]))

    def test_block_too_short(self) -> None:
        for family, size in ((0x11, 11), (0x21, 35), (0x31, 215)):
            with self.assertRaisesRegex(ProxyHeaderError, "too short for family"):
                parse_proxy_header(v2(1, family, b"\x00" * size))


def _v1_line(source: ipaddress.IPv4Address | ipaddress.IPv6Address, sport: int) -> bytes:
    kind = "TCP4" if source.version == 4 else "TCP6"
    destination = "203.0.113.5" if source.version == 4 else "2001:db8::1"
    return f"PROXY {kind} {source} {destination} {sport} 3010\r\n".encode()


def _v2_header(source: ipaddress.IPv4Address | ipaddress.IPv6Address, sport: int) -> bytes:
    if source.version == 4:
        return v2_tcp4(str(source), "203.0.113.5", sport, 3010)
    return v2_tcp6(str(source), "2001:db8::1", sport, 3010)


_headers = st.builds(
    lambda make, address, port, tail: (make(address, port), address, port, tail),
    st.sampled_from([_v1_line, _v2_header]),
    st.ip_addresses(),
    st.integers(0, 0xFFFF),
    st.binary(max_size=20),
)
_hostile = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda tail: b"PROXY " + tail, st.binary(max_size=200)),
    st.builds(lambda tail: V2_SIGNATURE + tail, st.binary(max_size=200)),
    st.builds(
        lambda tail: b"PROXY TCP4 " + tail,
        st.text("0123456789. :\r\nTCP46abcdef", max_size=80).map(str.encode),
    ),
)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=300)
    @given(_headers)
    def test_round_trip_any_split(self, case: tuple[bytes, object, int, bytes]) -> None:
        """A valid header parses to its address whatever follows; every prefix needs more."""
        data, address, port, tail = case
        header = parse_proxy_header(data + tail)
        assert header is not None
        self.assertEqual(header.source, (str(address), port))
        self.assertEqual(header.length, len(data))
        for i in range(len(data)):
            self.assertIsNone(parse_proxy_header(data[:i]))

    @settings(max_examples=500)
    @given(_hostile)
    def test_arbitrary_bytes(self, data: bytes) -> None:
        """Only a header, "need more" or ProxyHeaderError; a header is bounded and inside."""
        try:
            header = parse_proxy_header(data)
        except ProxyHeaderError:
            return
        if header is not None:
            self.assertLessEqual(header.length, len(data))
            bound = MAX_V1_HEADER if header.version == 1 else 16 + MAX_V2_BLOCK
            self.assertLessEqual(header.length, bound)

    @settings(max_examples=500)
    @given(_hostile, st.integers(0, 300))
    def test_decisions_stand(self, data: bytes, cut: int) -> None:
        """What a prefix decides (a header, or a refusal) more bytes never change."""
        try:
            early = parse_proxy_header(data[:cut])
        except ProxyHeaderError:
            with self.assertRaises(ProxyHeaderError):
                parse_proxy_header(data)
            return
        if early is not None:
            self.assertEqual(parse_proxy_header(data), early)


TRUSTED = TrustedProxies(
    [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ffff::/48")]
)


def xff(value: str) -> tuple[str, int] | None:
    return forwarded_client("x-forwarded-for", value, TRUSTED.__contains__)


def fwd(value: str) -> tuple[str, int] | None:
    return forwarded_client("forwarded", value, TRUSTED.__contains__)


class TrustedProxiesTests(SynchronousTestCase):
    def test_contains(self) -> None:
        self.assertIn(ipaddress.ip_address("10.1.2.3"), TRUSTED)
        self.assertIn(ipaddress.ip_address("2001:db8:ffff::5"), TRUSTED)
        self.assertNotIn(ipaddress.ip_address("11.0.0.1"), TRUSTED)
        self.assertNotIn(ipaddress.ip_address("2001:db8::5"), TRUSTED)
        self.assertNotIn(None, TRUSTED)
        self.assertNotIn("10.1.2.3", TRUSTED)  # addresses are parsed by the caller

    def test_empty(self) -> None:
        self.assertFalse(TrustedProxies())
        self.assertTrue(TRUSTED)
        self.assertEqual(repr(TRUSTED), "TrustedProxies(['10.0.0.0/8', '2001:db8:ffff::/48'])")


class XForwardedForTests(SynchronousTestCase):
    def test_one_proxy(self) -> None:
        self.assertEqual(xff("198.51.100.9"), ("198.51.100.9", 0))

    def test_right_most_untrusted(self) -> None:
        """Entries left of the client came from the client: forged ones are never reached."""
        self.assertEqual(xff("1.1.1.1, 198.51.100.9, 10.0.0.2"), ("198.51.100.9", 0))
        self.assertEqual(xff("forged, 198.51.100.9"), ("198.51.100.9", 0))
        self.assertEqual(xff("1.1.1.1,198.51.100.9,10.0.0.2,10.0.0.3"), ("198.51.100.9", 0))

    def test_all_trusted(self) -> None:
        """Every entry a proxy (an internal client): the left-most is the client."""
        self.assertEqual(xff("10.0.0.9, 10.0.0.2"), ("10.0.0.9", 0))

    def test_ports_and_ipv6(self) -> None:
        self.assertEqual(xff("198.51.100.9:4711"), ("198.51.100.9", 4711))
        self.assertEqual(xff("2001:db8::9"), ("2001:db8::9", 0))
        self.assertEqual(xff("[2001:db8::9]"), ("2001:db8::9", 0))
        self.assertEqual(xff("[2001:db8::9]:4711"), ("2001:db8::9", 4711))
        self.assertEqual(xff("::ffff:198.51.100.9"), ("198.51.100.9", 0))

    def test_unknown(self) -> None:
        """The proxy did not know the client: none is named (the proxy's address stands)."""
        self.assertIsNone(xff("unknown"))
        self.assertIsNone(xff("198.51.100.9, unknown, 10.0.0.2"))
        self.assertIsNone(xff(""))

    def test_broken(self) -> None:
        for value in (
            "garbage",
            "198.51.100.9, 10.0.0.2,",
            "1.2.3",
            "198.51.100.9:99999",
            "198.51.100.9:",
            "[2001:db8::9",
            "[2001:db8::9]x",
            "[2001:db8::9]:",
            "fe80::1%eth0",
            "198.51.100.9 10.0.0.2",
        ):
            with self.assertRaises(ForwardedError, msg=value):
                xff(value)


class ForwardedTests(SynchronousTestCase):
    def test_rfc_7239_examples(self) -> None:
        self.assertEqual(fwd('for="_gazonk"'), None)
        self.assertEqual(fwd('For="[2001:db8:cafe::17]:4711"'), ("2001:db8:cafe::17", 4711))
        self.assertEqual(fwd("for=192.0.2.60;proto=http;by=203.0.113.43"), ("192.0.2.60", 0))
        self.assertEqual(fwd("for=192.0.2.43, for=198.51.100.17"), ("198.51.100.17", 0))

    def test_right_most_untrusted(self) -> None:
        value = 'for=1.1.1.1, for="198.51.100.9:80";proto=https, for=10.0.0.2;by=10.0.0.3'
        self.assertEqual(fwd(value), ("198.51.100.9", 80))
        self.assertEqual(fwd('for="[2001:db8::9]", for="[2001:db8:ffff::1]"'), ("2001:db8::9", 0))

    def test_quoting(self) -> None:
        self.assertEqual(fwd('for = "198.51.100.9" ; proto=http'), ("198.51.100.9", 0))
        self.assertEqual(fwd('proto="a,b;c";for=198.51.100.9'), ("198.51.100.9", 0))
        self.assertEqual(fwd('for="198.51.100.\\9"'), ("198.51.100.9", 0))

    def test_unknown(self) -> None:
        self.assertIsNone(fwd("for=unknown"))
        self.assertIsNone(fwd("proto=http"))  # an element without for
        self.assertIsNone(fwd("for=198.51.100.9, by=10.0.0.2"))
        self.assertIsNone(fwd(""))

    def test_broken(self) -> None:
        for value in ('for="198.51.100.9', "for=x", 'for="1.2.3.4"x', "for", "for=1.2.3.4;junk"):
            with self.assertRaises(ForwardedError, msg=value):
                fwd(value)

    @settings(max_examples=500)
    @given(st.sampled_from(["forwarded", "x-forwarded-for"]), st.text(max_size=120))
    def test_arbitrary_text(self, header: str, value: str) -> None:
        """Any header value gives a client, none, or ForwardedError; never anything else."""
        try:
            client = forwarded_client(header, value, TRUSTED.__contains__)
        except ForwardedError:
            return
        if client is not None:
            host, port = client
            ipaddress.ip_address(host)
            self.assertTrue(0 <= port <= 0xFFFF)

    @settings(max_examples=300)
    @given(
        st.lists(st.ip_addresses().map(str), max_size=4),
        st.ip_addresses(v=4).filter(lambda a: a not in TRUSTED),
        st.lists(st.ip_addresses(network="10.0.0.0/8").map(str), max_size=3),
    )
    def test_forged_prefix_never_wins(
        self, forged: list[str], client: object, proxies: list[str]
    ) -> None:
        """Whatever the client put in front, the entry its first trusted proxy added wins."""
        entries = [*forged, str(client), *proxies]
        self.assertEqual(xff(", ".join(entries)), (str(client), 0))
        self.assertEqual(fwd(", ".join(f'for="{e}"' for e in entries)), (str(client), 0))
