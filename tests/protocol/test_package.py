"""Tests for L{pomelo_twisted.protocol.package}: package framing (protocol.md §3, §20 items 1-5)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from pomelo_twisted.protocol.errors import (
    EncodeError,
    PackageError,
    PackageTooLarge,
    PomeloError,
    ProtocolError,
)
from pomelo_twisted.protocol.package import (
    HEADER_SIZE,
    MAX_BODY,
    Package,
    PackageDecoder,
    PackageType,
    decode_packages,
    encode_package,
)
from tests.support.vectors import h, load_vectors


def _feedAll(decoder: PackageDecoder, chunks: list[bytes]) -> list[Package]:
    out: list[Package] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


# protocol.md §3.7, as literal test data: (type, body, wire bytes).
SPEC_EXAMPLES = [
    (PackageType.HANDSHAKE_ACK, b"", h("02 00 00 00")),
    (PackageType.HEARTBEAT, b"", h("03 00 00 00")),
    (PackageType.HANDSHAKE, b'{"sys":1}', h("01 00 00 09 7b 22 73 79 73 22 3a 31 7d")),
    (
        PackageType.KICK,
        b'{"reason":"kick"}',
        h("05 00 00 11 7b 22 72 65 61 73 6f 6e 22 3a 22 6b 69 63 6b 22 7d"),
    ),
    (
        PackageType.KICK,
        b'{"reason":"attack"}',
        h("05 00 00 13 7b 22 72 65 61 73 6f 6e 22 3a 22 61 74 74 61 63 6b 22 7d"),
    ),
]

packageTypes = st.sampled_from(list(PackageType))
packages = st.builds(Package, packageTypes, st.binary(max_size=300))


@st.composite
def splitStreams(draw: st.DrawFn) -> tuple[list[Package], bytes, list[bytes]]:
    """Some packages, their concatenated encoding, and that stream cut at arbitrary points."""
    pkgs = draw(st.lists(packages, max_size=8))
    stream = b"".join(encode_package(p.type, p.body) for p in pkgs)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    return pkgs, stream, chunks


class ConstantsTests(SynchronousTestCase):
    """The header constants and the type values of §3.1 and §3.2."""

    def test_constants(self) -> None:
        self.assertEqual(HEADER_SIZE, 4)
        self.assertEqual(MAX_BODY, 0xFFFFFF)
        self.assertEqual(MAX_BODY, 16777215)

    def test_types(self) -> None:
        self.assertEqual(
            {t.name: int(t) for t in PackageType},
            {"HANDSHAKE": 1, "HANDSHAKE_ACK": 2, "HEARTBEAT": 3, "DATA": 4, "KICK": 5},
        )

    def test_error_hierarchy(self) -> None:
        """A transport can catch every decode failure as one type."""
        self.assertTrue(issubclass(PackageTooLarge, PackageError))
        self.assertTrue(issubclass(PackageError, ProtocolError))
        self.assertTrue(issubclass(ProtocolError, PomeloError))
        self.assertTrue(issubclass(EncodeError, PomeloError))


class VectorTests(SynchronousTestCase):
    """Every case of vectors/packages.json (pomelo-protocol's own Package.encode)."""

    def setUp(self) -> None:
        self.cases = load_vectors("packages.json")["cases"]

    def _wire(self, case: dict) -> bytes:
        body = bytes.fromhex(case["body_hex"])
        if case["encoded_hex"] is not None:
            return bytes.fromhex(case["encoded_hex"])
        return bytes.fromhex(case["encoded_head_hex"]) + body

    def test_vectors_present(self) -> None:
        """The file covers every type, and at least one long body given as head + body."""
        self.assertEqual({c["type"] for c in self.cases}, {1, 2, 3, 4, 5})
        self.assertTrue(any(c["encoded_hex"] is None for c in self.cases))

    def test_encode(self) -> None:
        for case in self.cases:
            body = bytes.fromhex(case["body_hex"])
            encoded = encode_package(case["type"], body)
            self.assertEqual(encoded, self._wire(case), case["encoded_head_hex"])
            self.assertEqual(len(encoded), case["encoded_length"])
            self.assertEqual(encoded[:4], bytes.fromhex(case["encoded_head_hex"]))

    def test_encode_with_enum(self) -> None:
        for case in self.cases:
            body = bytes.fromhex(case["body_hex"])
            self.assertEqual(encode_package(PackageType(case["type"]), body), self._wire(case))

    def test_decoder_feed(self) -> None:
        for case in self.cases:
            decoder = PackageDecoder()
            result = decoder.feed(self._wire(case))
            self.assertEqual(
                result, [Package(PackageType(case["type"]), bytes.fromhex(case["body_hex"]))]
            )
            self.assertIsInstance(result[0].type, PackageType)
            self.assertEqual(decoder.buffered, 0)

    def test_decode_packages(self) -> None:
        for case in self.cases:
            self.assertEqual(
                decode_packages(self._wire(case)),
                [Package(PackageType(case["type"]), bytes.fromhex(case["body_hex"]))],
            )

    def test_all_vectors_in_one_stream(self) -> None:
        """All the vectors back to back, fed as one chunk, as decode_packages, and byte by byte."""
        stream = b"".join(self._wire(c) for c in self.cases)
        expected = [
            Package(PackageType(c["type"]), bytes.fromhex(c["body_hex"])) for c in self.cases
        ]
        self.assertEqual(PackageDecoder().feed(stream), expected)
        self.assertEqual(decode_packages(stream), expected)
        decoder = PackageDecoder()
        self.assertEqual(
            _feedAll(decoder, [stream[i : i + 1] for i in range(len(stream))]), expected
        )
        self.assertEqual(decoder.buffered, 0)


class SpecExampleTests(SynchronousTestCase):
    """protocol.md §3.7."""

    def test_encode(self) -> None:
        for ptype, body, wire in SPEC_EXAMPLES:
            self.assertEqual(encode_package(ptype, body), wire)

    def test_encode_default_body(self) -> None:
        self.assertEqual(encode_package(PackageType.HANDSHAKE_ACK), h("02 00 00 00"))
        self.assertEqual(encode_package(PackageType.HEARTBEAT), h("03 00 00 00"))

    def test_decode(self) -> None:
        for ptype, body, wire in SPEC_EXAMPLES:
            self.assertEqual(PackageDecoder().feed(wire), [Package(ptype, body)])
            self.assertEqual(decode_packages(wire), [Package(ptype, body)])

    def test_max_header(self) -> None:
        """The header of a 16 777 215-byte body is C{04 ff ff ff}; it decodes and round-trips."""
        body = b"\x5a" * 0xFFFFFF
        wire = encode_package(PackageType.DATA, body)
        self.assertEqual(wire[:4], h("04 ff ff ff"))
        self.assertEqual(len(wire), 4 + 0xFFFFFF)
        decoder = PackageDecoder()
        self.assertEqual(decoder.feed(h("04 ff ff ff")), [])
        self.assertEqual(decoder.buffered, 4)
        self.assertEqual(decoder.feed(wire[4:]), [Package(PackageType.DATA, body)])
        self.assertEqual(decoder.buffered, 0)

    def test_header_split(self) -> None:
        """§3.7: C{01 00} then C{00 09 ...} gives exactly one HANDSHAKE with body {"sys":1}."""
        decoder = PackageDecoder()
        self.assertEqual(decoder.feed(h("01 00")), [])
        self.assertEqual(decoder.buffered, 2)
        self.assertEqual(
            decoder.feed(h("00 09 7b 22 73 79 73 22 3a 31 7d")),
            [Package(PackageType.HANDSHAKE, b'{"sys":1}')],
        )
        self.assertEqual(decoder.buffered, 0)
        self.assertEqual(decoder.feed(b""), [])

    def test_handshake_split_everywhere(self) -> None:
        """§20 item 1: the handshake split at every byte position, in two chunks."""
        wire = h("01 00 00 09 7b 22 73 79 73 22 3a 31 7d")
        for i in range(len(wire) + 1):
            decoder = PackageDecoder()
            result = decoder.feed(wire[:i])
            result += decoder.feed(wire[i:])
            self.assertEqual(result, [Package(PackageType.HANDSHAKE, b'{"sys":1}')], i)
            self.assertEqual(decoder.buffered, 0)


class DecoderTests(SynchronousTestCase):
    """The incremental L{PackageDecoder} (§3.4)."""

    def test_zero_length_delivered_at_once(self) -> None:
        """§20 item 3: C{02 00 00 00} is delivered without waiting for more bytes."""
        decoder = PackageDecoder()
        self.assertEqual(decoder.feed(h("02 00 00 00")), [Package(PackageType.HANDSHAKE_ACK, b"")])
        self.assertEqual(decoder.buffered, 0)

    def test_zero_length_after_split_header(self) -> None:
        """The last header byte of an empty package completes it."""
        decoder = PackageDecoder()
        self.assertEqual(decoder.feed(h("03 00 00")), [])
        self.assertEqual(decoder.feed(h("00")), [Package(PackageType.HEARTBEAT, b"")])
        self.assertEqual(decoder.buffered, 0)

    def test_zero_length_before_partial(self) -> None:
        """An empty package followed by part of the next one: the first is delivered now."""
        decoder = PackageDecoder()
        self.assertEqual(
            decoder.feed(h("03 00 00 00 04 00 00 02 7b")),
            [Package(PackageType.HEARTBEAT, b"")],
        )
        self.assertEqual(decoder.buffered, 5)
        self.assertEqual(decoder.feed(h("7d")), [Package(PackageType.DATA, b"{}")])
        self.assertEqual(decoder.buffered, 0)

    def test_two_packages_in_one_chunk(self) -> None:
        """§20 item 2: two packages in one chunk are both delivered, in order."""
        wire = h("02 00 00 00") + h("03 00 00 00")
        self.assertEqual(
            PackageDecoder().feed(wire),
            [Package(PackageType.HANDSHAKE_ACK, b""), Package(PackageType.HEARTBEAT, b"")],
        )
        wire = b"".join(w for _, _, w in SPEC_EXAMPLES)
        self.assertEqual(PackageDecoder().feed(wire), [Package(t, b) for t, b, _ in SPEC_EXAMPLES])

    def test_one_byte_at_a_time(self) -> None:
        wire = b"".join(w for _, _, w in SPEC_EXAMPLES)
        decoder = PackageDecoder()
        seen: list[Package] = []
        for i in range(len(wire)):
            seen.extend(decoder.feed(wire[i : i + 1]))
        self.assertEqual(seen, [Package(t, b) for t, b, _ in SPEC_EXAMPLES])
        self.assertEqual(decoder.buffered, 0)

    def test_one_byte_at_a_time_delivers_as_soon_as_complete(self) -> None:
        """Each package comes out on exactly the byte that completes it."""
        wire = b"".join(w for _, _, w in SPEC_EXAMPLES)
        ends = []
        pos = 0
        for _, _, w in SPEC_EXAMPLES:
            pos += len(w)
            ends.append(pos)
        decoder = PackageDecoder()
        for i in range(len(wire)):
            got = decoder.feed(wire[i : i + 1])
            if i + 1 in ends:
                self.assertEqual(len(got), 1, i)
                self.assertEqual(decoder.buffered, 0)
            else:
                self.assertEqual(got, [], i)
                self.assertEqual(decoder.buffered, i + 1 - max([0, *[e for e in ends if e <= i]]))

    def test_empty_feed(self) -> None:
        decoder = PackageDecoder()
        self.assertEqual(decoder.feed(b""), [])
        self.assertEqual(decoder.buffered, 0)
        decoder.feed(h("04 00"))
        self.assertEqual(decoder.feed(b""), [])
        self.assertEqual(decoder.buffered, 2)

    def test_buffered(self) -> None:
        decoder = PackageDecoder()
        self.assertEqual(decoder.buffered, 0)
        decoder.feed(h("04 00 00 05 01 02"))
        self.assertEqual(decoder.buffered, 6)
        decoder.feed(h("03"))
        self.assertEqual(decoder.buffered, 7)
        self.assertEqual(
            decoder.feed(h("04 05 02")), [Package(PackageType.DATA, h("01 02 03 04 05"))]
        )
        self.assertEqual(decoder.buffered, 1)

    def test_max_body_attribute(self) -> None:
        self.assertEqual(PackageDecoder().max_body, MAX_BODY)
        self.assertEqual(PackageDecoder(100).max_body, 100)
        self.assertEqual(PackageDecoder(max_body=7).max_body, 7)

    @given(splitStreams())
    def test_any_split(self, sample: tuple[list[Package], bytes, list[bytes]]) -> None:
        """§3.4: any split of a valid stream gives the same packages, in order."""
        pkgs, stream, chunks = sample
        decoder = PackageDecoder()
        self.assertEqual(_feedAll(decoder, chunks), pkgs)
        self.assertEqual(decoder.buffered, 0)
        self.assertEqual(decode_packages(stream), pkgs)

    @given(st.lists(packages, min_size=1, max_size=4))
    def test_byte_by_byte_property(self, pkgs: list[Package]) -> None:
        stream = b"".join(encode_package(p.type, p.body) for p in pkgs)
        decoder = PackageDecoder()
        self.assertEqual(_feedAll(decoder, [stream[i : i + 1] for i in range(len(stream))]), pkgs)
        self.assertEqual(decoder.buffered, 0)

    @given(splitStreams(), st.binary(min_size=1, max_size=3))
    def test_any_split_with_trailing_partial_header(
        self, sample: tuple[list[Package], bytes, list[bytes]], tail: bytes
    ) -> None:
        """A trailing partial header is held, not delivered; decode_packages refuses it."""
        pkgs, stream, chunks = sample
        decoder = PackageDecoder()
        self.assertEqual(_feedAll(decoder, [*chunks, tail]), pkgs)
        self.assertEqual(decoder.buffered, len(tail))
        self.assertRaises(PackageError, decode_packages, stream + tail)


class DecoderErrorTests(SynchronousTestCase):
    """Unknown types, oversized headers and the failed state (§3.2, §3.3, §20 items 4-5)."""

    def test_unknown_types(self) -> None:
        """§20 item 4: types 0, 6 and 0xff are errors as soon as the header is complete."""
        for ptype in (0x00, 0x06, 0x07, 0x80, 0xFF):
            for length in (b"\x00\x00\x00", b"\x00\x00\x02"):
                header = bytes((ptype,)) + length
                self.assertRaises(PackageError, PackageDecoder().feed, header)
                self.assertRaises(PackageError, decode_packages, header)
                # Split: the error comes with the fourth byte, not before.
                decoder = PackageDecoder()
                self.assertEqual(decoder.feed(header[:3]), [])
                self.assertRaises(PackageError, decoder.feed, header[3:])

    def test_unknown_type_after_good_package(self) -> None:
        """The error is raised even when a good package came first in the same chunk."""
        self.assertRaises(PackageError, PackageDecoder().feed, h("03 00 00 00 06 00 00 00"))
        self.assertRaises(PackageError, decode_packages, h("03 00 00 00 00 00 00 00"))

    def test_unknown_type_once_fails_forever(self) -> None:
        decoder = PackageDecoder()
        self.assertRaises(PackageError, decoder.feed, h("00 00 00 00"))
        self.assertRaises(PackageError, decoder.feed, h("03 00 00 00"))
        self.assertRaises(PackageError, decoder.feed, b"")
        self.assertRaises(PackageError, decoder.feed, h("02 00 00 00"))

    def test_too_large_at_header(self) -> None:
        """§20 item 5: a length over max_body fails on the 4th header byte, before any body."""
        decoder = PackageDecoder(max_body=100)
        self.assertEqual(decoder.feed(h("04 00 00")), [])
        exc = self.assertRaises(PackageTooLarge, decoder.feed, h("65"))
        self.assertEqual(exc.length, 101)
        self.assertEqual(exc.maximum, 100)
        self.assertIsInstance(exc, PackageError)

    def test_too_large_whole_header(self) -> None:
        for max_body, header in [
            (100, h("04 00 00 65")),
            (0, h("04 00 00 01")),
            (65536, h("01 01 00 01")),
            (MAX_BODY - 1, h("04 ff ff ff")),
        ]:
            exc = self.assertRaises(PackageTooLarge, PackageDecoder(max_body).feed, header)
            self.assertEqual(exc.length, int.from_bytes(header[1:], "big"))
            self.assertEqual(exc.maximum, max_body)
            self.assertRaises(PackageTooLarge, decode_packages, header, max_body)

    def test_too_large_with_body_attached(self) -> None:
        """Also raised when (some of) the body arrives in the same chunk."""
        self.assertRaises(PackageTooLarge, PackageDecoder(2).feed, h("04 00 00 03 7b 22"))
        self.assertRaises(PackageTooLarge, PackageDecoder(2).feed, h("04 00 00 03 7b 22 7d"))
        self.assertRaises(PackageTooLarge, decode_packages, h("04 00 00 03 7b 22 7d"), 2)

    def test_too_large_after_good_package(self) -> None:
        self.assertRaises(
            PackageTooLarge, PackageDecoder(2).feed, h("04 00 00 02 7b 7d 04 00 00 03")
        )

    def test_exactly_max_body(self) -> None:
        """A length equal to max_body is accepted."""
        decoder = PackageDecoder(max_body=2)
        self.assertEqual(decoder.feed(h("04 00 00 02 7b 7d")), [Package(PackageType.DATA, b"{}")])
        self.assertEqual(
            decode_packages(h("04 00 00 02 7b 7d"), 2), [Package(PackageType.DATA, b"{}")]
        )
        decoder = PackageDecoder(max_body=0)
        self.assertEqual(decoder.feed(h("03 00 00 00")), [Package(PackageType.HEARTBEAT, b"")])

    def test_too_large_fails_forever(self) -> None:
        decoder = PackageDecoder(max_body=10)
        self.assertRaises(PackageTooLarge, decoder.feed, h("04 00 00 0b"))
        self.assertRaises(PackageError, decoder.feed, h("03 00 00 00"))
        self.assertRaises(PackageError, decoder.feed, b"")

    def test_default_max_accepts_full_header(self) -> None:
        """With the default maximum, the largest header is simply waited on."""
        decoder = PackageDecoder()
        self.assertEqual(decoder.feed(h("05 ff ff ff")), [])
        self.assertEqual(decoder.buffered, 4)


class DecodePackagesTests(SynchronousTestCase):
    """L{decode_packages}: a buffer of whole packages only (§3.5 REC)."""

    def test_empty(self) -> None:
        self.assertEqual(decode_packages(b""), [])

    def test_several(self) -> None:
        wire = h("04 00 00 14 06 06 6f 6e 43 68 61 74 7b 22 6d 73 67 22 3a 22 68 69 22 7d") + h(
            "04 00 00 0f 07 00 04 7b 22 6d 73 67 22 3a 22 79 6f 22 7d"
        )
        self.assertEqual(
            decode_packages(wire),
            [
                Package(PackageType.DATA, h("06 06 6f 6e 43 68 61 74") + b'{"msg":"hi"}'),
                Package(PackageType.DATA, h("07 00 04") + b'{"msg":"yo"}'),
            ],
        )

    def test_trailing_partial_header(self) -> None:
        for tail in (h("04"), h("04 00"), h("04 00 00")):
            self.assertRaises(PackageError, decode_packages, tail)
            self.assertRaises(PackageError, decode_packages, h("03 00 00 00") + tail)

    def test_truncated_body(self) -> None:
        """A body shorter than its header says is an error, not zero-padded (§3.5 REC)."""
        for wire in (
            h("04 00 00 01"),
            h("04 00 00 02 7b"),
            h("01 00 00 09 7b 22 73 79 73 22 3a 31"),
            h("03 00 00 00 05 00 00 11 7b"),
        ):
            self.assertRaises(PackageError, decode_packages, wire)

    def test_max_body(self) -> None:
        self.assertEqual(
            decode_packages(h("03 00 00 00"), max_body=0), [Package(PackageType.HEARTBEAT, b"")]
        )
        self.assertRaises(PackageTooLarge, decode_packages, h("04 00 00 01 00"), max_body=0)


class EncodeTests(SynchronousTestCase):
    """L{encode_package} (§3.1, §3.3)."""

    def test_header(self) -> None:
        self.assertEqual(encode_package(4, b"\x00" * 0x123456)[:4], h("04 12 34 56"))
        self.assertEqual(encode_package(1, b"x" * 256)[:4], h("01 00 01 00"))
        self.assertEqual(encode_package(1, b"x" * 65536)[:4], h("01 01 00 00"))

    def test_largest_body(self) -> None:
        wire = encode_package(PackageType.DATA, bytes(MAX_BODY))
        self.assertEqual(len(wire), MAX_BODY + 4)
        self.assertEqual(wire[:4], h("04 ff ff ff"))

    def test_body_too_long(self) -> None:
        """§3.3 MUST: a body over 0xFFFFFF bytes is refused, never masked."""
        body = bytes(0x1000000)
        self.assertRaises(EncodeError, encode_package, PackageType.DATA, body)
        self.assertRaises(EncodeError, encode_package, PackageType.KICK, body + b"x")

    @given(packageTypes, st.binary(max_size=1000))
    def test_round_trip(self, ptype: PackageType, body: bytes) -> None:
        wire = encode_package(ptype, body)
        self.assertEqual(wire[0], int(ptype))
        self.assertEqual(int.from_bytes(wire[1:4], "big"), len(body))
        self.assertEqual(wire[4:], body)
        self.assertEqual(decode_packages(wire), [Package(ptype, body)])


class GarbageTests(SynchronousTestCase):
    """Arbitrary bytes raise only L{PomeloError} subclasses (§20 item 43)."""

    @given(st.binary(max_size=200))
    def test_feed_garbage(self, data: bytes) -> None:
        decoder = PackageDecoder()
        try:
            pkgs = decoder.feed(data)
        except PomeloError as e:
            self.assertIsInstance(e, PackageError)
            return
        # What was delivered re-encodes to exactly the consumed prefix.
        consumed = b"".join(encode_package(p.type, p.body) for p in pkgs)
        self.assertEqual(consumed, data[: len(data) - decoder.buffered])

    @given(st.binary(max_size=200), st.integers(0, 300))
    def test_feed_garbage_small_max(self, data: bytes, max_body: int) -> None:
        decoder = PackageDecoder(max_body)
        try:
            for i in range(0, len(data), 7):
                for p in decoder.feed(data[i : i + 7]):
                    self.assertLessEqual(len(p.body), max_body)
        except PomeloError as e:
            self.assertIsInstance(e, PackageError)

    @given(st.binary(max_size=200))
    def test_decode_packages_garbage(self, data: bytes) -> None:
        try:
            pkgs = decode_packages(data)
        except PomeloError as e:
            self.assertIsInstance(e, PackageError)
            return
        self.assertEqual(b"".join(encode_package(p.type, p.body) for p in pkgs), data)


class ErrorCarriesPackagesTests(SynchronousTestCase):
    """An error keeps the complete packages decoded before it in the same input."""

    def test_unknown_type_after_packages(self) -> None:
        good = encode_package(PackageType.HEARTBEAT) + encode_package(PackageType.DATA, b"x")
        with self.assertRaises(PackageError) as caught:
            PackageDecoder().feed(good + b"\x09\x00\x00\x00")
        self.assertEqual(
            caught.exception.packages,
            (Package(PackageType.HEARTBEAT, b""), Package(PackageType.DATA, b"x")),
        )

    def test_too_large_after_package(self) -> None:
        data = encode_package(PackageType.HEARTBEAT) + b"\x04\x00\x01\x00"
        with self.assertRaises(PackageTooLarge) as caught:
            PackageDecoder(max_body=16).feed(data)
        self.assertEqual(caught.exception.packages, (Package(PackageType.HEARTBEAT, b""),))

    def test_truncated_message_keeps_whole_ones(self) -> None:
        with self.assertRaises(PackageError) as caught:
            decode_packages(encode_package(PackageType.HEARTBEAT) + b"\x04\x00")
        self.assertEqual(caught.exception.packages, (Package(PackageType.HEARTBEAT, b""),))
