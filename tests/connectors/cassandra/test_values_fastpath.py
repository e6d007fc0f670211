"""The hand-written value decoders (values._fast) against the driver's own decoding.

Each fast path must give what `driver.from_binary(raw, 5)` gives: an equal value of the same
type, or, for bytes the driver rejects, an exception of the same type with the same message
(value errors end up in UndecodableUpdate reasons, which must not change either).
"""

from __future__ import annotations

import math
import random
import struct
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.cassandra.values import _fast, parse_cql_type, value_decoder

FAST_TYPES = sorted(k for k in ("int", "bigint", "text", "varchar", "ascii", "blob", "uuid",
                                "timeuuid", "boolean", "double", "float", "smallint", "tinyint",
                                "timestamp", "decimal", "varint", "date", "time", "inet")
                    if _fast(k) is not None)


def _outcome(decode, raw: bytes):
    try:
        value = decode(raw)
    except Exception as error:  # noqa: BLE001 - the error itself is compared
        return ("error", type(error), str(error))
    return ("value", type(value), value)


def _assert_same(type_name: str, raw: bytes) -> None:
    t = parse_cql_type(type_name)
    got = _outcome(value_decoder(t), raw)
    expected = _outcome(lambda b: t.driver.from_binary(b, 5), raw)
    assert got[:2] == expected[:2], (type_name, raw.hex(), got, expected)
    if got[0] == "value" and isinstance(got[2], float) and math.isnan(got[2]):
        assert math.isnan(expected[2])
    else:
        assert got[2] == expected[2], (type_name, raw.hex(), got, expected)
        if got[1] is Decimal:
            # Decimal('1.0') == Decimal('1.00'): the exponent must match too.
            assert got[2].as_tuple() == expected[2].as_tuple()


def test_every_hot_type_has_a_fast_path() -> None:
    assert "timestamp" in FAST_TYPES and "decimal" in FAST_TYPES and "int" in FAST_TYPES
    assert len(FAST_TYPES) == 19


# Older fast paths that knowingly differ from the driver on malformed lengths only (kept as they
# are: changing them would change error records): boolean reads any non-empty length (Java
# always writes one byte), uuid/timeuuid raise ValueError with their own message.
LENIENT = {"boolean", "uuid", "timeuuid"}


@pytest.mark.parametrize("type_name", sorted(set(FAST_TYPES) - LENIENT))
@settings(max_examples=300)
@given(raw=st.binary(max_size=24))
def test_random_bytes_decode_like_the_driver(type_name: str, raw: bytes) -> None:
    """Any bytes at all, of any length (invalid UTF-8 and non-ASCII included): same value and
    type, or same error."""
    _assert_same(type_name, raw)


@pytest.mark.parametrize("type_name", sorted(LENIENT))
@settings(max_examples=300)
@given(raw=st.binary(max_size=24))
def test_lenient_fast_paths(type_name: str, raw: bytes) -> None:
    t = parse_cql_type(type_name)
    expected = _outcome(lambda b: t.driver.from_binary(b, 5), raw)
    got = _outcome(value_decoder(t), raw)
    if expected[0] == "value":
        assert got == expected
    elif type_name != "boolean":
        assert got[:2] == expected[:2]


# Fixed widths the driver expects, to draw well-formed values more often than random lengths do.
_WIDTH = {"int": 4, "bigint": 8, "uuid": 16, "timeuuid": 16, "boolean": 1, "double": 8,
          "float": 4, "smallint": 2, "tinyint": 1, "timestamp": 8, "date": 4, "time": 8}


@pytest.mark.parametrize("type_name", sorted(_WIDTH))
@settings(max_examples=300)
@given(data=st.data())
def test_well_formed_fixed_width_values(type_name: str, data: st.DataObject) -> None:
    _assert_same(type_name, data.draw(st.binary(min_size=_WIDTH[type_name],
                                                max_size=_WIDTH[type_name])))


@pytest.mark.parametrize("type_name", ["inet"])
@given(raw=st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16)))
def test_well_formed_inet(type_name: str, raw: bytes) -> None:
    _assert_same(type_name, raw)


@settings(max_examples=500)
@given(scale=st.integers(-(1 << 31), (1 << 31) - 1), unscaled=st.binary(min_size=1, max_size=20))
def test_decimal_any_scale_and_unscaled_bytes(scale: int, unscaled: bytes) -> None:
    # Non-minimal encodings (leading 0x00 / 0xff bytes) included: Java may write those.
    _assert_same("decimal", struct.pack(">i", scale) + unscaled)


def _ms(ms: int) -> bytes:
    return struct.pack(">q", ms)


@settings(max_examples=1000)
@given(ms=st.integers(-(1 << 63), (1 << 63) - 1))
def test_timestamp_any_long(ms: int) -> None:
    _assert_same("timestamp", _ms(ms))


def test_timestamp_around_the_exact_range_and_rounding_edges() -> None:
    """The integer path covers |ms| < 2**32 * 1000; the float path (the driver's) the rest,
    including the OverflowError beyond datetime's range."""
    edge = (1 << 32) * 1000
    cases = [0, 1, -1, 999, -999, 1000, -1001, 1735689600123, -62135596800000,
             253402300799999, 253402300800000, -(1 << 63), (1 << 63) - 1]
    for base in (edge, -edge):
        cases += [base + d for d in range(-3, 4)]
    rng = random.Random(20251126)
    # Dense sampling inside the integer path's range, where a rounding slip would show.
    cases += [rng.randrange(-edge + 1, edge) for _ in range(50000)]
    cases += [rng.randrange(edge - 10**6, edge) for _ in range(2000)]
    cases += [rng.randrange(-edge + 1, -edge + 10**6) for _ in range(2000)]
    for ms in cases:
        _assert_same("timestamp", _ms(ms))


@settings(max_examples=300)
@given(n=st.integers(-(1 << 200), 1 << 200))
def test_varint_values(n: int) -> None:
    t = parse_cql_type("varint")
    _assert_same("varint", t.driver.serialize(n, 5))


@settings(max_examples=300)
@given(days=st.integers(0, (1 << 32) - 1))
def test_date_whole_range(days: int) -> None:
    _assert_same("date", struct.pack(">I", days))
