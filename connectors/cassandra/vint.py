"""Cassandra's variable-length integers (org.apache.cassandra.utils.vint.VIntCoding).

Unsigned vint: the number of leading 1 bits of the first byte is the number of extra bytes
(0-8); the remaining bits of the first byte and the extra bytes hold the value, big-endian.
With 8 extra bytes (first byte 0xFF) the first byte carries no value bits. Values are 64-bit:
Java writes `long`s, so a negative long arrives as a 9-byte vint of its two's complement.

Signed vint: zigzag over the unsigned form (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...).

32-bit fields (`writeUnsignedVInt32(int)`) are sign-extended to 64 bits before encoding and
read back with a range check; `read_uvint32` does both.

Readers take any indexable bytes-like object (bytes is fastest) and a position, and return
`(value, new_position)`. They raise `VIntError` (a ValueError) on truncated input.
The mutation decoder inlines the 1-byte case itself and only calls in here for longer vints.
"""

from __future__ import annotations

__all__ = [
    "EXTRA_BYTES",
    "VIntError",
    "encode_uvint",
    "encode_uvint32",
    "encode_vint",
    "read_uvint",
    "read_uvint32",
    "read_vint",
    "uvint_size",
]

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1
_I32_MIN = -(1 << 31)
_I32_MAX = (1 << 31) - 1


class VIntError(ValueError):
    """A vint that is truncated or out of range for the field that holds it."""


# Number of extra bytes announced by each possible first byte: its count of leading 1 bits.
EXTRA_BYTES: bytes = bytes(8 - (b ^ 0xFF).bit_length() for b in range(256))
# Value bits kept from the first byte, indexed by the number of extra bytes.
_FIRST_MASK: tuple[int, ...] = tuple(0xFF >> n for n in range(9))


def read_uvint(buf, pos: int) -> tuple[int, int]:
    """An unsigned 64-bit vint at `pos`: (value in [0, 2**64), position after it)."""
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    extra = EXTRA_BYTES[first]
    end = pos + 1 + extra
    if end > len(buf):
        raise VIntError(f"vint at {pos} needs {extra} more bytes, {len(buf) - pos - 1} left")
    return ((first & _FIRST_MASK[extra]) << (extra << 3)
            | int.from_bytes(buf[pos + 1:end], "big")), end


def read_vint(buf, pos: int) -> tuple[int, int]:
    """A zigzag-encoded signed 64-bit vint: (value in [-2**63, 2**63), position after it)."""
    value, pos = read_uvint(buf, pos)
    return (value >> 1) ^ -(value & 1), pos


def read_uvint32(buf, pos: int) -> tuple[int, int]:
    """A 32-bit field written with writeUnsignedVInt32: read as 64 bits, must fit a Java int."""
    value, pos = read_uvint(buf, pos)
    if value > _I64_MAX:
        value -= _U64
    if value < _I32_MIN or value > _I32_MAX:
        raise VIntError(f"vint {value} ending at {pos} is out of range for a 32-bit integer")
    return value, pos


def uvint_size(value: int) -> int:
    """Bytes an unsigned vint of `value` (taken modulo 2**64) occupies."""
    value &= _U64 - 1
    bits = value.bit_length()
    if bits <= 7:
        return 1
    if bits > 56:
        return 9
    return (bits - 1) // 7 + 1


def encode_uvint(value: int) -> bytes:
    """Unsigned vint of `value`; negative values are taken as 64-bit two's complement."""
    value &= _U64 - 1
    size = uvint_size(value)
    if size == 1:
        return bytes((value,))
    if size == 9:
        return b"\xff" + value.to_bytes(8, "big")
    extra = size - 1
    raw = bytearray(value.to_bytes(size, "big"))
    raw[0] |= (0xFF << (8 - extra)) & 0xFF
    return bytes(raw)


def encode_uvint32(value: int) -> bytes:
    """What writeUnsignedVInt32(int) writes: the int sign-extended to 64 bits."""
    if value < _I32_MIN or value > _I32_MAX:
        raise VIntError(f"{value} is not a 32-bit integer")
    return encode_uvint(value)


def encode_vint(value: int) -> bytes:
    """Zigzag signed vint of a 64-bit `value`."""
    if value < -(1 << 63) or value > _I64_MAX:
        raise VIntError(f"{value} is not a 64-bit integer")
    return encode_uvint((value << 1) ^ (value >> 63))
