"""CQL types as system_schema spells them, and decoders for the values the commit log holds.

`parse_cql_type("frozen<map<text, frozen<list<int>>>>", keyspace, udts)` gives a `CqlType`: the
parsed tree, the cassandra-driver class whose `.deserialize(bytes, protocol_version)` decodes a
native-protocol value (`cassandra.cqltypes`; the driver has no parser for CQL type strings, only
for Java class names, so the tree is built here and handed to the classes' `apply_parameters` /
`UserType.make_udt_class`), and what the storage engine needs to know about the type:

- `fixed_length`: Java's `AbstractType.valueLengthIfFixed()` in 5.0. A value of such a type is
  written without a length prefix (cells, clustering values). Only boolean 1, int 4, float 4,
  bigint 8, double 8, timestamp 8, uuid 16, timeuuid 16, empty 0 and the legacy DateType 8 /
  LexicalUUIDType 16 are fixed, plus vectors of fixed-width elements (element width x dimension).
  smallint, tinyint, date, time, counter and every collection, tuple and UDT are length-prefixed.
- `is_complex`: a non-frozen list, set, map or UDT ("multi-cell"): one cell per element, each
  with a cell path. Everything nested inside a collection or UDT is frozen.

Value bytes are native-protocol encodings (collections inside frozen values use int32 sizes,
i.e. protocol v3+ form); `value_decoder(t)` returns a bytes -> python callable that agrees with
the driver's `from_binary(b, 5)` (for a handful of hot types it avoids the driver's call chain).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, SafeUUID

from cassandra import cqltypes, util

__all__ = [
    "CqlType",
    "CqlTypeError",
    "UdtDefinition",
    "parse_cql_type",
    "uuid_from_bytes",
    "value_decoder",
]

COLLECTIONS = frozenset({"list", "set", "map"})

# CQL native type name -> (driver class, Java valueLengthIfFixed or -1).
_NATIVE: dict[str, tuple[type, int]] = {
    "ascii": (cqltypes.AsciiType, -1),
    "bigint": (cqltypes.LongType, 8),
    "blob": (cqltypes.BytesType, -1),
    "boolean": (cqltypes.BooleanType, 1),
    "counter": (cqltypes.CounterColumnType, -1),
    "date": (cqltypes.SimpleDateType, -1),
    "decimal": (cqltypes.DecimalType, -1),
    "double": (cqltypes.DoubleType, 8),
    "duration": (cqltypes.DurationType, -1),
    "empty": (cqltypes.BytesType, 0),
    "float": (cqltypes.FloatType, 4),
    "inet": (cqltypes.InetAddressType, -1),
    "int": (cqltypes.Int32Type, 4),
    "smallint": (cqltypes.ShortType, -1),
    "text": (cqltypes.UTF8Type, -1),
    "time": (cqltypes.TimeType, -1),
    "timestamp": (cqltypes.TimestampType, 8),
    "timeuuid": (cqltypes.TimeUUIDType, 16),
    "tinyint": (cqltypes.ByteType, -1),
    "uuid": (cqltypes.UUIDType, 16),
    "varchar": (cqltypes.VarcharType, -1),
    "varint": (cqltypes.IntegerType, -1),
}

# Java marshal class (short name) -> valueLengthIfFixed, for types written as custom '...'.
_JAVA_FIXED: dict[str, int] = {
    "BooleanType": 1, "Int32Type": 4, "FloatType": 4, "LongType": 8, "DoubleType": 8,
    "TimestampType": 8, "DateType": 8, "UUIDType": 16, "TimeUUIDType": 16,
    "LexicalUUIDType": 16, "EmptyType": 0,
}
_JAVA_PREFIX = "org.apache.cassandra.db.marshal."


class CqlTypeError(ValueError):
    """A CQL type string that cannot be parsed, or names a UDT that is not defined."""


@dataclass(frozen=True)
class UdtDefinition:
    """A row of system_schema.types: field names and CQL type strings, in order."""

    keyspace: str
    name: str
    field_names: tuple[str, ...]
    field_types: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class CqlType:
    """One parsed CQL type.

    kind: a native name ("int", "text", ...), "list", "set", "map", "tuple", "udt", "vector" or
    "custom". params: element types (list/set: 1, map: key and value, tuple/udt: fields,
    vector: element). Two CqlTypes are equal when their canonical `cql` strings are.
    """

    kind: str
    cql: str
    driver: type = field(repr=False)
    fixed_length: int = -1
    frozen: bool = True
    params: tuple[CqlType, ...] = ()
    dimension: int | None = None
    udt_keyspace: str | None = None
    udt_name: str | None = None
    field_names: tuple[str, ...] = ()

    @property
    def is_complex(self) -> bool:
        """Multi-cell: a non-frozen collection or UDT (stored one cell per element)."""
        return not self.frozen and (self.kind in COLLECTIONS or self.kind == "udt")

    @property
    def is_counter(self) -> bool:
        return self.kind == "counter"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CqlType) and other.cql == self.cql

    def __hash__(self) -> int:
        return hash(self.cql)


# --- parsing ------------------------------------------------------------------------------------

def _tokens(text: str) -> list[str]:
    """Split into identifiers, numbers, quoted strings and the punctuation < > , ."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "<>,.":
            out.append(ch)
            i += 1
        elif ch == '"' or ch == "'":
            # Quoted identifier ("MyType", "" escapes a quote) or custom class ('org...').
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise CqlTypeError(f"unterminated quote in CQL type {text!r}")
                if text[j] == ch:
                    if j + 1 < n and text[j + 1] == ch:
                        buf.append(ch)
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            out.append(ch + "".join(buf))
            i = j + 1
        elif ch.isalnum() or ch == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            out.append(text[i:j])
            i = j
        else:
            raise CqlTypeError(f"unexpected {ch!r} in CQL type {text!r}")
    return out


