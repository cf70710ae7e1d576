# -*- test-case-name: tests.server.test_proxy,tests.server.test_proxy_connector -*-
"""Who the client is behind a proxy: the PROXY protocol and forwarded headers, sans-IO.

A load balancer in front of the connector makes every connection come from the balancer's
address. Two ways tell the server the real client:

  - the PROXY protocol (HAProxy's, versions 1 and 2): the balancer starts the connection with a
    header naming the client, before any byte of the client's own (L{parse_proxy_header});
  - for WebSocket through an HTTP proxy, the C{X-Forwarded-For} or C{Forwarded} (RFC 7239)
    request header, to which each proxy appends the address it received the request from
    (L{forwarded_client}).

Either can be forged by anyone who can connect, so they are believed only from the trusted
proxy networks (L{TrustedProxies}); the Twisted side (L{pomelo_twisted.server.hybrid},
L{pomelo_twisted.server.websocket}) applies that rule. Nothing here does I/O or imports
Twisted: the functions take bytes or text and return a result, C{None} for "need more bytes",
or raise L{ProxyHeaderError} with a message fit for a log line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_V1_HEADER",
    "MAX_V2_BLOCK",
    "V2_SIGNATURE",
    "ForwardedError",
    "ProxyHeader",
    "ProxyHeaderError",
    "TrustedProxies",
    "forwarded_client",
    "parse_proxy_header",
    "proxy_signature",
]

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The longest version 1 header, CRLF included (the specification's own bound).
MAX_V1_HEADER: Final = 107
#: The largest address block (addresses and TLVs) accepted in a version 2 header. The format
#: allows 64 KiB; balancers send the addresses (at most 216 bytes) and a few short TLVs.
MAX_V2_BLOCK: Final = 4096
#: The 12 bytes a version 2 header starts with.
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"

_V1_PREFIX: Final = b"PROXY "
_V2_FIXED: Final = 16  # signature, version and command, family and protocol, length
_LOCAL: Final = 0x20
_PROXY: Final = 0x21
_TCP4: Final = 0x11
_TCP6: Final = 0x21
_UNIX_STREAM: Final = 0x31
_UNSPEC: Final = 0x00
#: The family and protocol bytes accepted, with the size of their addresses: TCP over IPv4 or
#: IPv6, a UNIX stream and unspecified (the last two name no IP client). Datagrams are refused.
_KNOWN_FAMILIES: Final = {_TCP4: 12, _TCP6: 36, _UNIX_STREAM: 216, _UNSPEC: 0}


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY protocol header (the message says what is wrong)."""


class ForwardedError(ValueError):
    """A forwarded header's entry is not an address (the message names it)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed PROXY protocol header.

    @ivar version: 1 (text) or 2 (binary).
    @ivar length: how many bytes the header took; the client's own bytes follow.
    @ivar source: the client, C{(host, port)}; C{None} when the header names none (v1
        C{UNKNOWN}, v2 C{LOCAL} such as a balancer's health check, v2 C{UNSPEC} or UNIX
        addresses): the connection's own address stands.
    @ivar destination: the address the client connected to, or C{None} as for C{source}.
    """

    version: int
    length: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


def proxy_signature(data: bytes) -> bool | None:
    """Whether C{data} starts like a PROXY header (v1 C{"PROXY "} or the v2 signature).

    C{None}: C{data} is a proper prefix of one of them, so more bytes are needed to tell; an
    HTTP client's C{"P"} or C{"PU"} is such a prefix.
    """
    for signature in (_V1_PREFIX, V2_SIGNATURE):
        if data.startswith(signature):
            return True
        if signature.startswith(data):
            return None
    return False


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """The PROXY header at the start of C{data}, or C{None} if more bytes are needed.

    Bytes after the header (the client's) are left alone: see L{ProxyHeader.length}. It
    decides as early as the bytes allow, so a wrong start is refused at its first byte.

    @raise ProxyHeaderError: C{data} does not start with a valid header, or a header over the
        bounds (L{MAX_V1_HEADER}, L{MAX_V2_BLOCK}).
    """
    started = proxy_signature(data)
    if started is None:
        return None
    if not started:
        raise ProxyHeaderError(f"no PROXY protocol header: starts with {data[:16]!r}")
    if data[0] == 0x50:  # "P"
        return _parse_v1(data)
    return _parse_v2(data)


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\n", 0, MAX_V1_HEADER)
    if end < 0:
        if len(data) >= MAX_V1_HEADER:
            raise ProxyHeaderError(f"PROXY v1 header without CRLF in {MAX_V1_HEADER} bytes")
        return None
    if data[end - 1] != 0x0D:
        raise ProxyHeaderError("PROXY v1 header ends in a bare LF, not CRLF")
    try:
        line = data[: end - 1].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 header is not ASCII") from None
    fields = line.split(" ")
    if fields[1] == "UNKNOWN":  # the rest of the line, if any, is to be ignored
        return ProxyHeader(1, end + 1, None, None)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(
            f"PROXY v1 header is not 'PROXY TCP4|TCP6 src dst sport dport': {line!r}"
        )
    version = 4 if fields[1] == "TCP4" else 6
    source = (_v1_address(version, fields[2]), _v1_port(fields[4]))
    destination = (_v1_address(version, fields[3]), _v1_port(fields[5]))
    return ProxyHeader(1, end + 1, source, destination)


