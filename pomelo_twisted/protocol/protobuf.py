"""pomelo-protobuf: Pomelo's protobuf-like body codec (protocol.md §9.3), sans-IO.

This is I{not} standard protobuf. The differences that matter (all verified against
pomelo-protobuf 0.4.0, see C{tests/vectors/protobuf.json}):

  - C{int32} is ZigZag encoded like C{sInt32};
  - a repeated field of a simple type (C{uInt32}, C{sInt32}, C{int32}, C{float}, C{double}) is
    one key carrying the I{element's} wire type, then the element I{count}, then the elements;
  - fields are written in the order of the object's own keys, not in tag order;
  - decoders ignore the wire type (the browser client writes wrong ones, §9.3.3), so a tag
    this side does not know can never be skipped and is always an error.

Definitions go through three forms. The I{raw} form is what a user writes in
C{clientProtos.json}/C{serverProtos.json}. L{parse_protos} turns it into the I{parsed} form,
the plain JSON-able dictionary every client reads from the handshake and that the protos
version is computed from. From the parsed form this module compiles private lookup tables
(L{_Message}, L{_Field}) with the field keys already encoded, so that encoding and decoding do
no string work per field. L{Protobuf} keeps all three for one server; the module-level
L{encode}/L{decode} compile the one route they need on every call and are meant for tests and
one-off use.

Every failure, of a definition, a value or a body, is a L{ProtobufError}.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from . import json_codec
from .errors import ProtobufError

__all__ = [
    "MAX_DEPTH",
    "SCALAR_TYPES",
    "Protobuf",
    "decode",
    "encode",
    "parse_protos",
    "protos_version",
]

#: Deepest nesting of message values that L{encode} and L{decode} accept, and of message
#: definitions that L{parse_protos} accepts. A bound rather than recursion limits, so that a
#: recursive definition fed a deep (or cyclic) value, or a body made only of nested length
#: prefixes, fails with a L{ProtobufError} instead of a C{RecursionError}.
MAX_DEPTH: Final = 64

#: The scalar types pomelo-protobuf implements. Every other type name must be a message.
SCALAR_TYPES: Final = frozenset({"uInt32", "sInt32", "int32", "float", "double", "string"})

_OPTIONS: Final = frozenset({"required", "optional", "repeated"})
_RESERVED_NAMES: Final = frozenset({"__messages", "__tags"})

# Upstream computes the key as JS C{(tag << 3) | wiretype}, a signed 32-bit operation.
_MAX_TAG: Final = (1 << 28) - 1
# What a 10-byte varint holds; L{decode} reads at most 10 bytes per varint.
_MAX_VARINT: Final = (1 << 64) - 1
_MIN_ZIGZAG: Final = -(1 << 63)
_MAX_ZIGZAG: Final = (1 << 63) - 1
_MAX_VARINT_SHIFT: Final = 70

# Field kinds. The first four are the "simple" types of the repeated-field rule.
_UINT32: Final = 0
_SINT32: Final = 1  # sInt32 and int32: both ZigZag
_FLOAT: Final = 2
_DOUBLE: Final = 3
_STRING: Final = 4
_MESSAGE: Final = 5
_DEAD: Final = 6  # a type that is neither a scalar nor a visible message (see _Field)

_SCALAR_KINDS: Final[Mapping[str, int]] = {
    "uInt32": _UINT32,
    "sInt32": _SINT32,
    "int32": _SINT32,
    "float": _FLOAT,
    "double": _DOUBLE,
    "string": _STRING,
}
_WIRE_TYPES: Final[Mapping[int, int]] = {_UINT32: 0, _SINT32: 0, _FLOAT: 5, _DOUBLE: 1}

_F32: Final = struct.Struct("<f")
_F64: Final = struct.Struct("<d")


# --- the parsed form ------------------------------------------------------------------------


def parse_protos(raw: Mapping[str, Any], *, strict: bool = True) -> dict[str, Any]:
    """Turn user-written definitions into the parsed form the handshake sends (§9.3.1-2).

    The layout copies upstream exactly, because the protos version is a hash of its JSON
    text: for each message its fields C{{"option", "type", "tag"}} in file order, then
    C{"__messages"}, then C{"__tags"}; every object ordered the way JavaScript orders keys
    (integer-like keys first, ascending). Keys that are neither C{"message <Name>"} nor
    C{"<rule> <type> <name>"} are ignored, and a field reusing a tag already seen in the same
    message is ignored, as upstream does.

    With C{strict} (the default) a field whose type is not a supported scalar nor a message
    visible from it (§9.3.1: the enclosing message's own nested messages, then top-level
    C{"message <Name>"} entries) is rejected. Upstream accepts such a definition and then
    writes a key without a value whenever the field is set (§18 B6). C{strict=False} accepts
    it, for definition files that have such a field but never set it; the codec then treats
    the field as described in L{_Field}.

    @raise ProtobufError: a malformed definition, naming the route and field.
    """
    if not isinstance(raw, Mapping):
        raise ProtobufError(f"proto definitions must be an object, not {type(raw).__name__}")
    roots = frozenset(
        key[len("message ") :] for key in raw if isinstance(key, str) and key.startswith("message ")
    )
    parsed: dict[str, Any] = {}
    for route, definition in raw.items():
        if not isinstance(route, str):
            raise ProtobufError(f"proto route {route!r} is not a string")
        parsed[route] = _parse_message(definition, route, "", roots, strict, 0)
    return _js_ordered(parsed)


def _parse_message(
    raw: Any, route: str, where: str, roots: frozenset[str], strict: bool, depth: int
) -> dict[str, Any]:
    """Parse one message definition; C{where} is its path of nested names inside C{route}."""
    label = f"proto {route!r}" + (f", message {where!r}" if where else "")
    if not isinstance(raw, Mapping):
        raise ProtobufError(f"{label}: a message definition must be an object")
    if depth >= MAX_DEPTH:
        raise ProtobufError(f"{label}: message definitions nested deeper than {MAX_DEPTH}")
    fields: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    tags: dict[int, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ProtobufError(f"{label}: key {key!r} is not a string")
        words = key.split(" ")
        rule = words[0]
        if rule == "message":
            if len(words) == 2:
                nested[words[1]] = value
            continue
        if rule not in _OPTIONS or len(words) != 3:
            continue
        type_name, name = words[1], words[2]
        tag = _check_tag(value, label, name)
        if tag in tags:
            continue
        if not name or name in _RESERVED_NAMES:
            raise ProtobufError(f"{label}: invalid field name {name!r}")
        if name in fields:
            raise ProtobufError(f"{label}: field name {name!r} is used twice")
        fields[name] = {"option": rule, "type": type_name, "tag": tag}
        tags[tag] = name
    if strict:
        for name, field in fields.items():
            type_name = field["type"]
            if type_name not in SCALAR_TYPES and type_name not in nested and type_name not in roots:
                path = f"{where}.{name}" if where else name
                raise ProtobufError(
                    f"proto {route!r}, field {path!r}: type {type_name!r} is not supported; use "
                    f"one of {', '.join(sorted(SCALAR_TYPES))} or a message type declared in "
                    f"the same message or as a top-level 'message {type_name}'"
                )
    result = _js_ordered(fields)
    result["__messages"] = _js_ordered(
        {
            name: _parse_message(
                definition, route, f"{where}.{name}" if where else name, roots, strict, depth + 1
            )
            for name, definition in nested.items()
        }
    )
    result["__tags"] = {str(tag): tags[tag] for tag in sorted(tags)}
    return result


def _check_tag(value: Any, label: str, name: str) -> int:
    """A tag number as upstream can encode it: an integer in 0..2**28-1."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON 1.0; JavaScript cannot tell it from 1
    if type(value) is not int or not 0 <= value <= _MAX_TAG:
        raise ProtobufError(
            f"{label}, field {name!r}: tag {value!r} is not an integer in 0..{_MAX_TAG}"
        )
    return value