def _quote_if_needed(name: str) -> str:
    plain = name.isidentifier() and name == name.lower() and name.isascii()
    return name if plain else '"' + name.replace('"', '""') + '"'


class _Parser:
    def __init__(self, text: str, keyspace: str, udts: Mapping[str, UdtDefinition],
                 cache: dict[str, CqlType]):
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0
        self.keyspace = keyspace
        self.udts = udts
        self.cache = cache
        self.resolving: tuple[str, ...] = ()

    def fail(self, why: str) -> CqlTypeError:
        return CqlTypeError(f"{why} in CQL type {self.text!r}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None:
            raise self.fail("unexpected end")
        if expected is not None and tok != expected:
            raise self.fail(f"expected {expected!r}, found {tok!r}")
        self.pos += 1
        return tok

    def parse(self) -> CqlType:
        result = self.type_(frozen=False)
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()!r}")
        return result

    def type_(self, frozen: bool) -> CqlType:
        tok = self.take()
        if tok.startswith("'"):
            return _custom(tok[1:])
        if tok.startswith('"'):
            return self.udt(tok[1:], frozen)
        word = tok.lower()
        if word == "frozen":
            self.take("<")
            inner = self.type_(frozen=True)
            self.take(">")
            return inner
        if word in COLLECTIONS:
            self.take("<")
            params = [self.type_(frozen=True)]
            if word == "map":
                self.take(",")
                params.append(self.type_(frozen=True))
            self.take(">")
            return _collection(word, tuple(params), frozen)
        if word == "tuple":
            self.take("<")
            params = [self.type_(frozen=True)]
            while self.peek() == ",":
                self.take(",")
                params.append(self.type_(frozen=True))
            self.take(">")
            return _tuple(tuple(params))
        if word == "vector":
            self.take("<")
            element = self.type_(frozen=True)
            self.take(",")
            size = self.take()
            if not size.isdigit() or int(size) <= 0:
                raise self.fail(f"bad vector dimension {size!r}")
            self.take(">")
            return _vector(element, int(size))
        if word in _NATIVE and self.peek() != ".":
            return _native(word)
        # A user-defined type, unquoted (case-insensitive), possibly keyspace-qualified.
        name = word
        if self.peek() == ".":
            self.take(".")
            qualified = self.take()
            name = qualified[1:] if qualified.startswith('"') else qualified.lower()
        return self.udt(name, frozen)

    def udt(self, name: str, frozen: bool) -> CqlType:
        definition = self.udts.get(name)
        if definition is None:
            raise self.fail(f"unknown user-defined type {name!r}")
        if name in self.resolving:
            raise self.fail(f"user-defined type {name!r} refers to itself")
        key = name
        base = self.cache.get(key)
        if base is None:
            fields = []
            outer = self.resolving
            self.resolving = outer + (name,)
            try:
                for field_type in definition.field_types:
                    sub = _Parser(field_type, self.keyspace, self.udts, self.cache)
                    sub.resolving = self.resolving
                    fields.append(sub.type_(frozen=True))
                    if sub.peek() is not None:
                        raise sub.fail(f"unexpected {sub.peek()!r}")
            finally:
                self.resolving = outer
            base = _udt(definition, tuple(fields))
            self.cache[key] = base
        if frozen:
            return base
        return CqlType(kind="udt", cql=_quote_if_needed(name), driver=base.driver,
                       frozen=False, params=base.params, udt_keyspace=base.udt_keyspace,
                       udt_name=base.udt_name, field_names=base.field_names)