def _v1_address(version: int, text: str) -> str:
    family = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    try:
        if "%" in text:  # a scope: no address a client comes from
            raise ValueError(text)
        return str(family(text))
    except ValueError:
        raise ProxyHeaderError(
            f"PROXY v1 header: {text!r} is not an IPv{version} address"
        ) from None


def _v1_port(text: str) -> int:
    if not (text.isdigit() and text.isascii() and len(text) <= 5 and int(text) <= 0xFFFF):
        raise ProxyHeaderError(f"PROXY v1 header: {text!r} is not a port")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) > 12 and data[12] not in (_LOCAL, _PROXY):
        raise ProxyHeaderError(
            f"PROXY v2 header: version and command byte {data[12]:#04x}, not 0x20 or 0x21"
        )
    local = len(data) > 12 and data[12] == _LOCAL
    if len(data) > 13 and not local and data[13] not in _KNOWN_FAMILIES:
        raise ProxyHeaderError(
            f"PROXY v2 header: family and protocol byte {data[13]:#04x} is not TCP over IPv4 "
            "or IPv6, a UNIX stream or unspecified"
        )
    if len(data) < _V2_FIXED:
        return None
    size = int.from_bytes(data[14:16], "big")
    if size > MAX_V2_BLOCK:
        raise ProxyHeaderError(
            f"PROXY v2 header: address block of {size} bytes, over {MAX_V2_BLOCK}"
        )
    length = _V2_FIXED + size
    if len(data) < length:
        return None
    if local:  # the balancer's own connection (a health check): its family is to be ignored
        return ProxyHeader(2, length, None, None)
    family = data[13]
    if size < _KNOWN_FAMILIES[family]:
        raise ProxyHeaderError(
            f"PROXY v2 header: address block of {size} bytes, too short for family "
            f"{family:#04x} ({_KNOWN_FAMILIES[family]} bytes)"
        )
    block = data[_V2_FIXED:length]
    if family == _TCP4:
        return ProxyHeader(
            2,
            length,
            (str(ipaddress.IPv4Address(block[0:4])), int.from_bytes(block[8:10], "big")),
            (str(ipaddress.IPv4Address(block[4:8])), int.from_bytes(block[10:12], "big")),
        )
    if family == _TCP6:
        return ProxyHeader(
            2,
            length,
            (str(ipaddress.IPv6Address(block[0:16])), int.from_bytes(block[32:34], "big")),
            (str(ipaddress.IPv6Address(block[16:32])), int.from_bytes(block[34:36], "big")),
        )
    return ProxyHeader(2, length, None, None)  # UNSPEC or UNIX: no IP client to name


class TrustedProxies:
    """The networks whose connections may name the client (PROXY header, forwarded header).

    A handful of networks at most (the balancers'), so a lookup scans them.
    """

    __slots__ = ("networks",)

    def __init__(self, networks: Iterable[_IPNetwork] = ()) -> None:
        self.networks: tuple[_IPNetwork, ...] = tuple(networks)

    def __contains__(self, address: object) -> bool:
        """Whether C{address} (an C{ipaddress} address, IPv4-mapped ones as IPv4) is trusted."""
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return any(address in network for network in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self.networks]!r})"