def _is_array_index(key: str) -> bool:
    """Whether JavaScript treats C{key} as an array index, which it orders before other keys."""
    return (
        key.isascii() and key.isdigit() and (key == "0" or key[0] != "0") and int(key) < 0xFFFFFFFF
    )


def _js_ordered(obj: dict[str, Any]) -> dict[str, Any]:
    """C{obj} with its keys in the order C{JSON.stringify} writes them."""
    indices = [key for key in obj if _is_array_index(key)]
    if not indices:
        return obj
    ordered = {key: obj[key] for key in sorted(indices, key=int)}
    for key, value in obj.items():
        if key not in ordered:
            ordered[key] = value
    return ordered


def protos_version(parsed_client: Mapping[str, Any], parsed_server: Mapping[str, Any]) -> str:
    """Upstream's protos version: base64(md5(JSON(client) + JSON(server))) (§9.3.2).

    This always hashes. Upstream's version is C{""} only when neither proto file exists,
    which a pair of dictionaries cannot tell; L{Protobuf} handles that case.

    @raise ProtobufError: the definitions are not JSON-serialisable.
    """
    try:
        text = json_codec.dumps(parsed_client) + json_codec.dumps(parsed_server)
    except TypeError as e:
        raise ProtobufError(f"protos cannot be serialised as JSON: {e}") from None
    digest = hashlib.md5(text, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


# --- compiled lookup tables -----------------------------------------------------------------


class _Field:
    """One field of a compiled message, with its key already encoded.

    A field whose type is neither a scalar nor a visible message (only possible with
    C{parse_protos(strict=False)}, or protos received from a server) is I{dead}. Upstream
    decoders read its key and then no value, so it decodes as absent, which this module does
    too; upstream encoders write the key alone (corrupt output, §18 B6), where this module
    raises instead.
    """

    __slots__ = ("key", "kind", "message", "name", "repeated", "type")

    def __init__(
        self, name: str, option: str, type_name: str, tag: int, kind: int, message: _Message | None
    ) -> None:
        self.name = name
        self.type = type_name
        self.kind = kind
        self.repeated = option == "repeated"
        self.message = message
        self.key = bytes(_varint((tag << 3) | _WIRE_TYPES.get(kind, 2)))


class _Message:
    """Lookup tables of one message: by field name (encoding) and by tag (decoding)."""

    __slots__ = ("by_name", "by_tag", "required", "where")

    def __init__(self, where: str) -> None:
        #: Path used in errors: C{""} for a route's own message, C{"Item"} for a message nested
        #: in it, C{"message Item"} for a top-level one.
        self.where = where
        self.by_name: dict[str, _Field] = {}
        self.by_tag: dict[int, _Field] = {}
        self.required: tuple[str, ...] = ()

    def label(self, name: str) -> str:
        """How errors name field C{name} of this message."""
        return f"field {self.where + '.' + name if self.where else name!r}"


_Lookup = Callable[[Any, str, str], _Message]


def _compile(protos: Mapping[str, Any], routes: Iterable[str]) -> dict[str, _Message]:
    """Compile C{routes} of a parsed protos set; definitions they share are compiled once.

    Works from a worklist, not by recursion, so that definitions referring to themselves and
    deeply nested ones are fine.

    @raise ProtobufError: a route is missing or a definition is not in the parsed form.
    """
    if not isinstance(protos, Mapping):
        raise ProtobufError(f"parsed protos must be an object, not {type(protos).__name__}")
    # id() of a parsed definition -> its compiled form; protos keeps the definitions alive.
    compiled: dict[int, _Message] = {}
    pending: list[tuple[_Message, Any, str]] = []

    def lookup(definition: Any, where: str, route: str) -> _Message:
        message = compiled.get(id(definition))
        if message is None:
            message = compiled[id(definition)] = _Message(where)
            pending.append((message, definition, route))
        return message

    result: dict[str, _Message] = {}
    for route in routes:
        definition = protos.get(route)
        if definition is None:
            raise ProtobufError(f"no proto for route {route!r}")
        result[route] = lookup(definition, route if route.startswith("message ") else "", route)
    while pending:
        message, definition, route = pending.pop()
        _fill(message, definition, protos, lookup, route)
    return result


def _fill(
    message: _Message, definition: Any, protos: Mapping[str, Any], lookup: _Lookup, route: str
) -> None:
    """Fill in C{message}'s tables from its parsed C{definition}."""
    label = f"proto {route!r}" + (f", message {message.where!r}" if message.where else "")
    if not isinstance(definition, Mapping):
        raise ProtobufError(f"{label}: a parsed message must be an object")
    nested = definition.get("__messages", {})
    tags = definition.get("__tags")
    if not isinstance(nested, Mapping) or not isinstance(tags, Mapping | None):
        raise ProtobufError(f"{label}: malformed __messages or __tags")
    by_name: dict[str, _Field] = {}
    by_tag: dict[int, _Field] = {}
    required: list[str] = []
    for name, spec in definition.items():
        if name in _RESERVED_NAMES:
            continue
        if not isinstance(spec, Mapping):
            raise ProtobufError(f"{label}, field {name!r}: not an object")
        option, type_name, tag = spec.get("option"), spec.get("type"), spec.get("tag")
        if option not in _OPTIONS or not isinstance(type_name, str):
            raise ProtobufError(f"{label}, field {name!r}: bad option or type")
        tag = _check_tag(tag, label, name)
        kind = _SCALAR_KINDS.get(type_name)
        target: _Message | None = None
        if kind is None:
            sub = nested.get(type_name)
            if sub is not None:
                nested_where = f"{message.where}.{type_name}" if message.where else type_name
                target = lookup(sub, nested_where, route)
            else:
                sub = protos.get("message " + type_name)
                if sub is not None:
                    target = lookup(sub, "message " + type_name, "message " + type_name)
            kind = _DEAD if target is None else _MESSAGE
        field = _Field(name, option, type_name, tag, kind, target)
        by_name[name] = field
        if tags is None:
            by_tag.setdefault(tag, field)
        if option == "required":
            required.append(name)
    if tags is not None:
        # Decoders go through __tags (tag -> name), as upstream decoders do.
        for tag_key, name in tags.items():
            field_for_tag = by_name.get(name) if isinstance(name, str) else None
            if (
                not isinstance(tag_key, str)
                or not tag_key.isascii()
                or not tag_key.isdigit()
                or field_for_tag is None
            ):
                raise ProtobufError(f"{label}: __tags entry {tag_key!r}: {name!r} is not a field")
            by_tag[int(tag_key)] = field_for_tag
    message.by_name = by_name
    message.by_tag = by_tag
    message.required = tuple(required)


# --- encoding -------------------------------------------------------------------------------


def _varint(value: int) -> bytearray:
    out = bytearray()
    _write_varint(out, value)
    return out


def _write_varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _as_int(value: Any, message: _Message, field: _Field) -> int:
    """An integral value: C{int} (not C{bool}) or an integral C{float}, as upstream's parseInt
    would leave it unchanged."""
    if type(value) is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise ProtobufError(
        f"{message.label(field.name)} ({field.type}): expected an integer, got {value!r}"
    )


def _as_float(value: Any, message: _Message, field: _Field) -> float:
    if type(value) is float:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            pass
    raise ProtobufError(
        f"{message.label(field.name)} ({field.type}): expected a number, got {value!r}"
    )


def _pack_float(value: float) -> bytes:
    """IEEE single, little-endian; out-of-range values become infinities, as in JavaScript."""
    try:
        return _F32.pack(value)
    except OverflowError:
        return _F32.pack(math.copysign(math.inf, value))


def _encode_value(message: _Message, field: _Field, value: Any, out: bytearray, depth: int) -> None:
    """Append one value of C{field} (no key)."""
    kind = field.kind
    if kind == _UINT32:
        number = _as_int(value, message, field)
        if not 0 <= number <= _MAX_VARINT:
            raise ProtobufError(
                f"{message.label(field.name)} (uInt32): {number} is "
                + ("negative" if number < 0 else "too large")
            )
        if number < 0x80:
            out.append(number)
        else:
            _write_varint(out, number)
    elif kind == _SINT32:
        number = _as_int(value, message, field)
        if not _MIN_ZIGZAG <= number <= _MAX_ZIGZAG:
            raise ProtobufError(
                f"{message.label(field.name)} ({field.type}): {number} is too large"
            )
        number = number << 1 if number >= 0 else ((-number) << 1) - 1
        if number < 0x80:
            out.append(number)
        else:
            _write_varint(out, number)
    elif kind == _STRING:
        if not isinstance(value, str):
            raise ProtobufError(
                f"{message.label(field.name)} (string): expected a str, got {value!r}"
            )
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtobufError(
                f"{message.label(field.name)}: string is not valid Unicode"
            ) from None
        if len(raw) < 0x80:
            out.append(len(raw))
        else:
            _write_varint(out, len(raw))
        out += raw
    elif kind == _DOUBLE:
        out += _F64.pack(_as_float(value, message, field))
    elif kind == _FLOAT:
        out += _pack_float(_as_float(value, message, field))
    elif kind == _MESSAGE:
        assert field.message is not None
        sub = bytearray()
        _encode_message(field.message, value, sub, depth + 1)
        _write_varint(out, len(sub))
        out += sub
    else:
        raise ProtobufError(
            f"{message.label(field.name)}: type {field.type!r} is not supported or not a message "
            "type visible from this message, so it cannot be encoded"
        )


def _encode_message(message: _Message, value: Any, out: bytearray, depth: int) -> None:
    """Append the fields of C{value} in the order of its own keys (upstream order, §9.3.4)."""
    if not isinstance(value, Mapping):
        where = f"message {message.where!r}" if message.where else "the message"
        raise ProtobufError(f"{where} must be a mapping, got {type(value).__name__}")
    if depth > MAX_DEPTH:
        raise ProtobufError(f"message values nested deeper than {MAX_DEPTH} (a cycle?)")
    for name in message.required:
        if value.get(name) is None:
            raise ProtobufError(f"required {message.label(name)} is missing")
    by_name = message.by_name
    for name, item in value.items():
        if item is None:
            continue
        field = by_name.get(name)
        if field is None:
            continue
        if not field.repeated:
            out += field.key
            _encode_value(message, field, item, out, depth)
            continue
        if not isinstance(item, list | tuple):
            raise ProtobufError(
                f"repeated {message.label(name)}: expected a list, got {type(item).__name__}"
            )
        if not item:
            continue
        if field.kind <= _DOUBLE:
            # One key with the element's wire type, the element count, the elements.
            out += field.key
            _write_varint(out, len(item))
            for element in item:
                _encode_value(message, field, element, out, depth)
        else:
            for element in item:
                if element is None:
                    raise ProtobufError(f"repeated {message.label(name)}: None in the list")
                out += field.key
                _encode_value(message, field, element, out, depth)


def _encode_route(message: _Message, route: str, msg: Any) -> bytes:
    out = bytearray()
    try:
        _encode_message(message, msg, out, 0)
    except ProtobufError as e:
        raise ProtobufError(f"route {route!r}: {e}") from None
    return bytes(out)


def encode(protos: Mapping[str, Any], route: str, msg: Mapping[str, Any]) -> bytes:
    """Encode C{msg} with the parsed definition C{protos[route]} (§9.3.3-4).

    Keys that are not fields are skipped, C{None} counts as absent, and empty lists are left
    out. An empty result is possible (every field absent); upstream sends it as an empty body.

    @raise ProtobufError: no such route, a required field missing, a value of the wrong type
        or out of range (negative C{uInt32}, say), or a field of an unsupported type set.
        Upstream sends an empty body when it fails to encode; that decision is the caller's.
    """
    return _encode_route(_compile(protos, (route,))[route], route, msg)


# --- decoding -------------------------------------------------------------------------------


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a varint of at most 10 bytes ending before C{end}; return C{(value, next pos)}."""
    if pos >= end:
        raise ProtobufError("truncated varint")
    byte = data[pos]
    pos += 1
    if byte < 0x80:
        return byte, pos
    value = byte & 0x7F
    shift = 7
    while True:
        if pos >= end:
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= _MAX_VARINT_SHIFT:
            raise ProtobufError("varint longer than 10 bytes")


def _decode_string(raw: bytes) -> str:
    """UTF-8, also accepting the CESU-8 surrogate pairs the browser client writes for characters
    outside the BMP (§9.2); anything else invalid is an error."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        text = raw.decode("utf-8", "surrogatepass")
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeError:
        raise ProtobufError("string is not valid UTF-8") from None


def _decode_message(
    message: _Message, data: bytes, pos: int, end: int, depth: int
) -> dict[str, Any]:
    """Decode the fields in C{data[pos:end]}; every read is bounded by C{end} (§9.3.5)."""
    if depth > MAX_DEPTH:
        raise ProtobufError(f"message values nested deeper than {MAX_DEPTH}")
    result: dict[str, Any] = {}
    by_tag = message.by_tag
    while pos < end:
        key = data[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _read_varint(data, pos, end)
        # The wire type (key & 7) is ignored: the declared type decides (§9.3.3 quirk).
        field = by_tag.get(key >> 3)
        if field is None:
            where = f" in message {message.where!r}" if message.where else ""
            raise ProtobufError(f"unknown tag {key >> 3}{where}")
        kind = field.kind
        if kind == _DEAD:
            continue  # upstream reads no value for it (see _Field)
        if field.repeated and kind <= _DOUBLE:
            count, pos = _read_varint(data, pos, end)
            values = result.get(field.name)
            if values is None:
                values = result[field.name] = []
            if kind in (_DOUBLE, _FLOAT):
                size = count * (8 if kind == _DOUBLE else 4)
                if size > end - pos:
                    raise ProtobufError(f"{message.label(field.name)}: truncated")
                fmt = f"<{count}{'d' if kind == _DOUBLE else 'f'}"
                values.extend(struct.unpack_from(fmt, data, pos))
                pos += size
            else:
                if count > end - pos:
                    raise ProtobufError(f"{message.label(field.name)}: truncated")
                for _ in range(count):
                    number, pos = _read_varint(data, pos, end)
                    values.append((number >> 1) ^ -(number & 1) if kind == _SINT32 else number)
            continue
        value: Any
        if kind <= _SINT32:
            if pos < end and data[pos] < 0x80:
                value = data[pos]
                pos += 1
            else:
                value, pos = _read_varint(data, pos, end)
            if kind == _SINT32:
                value = (value >> 1) ^ -(value & 1)
        elif kind in (_STRING, _MESSAGE):
            if pos < end and data[pos] < 0x80:
                length = data[pos]
                pos += 1
            else:
                length, pos = _read_varint(data, pos, end)
            if length > end - pos:
                raise ProtobufError(f"{message.label(field.name)}: truncated")
            if kind == _STRING:
                value = _decode_string(data[pos : pos + length])
            else:
                assert field.message is not None
                value = _decode_message(field.message, data, pos, pos + length, depth + 1)
            pos += length
        elif kind == _DOUBLE:
            if end - pos < 8:
                raise ProtobufError(f"{message.label(field.name)}: truncated")
            (value,) = _F64.unpack_from(data, pos)
            pos += 8
        else:  # _FLOAT
            if end - pos < 4:
                raise ProtobufError(f"{message.label(field.name)}: truncated")
            (value,) = _F32.unpack_from(data, pos)
            pos += 4
        if field.repeated:
            values = result.get(field.name)
            if values is None:
                result[field.name] = [value]
            else:
                values.append(value)
        else:
            result[field.name] = value  # the last occurrence wins
    return result


def _decode_route(
    message: _Message, route: str, data: bytes | bytearray | memoryview
) -> dict[str, Any]:
    if type(data) is not bytes:
        data = bytes(data)
    try:
        return _decode_message(message, data, 0, len(data), 0)
    except ProtobufError as e:
        raise ProtobufError(f"route {route!r}: {e}") from None


def decode(
    protos: Mapping[str, Any], route: str, data: bytes | bytearray | memoryview
) -> dict[str, Any]:
    """Decode a body with the parsed definition C{protos[route]} (§9.3.5).

    Wire types are ignored, as upstream does and the browser client needs. Required fields
    are not enforced (upstream does not either). Keys appear in the order first seen.

    @raise ProtobufError: no such route, an unknown tag, a truncated or over-long value, bad
        UTF-8, or nesting deeper than L{MAX_DEPTH}.
    """
    return _decode_route(_compile(protos, (route,))[route], route, data)


# --- one server's protos ---------------------------------------------------------------------


def _proto(table: Mapping[str, _Message], side: str, route: str) -> _Message:
    message = table.get(route)
    if message is None:
        raise ProtobufError(f"no {side} proto for route {route!r}")
    return message


class Protobuf:
    """Holds one server's protos: parsed client and server definitions and the version.

    The tables for every route are compiled once, here, so a bad definition fails at start-up
    and not at the first message.

    @ivar client: parsed definitions of what clients send (C{sys.protos.client}).
    @ivar server: parsed definitions of what the server sends (C{sys.protos.server}).
    @ivar version: the protos version (C{sys.protos.version}); C{""} when neither definition
        was given, which is upstream's value when no proto file exists (§5.4).
    """

    __slots__ = ("_client", "_server", "client", "server", "version")

    client: dict[str, Any]
    server: dict[str, Any]
    version: str

    def __init__(
        self,
        client: Mapping[str, Any] | None = None,
        server: Mapping[str, Any] | None = None,
        *,
        strict: bool = True,
    ) -> None:
        """Parse raw (user-written) definitions; C{None} means "no such file".

        @param strict: see L{parse_protos}.
        @raise ProtobufError: a bad definition.
        """
        parsed_client = {} if client is None else parse_protos(client, strict=strict)
        parsed_server = {} if server is None else parse_protos(server, strict=strict)
        if client is None and server is None:
            version = ""  # no proto file at all: upstream's version is "" (§5.4)
        else:
            version = protos_version(parsed_client, parsed_server)
        self._setup(parsed_client, parsed_server, version)

    def _setup(self, client: dict[str, Any], server: dict[str, Any], version: str) -> None:
        self.client = client
        self.server = server
        self.version = version
        self._client = _compile(client, client)
        self._server = _compile(server, server)

    @classmethod
    def from_parsed(
        cls, client: Mapping[str, Any], server: Mapping[str, Any], version: str | None = None
    ) -> Protobuf:
        """Use definitions already in the parsed form, as a client receives them in the
        handshake. C{version} defaults to the one computed from them; a client should pass
        the server's C{sys.protos.version}.

        @raise ProtobufError: the definitions are not in the parsed form.
        """
        self = cls.__new__(cls)
        if not isinstance(client, Mapping) or not isinstance(server, Mapping):
            raise ProtobufError("parsed protos must be objects")
        parsed_client, parsed_server = dict(client), dict(server)
        if version is None:
            version = protos_version(parsed_client, parsed_server)
        self._setup(parsed_client, parsed_server, version)
        return self

    @classmethod
    def from_config_dir(
        cls,
        path: str | os.PathLike[str],
        *,
        strict: bool = True,
        client_file: str = "clientProtos.json",
        server_file: str = "serverProtos.json",
    ) -> Protobuf:
        """Read C{clientProtos.json} and C{serverProtos.json} from a directory, as Pomelo reads
        its C{config} directory. A missing file counts as no definitions.

        @raise ProtobufError: a file that is not valid JSON or holds bad definitions; the
            message starts with the file's path.
        """
        parsed: list[dict[str, Any] | None] = []
        for name in (client_file, server_file):
            filename = os.path.join(path, name)
            raw = _read_json(filename)
            try:
                parsed.append(None if raw is None else parse_protos(raw, strict=strict))
            except ProtobufError as e:
                raise ProtobufError(f"{filename}: {e}") from None
        client, server = parsed
        if client is None and server is None:
            return cls()
        return cls.from_parsed(client or {}, server or {})

    def has_client(self, route: str) -> bool:
        """Whether bodies clients send on C{route} are protobuf (§9.1)."""
        return route in self._client

    def has_server(self, route: str) -> bool:
        """Whether bodies the server sends on C{route} are protobuf (§9.1)."""
        return route in self._server

    def encode_server(self, route: str, msg: Mapping[str, Any]) -> bytes:
        """Encode a response or push body (server side). See L{encode}."""
        return _encode_route(_proto(self._server, "server", route), route, msg)

    def decode_client(self, route: str, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        """Decode a request or notify body (server side). See L{decode}."""
        return _decode_route(_proto(self._client, "client", route), route, data)

    def encode_client(self, route: str, msg: Mapping[str, Any]) -> bytes:
        """Encode a request or notify body (client side). See L{encode}."""
        return _encode_route(_proto(self._client, "client", route), route, msg)

    def decode_server(self, route: str, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        """Decode a response or push body (client side). See L{decode}."""
        return _decode_route(_proto(self._server, "server", route), route, data)

    def __repr__(self) -> str:
        return (
            f"<Protobuf version={self.version!r} client={len(self.client)} routes "
            f"server={len(self.server)} routes>"
        )


def _read_json(path: str) -> Any:
    """The JSON content of C{path}, or C{None} when the file does not exist."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ProtobufError(f"cannot read {path}: {e}") from None
    try:
        return json_codec.loads(data)
    except json_codec.JSONDecodeError as e:
        raise ProtobufError(f"{path}: not valid JSON: {e}") from None