def _native(name: str) -> CqlType:
    driver, fixed = _NATIVE[name]
    return CqlType(kind=name, cql=name, driver=driver, fixed_length=fixed)


def _collection(kind: str, params: tuple[CqlType, ...], frozen: bool) -> CqlType:
    driver = {"list": cqltypes.ListType, "set": cqltypes.SetType,
              "map": cqltypes.MapType}[kind].apply_parameters([p.driver for p in params])
    inner = f"{kind}<{', '.join(p.cql for p in params)}>"
    return CqlType(kind=kind, cql=f"frozen<{inner}>" if frozen else inner, driver=driver,
                   frozen=frozen, params=params)


def _tuple(params: tuple[CqlType, ...]) -> CqlType:
    driver = cqltypes.TupleType.apply_parameters([p.driver for p in params])
    return CqlType(kind="tuple", cql=f"frozen<tuple<{', '.join(p.cql for p in params)}>>",
                   driver=driver, params=params)


def _vector(element: CqlType, dimension: int) -> CqlType:
    driver = cqltypes.VectorType.apply_parameters([element.driver, dimension], None)
    fixed = element.fixed_length * dimension if element.fixed_length >= 0 else -1
    return CqlType(kind="vector", cql=f"vector<{element.cql}, {dimension}>", driver=driver,
                   fixed_length=fixed, params=(element,), dimension=dimension)


def _udt(definition: UdtDefinition, fields: tuple[CqlType, ...]) -> CqlType:
    driver = cqltypes.UserType.make_udt_class(
        definition.keyspace, definition.name, tuple(definition.field_names),
        tuple(f.driver for f in fields))
    return CqlType(kind="udt", cql=f"frozen<{_quote_if_needed(definition.name)}>",
                   driver=driver, params=fields, udt_keyspace=definition.keyspace,
                   udt_name=definition.name, field_names=tuple(definition.field_names))


def _custom(class_name: str) -> CqlType:
    try:
        driver = cqltypes.lookup_casstype(class_name)
    except ValueError as error:
        raise CqlTypeError(f"unparseable custom type {class_name!r}: {error}") from None
    short = class_name.removeprefix(_JAVA_PREFIX)
    fixed = _JAVA_FIXED.get(short, -1)
    if short.startswith("ReversedType(") and short.endswith(")"):
        fixed = _JAVA_FIXED.get(short[len("ReversedType("):-1].removeprefix(_JAVA_PREFIX), -1)
    return CqlType(kind="custom", cql=f"'{class_name}'", driver=driver, fixed_length=fixed)


def parse_cql_type(text: str, keyspace: str = "",
                   udts: Mapping[str, UdtDefinition] | None = None,
                   *, _cache: dict[str, CqlType] | None = None) -> CqlType:
    """Parse a CQL type as system_schema stores it (columns.type, types.field_types,
    dropped_columns.type). `udts` maps type names of `keyspace` to their definitions; nested
    UDTs are resolved through it. Raises CqlTypeError."""
    return _Parser(text, keyspace, udts or {}, {} if _cache is None else _cache).parse()


# --- value decoders -----------------------------------------------------------------------------

_int8 = struct.Struct(">b").unpack
_int16 = struct.Struct(">h").unpack
_int32 = struct.Struct(">i").unpack
_uint32 = struct.Struct(">I").unpack
_int64 = struct.Struct(">q").unpack
_float = struct.Struct(">f").unpack
_double = struct.Struct(">d").unpack
_from_bytes = int.from_bytes


_object_new = object.__new__
_object_setattr = object.__setattr__
_SAFE_UNKNOWN = SafeUUID.unknown


def uuid_from_bytes(b: bytes) -> UUID:
    """UUID(bytes=b), without UUID.__init__'s argument juggling (a third of the cost)."""
    if len(b) != 16:
        raise ValueError(f"a UUID has 16 bytes, not {len(b)}")
    u = _object_new(UUID)
    _object_setattr(u, "int", int.from_bytes(b, "big"))
    _object_setattr(u, "is_safe", _SAFE_UNKNOWN)
    return u


def _uuid(b: bytes) -> UUID | None:
    """uuid_from_bytes for a non-empty value, None for an empty one: one call, not two (a
    uuid partition key is in every mutation of its table)."""
    if not b:
        return None
    if len(b) != 16:
        raise ValueError(f"a UUID has 16 bytes, not {len(b)}")
    u = _object_new(UUID)
    _object_setattr(u, "int", int.from_bytes(b, "big"))
    _object_setattr(u, "is_safe", _SAFE_UNKNOWN)
    return u