def _forwarded_for(value: str) -> list[str]:
    """The C{for=} value of each element of an RFC 7239 C{Forwarded} header, in order.

    An element without C{for} gives C{""} (its node is unknown, as RFC 7239's C{unknown}).
    """
    nodes: list[str] = []
    found: str | None = None
    i, size = 0, len(value)
    while i <= size:
        # one pair: token "=" (token / quoted-string), then ";" or "," or the end
        j = i
        while j < size and value[j] not in "=,;":
            j += 1
        name = value[i:j].strip(" \t").lower()
        text = ""
        if j < size and value[j] == "=":
            j += 1
            while j < size and value[j] in " \t":
                j += 1
            if j < size and value[j] == '"':
                j += 1
                chars: list[str] = []
                while j < size and value[j] != '"':
                    if value[j] == "\\" and j + 1 < size:
                        j += 1
                    chars.append(value[j])
                    j += 1
                if j >= size:
                    raise ForwardedError(
                        f"Forwarded header: unterminated quoted string in {value!r}"
                    )
                j += 1
                text = "".join(chars)
                while j < size and value[j] in " \t":
                    j += 1
            else:
                k = j
                while j < size and value[j] not in ",;":
                    j += 1
                text = value[k:j].strip(" \t")
        elif name:
            raise ForwardedError(f"Forwarded header: {name!r} is not a name=value pair")
        if name == "for":
            found = text
        if j >= size or value[j] == ",":
            nodes.append("" if found is None else found)
            found = None
        elif value[j] != ";":
            raise ForwardedError(f"Forwarded header: unexpected {value[j]!r} in {value!r}")
        i = j + 1
    return nodes


def _node(text: str) -> tuple[_IPAddress, int] | None:
    """One forwarded entry as (address, port; 0 if none), or C{None} for an unknown node.

    Takes C{1.2.3.4}, C{1.2.3.4:80}, C{2001:db8::1}, C{[2001:db8::1]} and C{[2001:db8::1]:80};
    C{unknown}, an empty C{Forwarded} node and an obfuscated one (C{_hidden}) are unknown.

    @raise ForwardedError: anything else.
    """
    if text.lower() == "unknown" or text.startswith("_") or not text:
        return None
    host, colon, port = text, "", ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        colon, port = rest[:1], rest[1:]
        if not bracket or colon not in ("", ":"):
            raise ForwardedError(f"forwarded address {text!r} is not an address")
    elif text.count(":") == 1:
        host, colon, port = text.partition(":")
    try:
        if "%" in host:
            raise ValueError(host)
        address = ipaddress.ip_address(host)
        if colon and not (port.isdigit() and port.isascii() and len(port) <= 5):
            raise ValueError(port)
        number = int(port) if colon else 0
        if number > 0xFFFF:
            raise ValueError(port)
    except ValueError:
        raise ForwardedError(f"forwarded address {text!r} is not an address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address, number


def forwarded_client(
    header: str, value: str, trusted: Callable[[_IPAddress], bool]
) -> tuple[str, int] | None:
    """The client named by a forwarded header that a trusted proxy sent, as C{(host, port)}.

    Each proxy appends the address it received the request from, so the entries are read from
    the right: trusted proxies are skipped, and the first other entry is the client (anything
    to its left came from the client itself and may be forged). When every entry is a trusted
    proxy, the left-most is the client. The port is C{0} when the header has none.

    @param header: C{"x-forwarded-for"} (comma-separated addresses) or C{"forwarded"}
        (RFC 7239, its C{for=} parameters).
    @param trusted: whether an address is a trusted proxy.
    @return: C{None} when the header names no client: empty, or the entry in the client's
        place is C{unknown} or obfuscated.
    @raise ForwardedError: the entry in the client's place (or a trusted one right of it) is
        not an address, or a C{Forwarded} header does not parse.
    """
    if header == "forwarded":
        entries = _forwarded_for(value)
    else:
        entries = [entry.strip(" \t") for entry in value.split(",")]
    if entries == [""]:
        return None
    client: tuple[_IPAddress, int] | None = None
    for entry in reversed(entries):
        if header != "forwarded" and not entry:
            raise ForwardedError(f"X-Forwarded-For header with an empty entry: {value!r}")
        node = _node(entry)
        if node is None:
            return None
        client = node
        if not trusted(node[0]):
            break
    assert client is not None
    return str(client[0]), client[1]
