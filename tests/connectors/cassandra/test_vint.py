"""Cassandra vints: known encodings (VIntCoding) and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.cassandra.vint import (
    EXTRA_BYTES,
    VIntError,
    encode_uvint,
    encode_uvint32,
    encode_vint,
    read_uvint,
    read_uvint32,
    read_vint,
    uvint_size,
)

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
I64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
I32 = st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1)


@pytest.mark.parametrize(("value", "encoded"), [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "8080"),
    (0x3FFF, "bfff"),
    (0x4000, "c04000"),
    (0x1FFFFF, "dfffff"),
    (0x200000, "e0200000"),
    ((1 << 56) - 1, "feffffffffffffff"),
    (1 << 56, "ff0100000000000000"),
    ((1 << 64) - 1, "ffffffffffffffffff"),
    # The real 58-byte mutation's timestamp delta (docs/cassandra-cdc.md section 4).
    (0x136C1327CB48C, "fd36c1327cb48c"),
])
def test_known_unsigned_encodings(value: int, encoded: str) -> None:
    raw = bytes.fromhex(encoded)
    assert encode_uvint(value) == raw
    assert read_uvint(raw, 0) == (value, len(raw))
    assert uvint_size(value) == len(raw)


def test_extra_bytes_table_counts_leading_ones() -> None:
    assert EXTRA_BYTES[0x00] == 0 and EXTRA_BYTES[0x7F] == 0
    assert EXTRA_BYTES[0x80] == 1 and EXTRA_BYTES[0xBF] == 1
    assert EXTRA_BYTES[0xC0] == 2 and EXTRA_BYTES[0xFE] == 7 and EXTRA_BYTES[0xFF] == 8


def test_negative_int32_is_sign_extended_to_nine_bytes() -> None:
    # writeUnsignedVInt32(-1) writes the long -1.
    assert encode_uvint32(-1) == b"\xff" * 9
    assert read_uvint32(b"\xff" * 9, 0) == (-1, 9)
    assert read_uvint(b"\xff" * 9, 0) == ((1 << 64) - 1, 9)


def test_uvint32_out_of_range_is_an_error() -> None:
    with pytest.raises(VIntError):
        read_uvint32(encode_uvint(1 << 31), 0)
    with pytest.raises(VIntError):
        encode_uvint32(1 << 31)


def test_truncated_vint_is_an_error() -> None:
    with pytest.raises(VIntError):
        read_uvint(bytes.fromhex("c040"), 0)
    with pytest.raises(IndexError):
        read_uvint(b"", 0)


@pytest.mark.parametrize(("value", "zigzag"), [(0, 0), (-1, 1), (1, 2), (-2, 3), (2, 4)])
def test_zigzag(value: int, zigzag: int) -> None:
    assert encode_vint(value) == encode_uvint(zigzag)
    assert read_vint(encode_vint(value), 0) == (value, 1)


@given(U64, st.binary(max_size=3), st.binary(max_size=3))
def test_unsigned_round_trip_at_any_offset(value: int, before: bytes, after: bytes) -> None:
    raw = encode_uvint(value)
    assert read_uvint(before + raw + after, len(before)) == (value, len(before) + len(raw))
    assert len(raw) == uvint_size(value)


@given(I64)
def test_signed_round_trip(value: int) -> None:
    raw = encode_vint(value)
    assert read_vint(raw, 0) == (value, len(raw))


@given(I32)
def test_int32_round_trip(value: int) -> None:
    raw = encode_uvint32(value)
    assert read_uvint32(raw, 0) == (value, len(raw))
    assert len(raw) == (9 if value < 0 else uvint_size(value))


@given(U64)
def test_encoding_is_minimal(value: int) -> None:
    # Java's computeUnsignedVIntSize: 1 byte per 7 bits up to 8 bytes (56 bits), else 9.
    bits = value.bit_length()
    expected = 1 if bits <= 7 else 9 if bits > 56 else -(-bits // 7)
    assert len(encode_uvint(value)) == expected