# The driver's DateType.deserialize is `util.datetime_from_timestamp(int64 / 1000.0)`, i.e.
# DATETIME_EPOC + timedelta(seconds=<float>). Below 2**32 seconds from the epoch (the years
# 1834 to 2106) that float is within 2**-22 s of the exact millisecond instant, so timedelta's
# rounding to microseconds lands on exactly ms * 1000 us: the integer constructor
# (timedelta(0, 0, 0, ms) is timedelta(milliseconds=ms)) gives the same datetime without the
# float conversion (about 40% cheaper). Outside that range, the driver's own float arithmetic
# (test_values_fastpath.py samples both sides of the boundary densely).
_EPOCH = util.DATETIME_EPOC
_EXACT_MS = (1 << 32) * 1000
_SCALED_DECIMAL = cqltypes.DecimalType.deserialize


def _timestamp(b: bytes) -> Any:
    if not b:
        return None
    ms = _int64(b)[0]
    if -_EXACT_MS < ms < _EXACT_MS:
        return _EPOCH + timedelta(0, 0, 0, ms)
    return _EPOCH + timedelta(seconds=ms / 1000.0)


def _decimal(b: bytes) -> Any:
    # DecimalType.deserialize without its Python-level helpers: the same '%de%d' string handed
    # to Decimal (int.from_bytes(signed) is marshal.varint_unpack for a non-empty unscaled value).
    # Shorter values (no unscaled bytes, truncated scale) go to the driver for its exact errors.
    if len(b) > 4:
        return Decimal(f"{_from_bytes(b[4:], 'big', signed=True)}e{-_int32(b[:4])[0]}")
    return _SCALED_DECIMAL(b, 5) if b else None


def _inet(b: bytes) -> Any:
    # InetAddressType.deserialize: 16 bytes are IPv6, anything else goes to inet_ntoa.
    if not b:
        return None
    if len(b) == 16:
        return util.inet_ntop(socket.AF_INET6, b)
    return socket.inet_ntoa(b)


def _fast(kind: str) -> Callable[[bytes], Any] | None:
    """Hot-path decoders equal to the driver's from_binary(b, 5) for these types, values and
    types alike, and raising the same errors for bad lengths (test_values_fastpath.py compares
    them on random bytes); each handles the empty value itself (one call, not two). They skip
    the driver's deserialize -> marshal helper -> util call chain, which costs more than the
    decoding itself for small values."""
    if kind == "int":
        return lambda b: _int32(b)[0] if b else None
    if kind == "bigint":
        return lambda b: _int64(b)[0] if b else None
    if kind in ("text", "varchar"):
        return lambda b: b.decode("utf-8")
    if kind == "ascii":
        return lambda b: b.decode("ascii")
    if kind == "blob":
        return bytes
    if kind in ("uuid", "timeuuid"):
        return _uuid
    if kind == "boolean":
        return lambda b: b != b"\x00" if b else None
    if kind == "double":
        return lambda b: _double(b)[0] if b else None
    if kind == "float":
        return lambda b: _float(b)[0] if b else None
    if kind == "smallint":
        return lambda b: _int16(b)[0] if b else None
    if kind == "tinyint":
        return lambda b: _int8(b)[0] if b else None
    if kind == "timestamp":
        return _timestamp
    if kind == "decimal":
        return _decimal
    if kind == "varint":  # marshal.varint_unpack, for a non-empty value
        return lambda b: _from_bytes(b, "big", signed=True) if b else None
    if kind == "date":  # SimpleDateType: days with the epoch at 2**31
        return lambda b: util.Date(_uint32(b)[0] - 2147483648) if b else None
    if kind == "time":
        return lambda b: util.Time(_int64(b)[0]) if b else None
    if kind == "inet":
        return _inet
    return None


def value_decoder(t: CqlType) -> Callable[[bytes], Any]:
    """bytes (exactly one value) -> python value, as the driver decodes it (protocol v5).

    An empty value decodes like the driver's from_binary: '' / b'' for string and blob types,
    None for the others."""
    if t.kind == "empty":
        return lambda b: None
    fast = _fast(t.kind)
    if fast is not None:
        return fast
    deserialize = t.driver.deserialize
    if getattr(t.driver, "empty_binary_ok", False):
        return lambda b: deserialize(b, 5)
    return lambda b: deserialize(b, 5) if b else None
