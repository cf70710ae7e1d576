# -*- test-case-name: tests.server.test_limits -*-
"""The pieces of the connector's resource limits that know nothing of Pomelo (docs/security.md).

  - L{Blocklist}: exact addresses and CIDR networks, changeable at run time (Pomelo's host
    filter, without its unanchored regexes);
  - L{TokenBucket}: the per-connection request rate limit (and its WebSocket control frames);
  - L{SharedBuckets}: the per-address request budget, one bucket shared by the connections of
    one address;
  - L{OutboundGuard}: a streaming producer that learns from a transport when its write buffer
    is full, and counts what is written while it stays full (the slow-reader cap).

None of them does any I/O or reads a clock: callers pass the time in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

__all__ = [
    "RATE_LIMITED_CODE",
    "Blocklist",
    "IPAddress",
    "IPNetwork",
    "OutboundGuard",
    "SharedBuckets",
    "TokenBucket",
    "ip_key",
    "parse_ip",
    "parse_network",
    "read_blocklist_file",
]

#: The C{code} of the response to a request over the rate limit ("too many requests").
RATE_LIMITED_CODE = 429

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: IPv6 clients are counted per /64: one host usually owns a whole /64.
IPV6_COUNT_PREFIX = 64


def parse_ip(host: object) -> IPAddress | None:
    """An address from a peer's C{host}, IPv4-mapped IPv6 normalised to IPv4; C{None} if none.

    C{::ffff:1.2.3.4} (a dual-stack socket's view of an IPv4 client) is C{1.2.3.4}, so that a
    blocklist entry or a per-address count cannot be dodged by the address family.
    """
    if not isinstance(host, str):
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped
        if address.scope_id:
            return ipaddress.IPv6Address(host.partition("%")[0])
    return address


def parse_network(entry: str) -> IPNetwork:
    """A blocklist entry: an address (C{1.2.3.4}, C{2001:db8::1}) or a network (C{10.0.0.0/8}).

    Host bits are ignored (C{10.1.2.3/8} is C{10.0.0.0/8}); IPv4-mapped IPv6 entries become the
    IPv4 network they map.

    @raise ValueError: not an address or network.
    """
    text = entry.strip()
    if not text:
        raise ValueError("empty blocklist entry")
    network = ipaddress.ip_network(text, strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def ip_key(address: IPAddress) -> IPAddress | IPNetwork:
    """What a per-address connection limit counts: the IPv4 address, or the IPv6 /64."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    return ipaddress.IPv6Network((address, IPV6_COUNT_PREFIX), strict=False)


class Blocklist:
    """Addresses and networks refused at connection time (Pomelo's ``blacklist``).

    Matching is exact: C{1.2.3.4} matches that address only, C{1.2.3.0/24} the 256 addresses
    of that network (Pomelo tests each entry as an unanchored regex, so C{1.2.3.4} also matches
    C{11.2.3.45}). A lookup costs one set probe per distinct prefix length in the list, however
    long the list is.

    It may be changed at any time (L{add}, L{remove}, L{replace}, L{clear}); a change applies to
    connections accepted after it. L{Connector.close_blocked} closes the open ones.
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._networks: set[IPNetwork] = set()
        # version -> prefix length -> network addresses shifted right past the host bits
        self._index: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        self.replace(entries)

    def _rebuild(self) -> None:
        index: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for network in self._networks:
            bits = network.max_prefixlen - network.prefixlen
            index[network.version].setdefault(network.prefixlen, set()).add(
                int(network.network_address) >> bits
            )
        self._index = index

    def add(self, entry: str) -> IPNetwork:
        """Block an address or network; return it as stored (normalised).

        @raise ValueError: not an address or network.
        """
        network = parse_network(entry)
        self._networks.add(network)
        bits = network.max_prefixlen - network.prefixlen
        self._index[network.version].setdefault(network.prefixlen, set()).add(
            int(network.network_address) >> bits
        )
        return network

    def remove(self, entry: str) -> bool:
        """Unblock an entry given as it was added (or in any equivalent spelling).

        Removing C{10.0.0.0/8} does not unblock C{10.1.2.3} if that address was added on its
        own. Return whether the entry was there.

        @raise ValueError: not an address or network.
        """
        network = parse_network(entry)
        if network not in self._networks:
            return False
        self._networks.discard(network)
        self._rebuild()
        return True

    def replace(self, entries: Iterable[str]) -> None:
        """Make the list exactly C{entries}; nothing changes if one of them is invalid.

        @raise ValueError: an entry is not an address or network.
        """
        networks = {parse_network(entry) for entry in entries}
        self._networks = networks
        self._rebuild()

    def clear(self) -> None:
        """Unblock everything."""
        self.replace(())

    def blocks(self, address: IPAddress) -> bool:
        """Whether C{address} (already parsed and normalised, see L{parse_ip}) is blocked."""
        by_prefix = self._index[address.version]
        if not by_prefix:
            return False
        value = int(address)
        width = address.max_prefixlen
        for prefixlen, networks in by_prefix.items():
            if (value >> (width - prefixlen)) in networks:
                return True
        return False

    def __contains__(self, host: object) -> bool:
        """C{"1.2.3.4" in blocklist}: whether a host string (or address) is blocked."""
        address = (
            host
            if isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address)
            else parse_ip(host)
        )
        return address is not None and self.blocks(address)

    def __iter__(self) -> Iterator[str]:
        """The entries, as strings, in a stable order (IPv4 first, then by network)."""
        for network in sorted(self._networks, key=lambda n: (n.version, n)):
            if network.prefixlen == network.max_prefixlen:
                yield str(network.network_address)
            else:
                yield str(network)

    def __len__(self) -> int:
        return len(self._networks)

    def __repr__(self) -> str:
        return f"Blocklist({list(self)!r})"


def read_blocklist_file(path: str) -> tuple[list[str], list[str]]:
    """Read a blocklist file: one address or network per line, C{#} starts a comment.

    Return the valid entries and the lines that are not (with their line numbers), so that a
    typo costs one entry, not the whole list.

    @raise OSError: the file cannot be read.
    """
    entries: list[str] = []
    errors: list[str] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                parse_network(text)
            except ValueError as e:
                errors.append(f"{path}:{number}: {text!r}: {e}")
            else:
                entries.append(text)
    return entries, errors


class TokenBucket:
    """A token bucket: C{rate} tokens a second, at most C{burst} saved up; one per request.

    A new bucket is full, so a client may send C{burst} requests at once (a game client
    typically sends a few right after the handshake), then C{rate} a second on average.
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(1.0, float(burst))
        self.tokens = self.burst
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend a token if there is one; return whether there was."""
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait(self, tokens: float, now: float) -> float:
        """Seconds from C{now} until the bucket holds C{tokens} (at most C{burst})."""
        have = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        return max(0.0, (min(tokens, self.burst) - have) / self.rate)


class SharedBuckets:
    """One L{TokenBucket} per key (an address, see L{ip_key}), shared by every user of the key.

    A key's bucket is made by its first L{acquire} and forgotten at its last L{release}, so
    the memory held follows the open connections, not the addresses ever seen.
    """

    __slots__ = ("_buckets", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[object, tuple[TokenBucket, list[int]]] = {}

    def acquire(self, key: object, now: float) -> TokenBucket:
        """The bucket of C{key}, counting one more user of it."""
        entry = self._buckets.get(key)
        if entry is None:
            entry = self._buckets[key] = (TokenBucket(self.rate, self.burst, now), [0])
        entry[1][0] += 1
        return entry[0]

    def release(self, key: object) -> None:
        """One user of C{key} is gone; the last one frees the bucket."""
        entry = self._buckets.get(key)
        if entry is None:
            return
        entry[1][0] -= 1
        if not entry[1][0]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


@implementer(IPushProducer)
class OutboundGuard:
    """The slow-reader cap of one connection, on a transport's producer signals.

    Registered as a streaming producer, it is told C{pauseProducing} when the transport's write
    buffer is over the transport's own threshold (64 KiB for a Twisted TCP socket) and
    C{resumeProducing} once that buffer has drained completely. The transport keeps
    accepting writes while paused; this guard counts the bytes written meanwhile and calls
    C{overflow} once they pass C{limit}. The count is an upper estimate of what is queued
    beyond the transport's threshold: what the client reads while paused is not subtracted
    until the buffer empties.

    Nothing is copied: the transport holds the very bytes objects it was given (a broadcast
    package is shared by every connection's buffer).

    @ivar queued: bytes written since the last pause, while paused.
    @ivar paused: whether the transport has said its buffer is full.
    """

    __slots__ = ("_overflow", "_transport", "limit", "overflowed", "paused", "queued")

    def __init__(self, limit: int, overflow: Callable[[int], object]) -> None:
        self.limit = limit
        self.queued = 0
        self.paused = False
        self.overflowed = False
        self._overflow = overflow
        self._transport: Any = None

    def attach(self, transport: Any) -> bool:
        """Register on C{transport}; C{False} if it already has a producer (a twisted.web
        channel, when a WebSocket is served through a web site) and so cannot be watched."""
        try:
            transport.registerProducer(self, True)
        except (RuntimeError, AttributeError):
            return False
        self._transport = transport
        return True

    def detach(self) -> None:
        """Unregister; needed before closing gracefully: a Twisted transport does not close
        while a paused producer is registered, and a TLS one not while any is."""
        transport, self._transport = self._transport, None
        self.paused = False
        if transport is not None:
            # RuntimeError: a test transport with nothing registered any more.
            with suppress(RuntimeError):
                transport.unregisterProducer()

    def wrote(self, size: int) -> None:
        """Account for C{size} bytes just handed to the transport."""
        if self.paused:
            self.queued += size
            if self.queued > self.limit and not self.overflowed:
                self.overflowed = True
                self._overflow(self.queued)

    # IPushProducer

    def pauseProducing(self) -> None:
        # A transport calls this on every write while its buffer is full: start counting once.
        if not self.paused:
            self.paused = True
            self.queued = 0

    def resumeProducing(self) -> None:
        self.paused = False
        self.queued = 0

    def stopProducing(self) -> None:
        # The connection is gone and the transport has dropped its reference.
        self._transport = None
        self.paused = False


class SlowReaderGuarded:
    """Mixin of the two transports (TCP, WebSocket): the slow-reader cap on their transport.

    The class using it provides C{transport}, C{socket} and C{abortConnection}.
    """

    guard: OutboundGuard | None = None
    socket: Any = None
    transport: Any

    def _guardOutbound(self, limit: int | None) -> None:
        """Watch the transport's buffer when C{limit} (C{max_outbound_buffer}) is set."""
        if limit:
            guard = OutboundGuard(limit, self._slowReader)
            if guard.attach(self.transport):
                self.guard = guard

    def _slowReader(self, queued: int) -> None:
        socket = self.socket
        if socket is not None:
            socket.slow_reader(queued)
        else:
            self.abortConnection()

    if TYPE_CHECKING:

        def abortConnection(self) -> None: ...
