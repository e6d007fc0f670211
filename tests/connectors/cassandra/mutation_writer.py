"""A small Mutation WRITER for tests: the messaging form of Cassandra 5.0, from the spec.

Written from docs/cassandra-cdc.md section 4 and the Java serializers' write side
(Mutation.serializeInternal, UnfilteredRowIteratorSerializer.serialize, EncodingStats.
Serializer, Columns.Serializer.serialize/serializeSubset, UnfilteredSerializer.serialize,
ClusteringPrefix.serializeValuesWithoutSize, Cell.Serializer.serialize), independently of
connectors.cassandra.mutation (only the vint writer is shared; it has its own tests), so that the
decoder is tested against bytes it did not produce.

The caller gives raw value bytes (native encodings) and absolute times; the writer computes the
EncodingStats the way EncodingStats.Collector does, delta-encodes with Java's arithmetic and
picks the same flags Java would (row timestamp/TTL reuse, empty values, all columns present).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from uuid import UUID

from connectors.cassandra.vint import encode_uvint, encode_uvint32

TS_EPOCH = 1442880000000000
LDT_EPOCH = 1442880000
LONG_MIN = -(1 << 63)
LONG_MAX = (1 << 63) - 1


def to_int32(v: int) -> int:
    """Java's (int) cast of a long."""
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


@dataclass
class WCell:
    """A cell. value None with deleted=True is a tombstone; ldt is the absolute local deletion
    (tombstone) or expiration (ttl > 0) time."""

    value: bytes | None
    ts: int
    ttl: int = 0
    ldt: int | None = None
    deleted: bool = False


@dataclass
class WComplex:
    deletion: tuple[int, int] | None  # (markedForDeleteAt, localDeletionTime)
    elements: list[tuple[bytes, WCell]] = field(default_factory=list)


@dataclass
class WColumn:
    name: str
    complex: bool = False
    fixed: int = -1  # valueLengthIfFixed of the column type (simple columns only)


@dataclass
class WRow:
    clustering: list[bytes | None] = field(default_factory=list)
    cells: dict[str, WCell | WComplex] = field(default_factory=dict)
    liveness: tuple[int, int, int | None] | None = None  # (ts, ttl, expiration)
    deletion: tuple[int, int] | None = None
    shadowable: bool = False


@dataclass
class WMarker:
    """A range tombstone bound (kind 0, 1, 6, 7) or boundary (2, 5). For a boundary,
    `deletion` is the END deletion and `start_deletion` the start one."""

    kind: int
    prefix: list[bytes | None]
    deletion: tuple[int, int]
    start_deletion: tuple[int, int] | None = None


@dataclass
class WUpdate:
    table_id: UUID
    key: bytes
    regulars: list[WColumn] = field(default_factory=list)
    statics: list[WColumn] = field(default_factory=list)
    clustering_fixed: list[int] = field(default_factory=list)  # per clustering column
    partition_deletion: tuple[int, int] | None = None
    static_row: WRow | None = None
    unfiltereds: list[WRow | WMarker] = field(default_factory=list)
    row_estimate: int | None = 1
    empty: bool = False


def composite_key(parts: list[bytes]) -> bytes:
    """CompositeType.build: per component u16 length, bytes, end-of-component 0."""
    return b"".join(struct.pack(">H", len(p)) + p + b"\x00" for p in parts)


class _Stats:
    def __init__(self) -> None:
        self.ts: list[int] = []
        self.ldt: list[int] = []
        self.ttl: list[int] = []

    def deletion(self, d: tuple[int, int] | None) -> None:
        if d is not None:
            self.ts.append(d[0])
            self.ldt.append(d[1])

    def cell(self, c: WCell) -> None:
        self.ts.append(c.ts)
        if c.ttl and not c.deleted:
            self.ttl.append(c.ttl)
            self.ldt.append(c.ldt)
        elif c.deleted:
            self.ldt.append(c.ldt)

    def row(self, r: WRow) -> None:
        if r.liveness is not None:
            ts, ttl, exp = r.liveness
            self.ts.append(ts)
            if ttl:
                self.ttl.append(ttl)
                self.ldt.append(exp)
        self.deletion(r.deletion)
        for c in r.cells.values():
            if isinstance(c, WComplex):
                self.deletion(c.deletion)
                for _, e in c.elements:
                    self.cell(e)
            else:
                self.cell(c)

    def get(self) -> tuple[int, int, int]:
        return (min(self.ts) if self.ts else TS_EPOCH,
                min(self.ldt) if self.ldt else LDT_EPOCH,
                min(self.ttl) if self.ttl else 0)


class _Writer:
    def __init__(self, u: WUpdate):
        self.u = u
        self.out = bytearray()
        stats = _Stats()
        stats.deletion(u.partition_deletion)
        if u.static_row is not None:
            stats.row(u.static_row)
        for x in u.unfiltereds:
            if isinstance(x, WRow):
                stats.row(x)
            else:
                stats.deletion(x.deletion)
                stats.deletion(x.start_deletion)
        self.min_ts, self.min_ldt, self.min_ttl = stats.get()

    def uv(self, v: int) -> None:
        self.out += encode_uvint(v)

    def uv32(self, v: int) -> None:
        self.out += encode_uvint32(to_int32(v))

    def timestamp(self, ts: int) -> None:
        self.uv(ts - self.min_ts)  # writeUnsignedVInt(long): wraps mod 2^64

    def ldt(self, ldt: int) -> None:
        self.uv32(ldt - self.min_ldt)  # (int)(ldt - min)

    def ttl(self, ttl: int) -> None:
        self.uv32(ttl - self.min_ttl)

    def deletion(self, d: tuple[int, int]) -> None:
        self.timestamp(d[0])
        self.ldt(d[1])

    def value(self, raw: bytes, fixed: int) -> None:
        if fixed >= 0:
            assert len(raw) == fixed, (raw, fixed)
            self.out += raw
        else:
            self.uv32(len(raw))
            self.out += raw

    def columns(self, cols: list[WColumn]) -> None:
        self.uv32(len(cols))
        for c in cols:
            name = c.name.encode()
            self.uv32(len(name))
            self.out += name

    def clustering_values(self, values: list[bytes | None]) -> None:
        for start in range(0, len(values), 32):
            block = values[start:start + 32]
            header = 0
            for i, v in enumerate(block):
                if v is None:
                    header |= 1 << (i * 2 + 1)
                elif v == b"":
                    header |= 1 << (i * 2)
            self.uv(header)
            for i, v in enumerate(block):
                if v:
                    self.value(v, self.u.clustering_fixed[start + i])

    def subset(self, present: list[WColumn], header: list[WColumn]) -> None:
        names = {c.name for c in present}
        if len(present) == len(header):
            self.uv32(0)
        elif len(header) < 64:
            bitmap = 0
            for i, c in enumerate(header):
                if c.name not in names:
                    bitmap |= 1 << i
            self.uv(bitmap)
        else:
            self.uv32(len(header) - len(present))
            indexes = [i for i, c in enumerate(header) if c.name in names]
            if len(present) < len(header) // 2:
                for i in indexes:
                    self.uv32(i)
            else:
                for i, c in enumerate(header):
                    if c.name not in names:
                        self.uv32(i)

    def cell(self, c: WCell, col: WColumn, liveness, path: bytes | None) -> None:
        has_value = bool(c.value)
        expiring = bool(c.ttl) and not c.deleted
        use_row_ts = liveness is not None and c.ts == liveness[0]
        use_row_ttl = (expiring and liveness is not None and bool(liveness[1])
                       and c.ttl == liveness[1] and c.ldt == liveness[2])
        flags = 0
        if not has_value:
            flags |= 0x04
        if c.deleted:
            flags |= 0x01
        elif expiring:
            flags |= 0x02
        if use_row_ts:
            flags |= 0x08
        if use_row_ttl:
            flags |= 0x10
        self.out.append(flags)
        if not use_row_ts:
            self.timestamp(c.ts)
        if (c.deleted or expiring) and not use_row_ttl:
            self.ldt(c.ldt)
        if expiring and not use_row_ttl:
            self.ttl(c.ttl)
        if path is not None:
            self.uv32(len(path))
            self.out += path
        if has_value:
            self.value(c.value, -1 if col.complex else col.fixed)

    def row(self, r: WRow, header: list[WColumn], is_static: bool) -> None:
        present = [c for c in header if c.name in r.cells]
        assert len(present) == len(r.cells), "cells for columns not in the header"
        has_complex_deletion = any(isinstance(v, WComplex) and v.deletion is not None
                                   for v in r.cells.values())
        flags = 0
        if r.liveness is not None:
            flags |= 0x04
            if r.liveness[1]:
                flags |= 0x08
        if r.deletion is not None:
            flags |= 0x10
        if has_complex_deletion:
            flags |= 0x40
        if len(present) == len(header):
            flags |= 0x20
        extended = (0x01 if is_static else 0) | (0x02 if r.shadowable and r.deletion else 0)
        if extended:
            flags |= 0x80
        self.out.append(flags)
        if extended:
            self.out.append(extended)
        if not is_static and self.u.clustering_fixed:
            self.clustering_values(r.clustering)
        if r.liveness is not None:
            self.timestamp(r.liveness[0])
            if r.liveness[1]:
                self.ttl(r.liveness[1])  # TTL before the expiration time here
                self.ldt(r.liveness[2])
        if r.deletion is not None:
            self.deletion(r.deletion)
        if not flags & 0x20:
            self.subset(present, header)
        for col in present:
            data = r.cells[col.name]
            if isinstance(data, WComplex):
                if has_complex_deletion:
                    self.deletion(data.deletion if data.deletion is not None
                                  else (LONG_MIN, LONG_MAX))
                self.uv32(len(data.elements))
                for path, c in data.elements:
                    self.cell(c, col, r.liveness, path)
            else:
                self.cell(data, col, r.liveness, None)

    def marker(self, m: WMarker) -> None:
        self.out.append(0x02)
        self.out.append(m.kind)
        self.out += struct.pack(">H", len(m.prefix))
        if m.prefix:
            self.clustering_values(m.prefix)
        self.deletion(m.deletion)
        if m.kind in (2, 5):
            self.deletion(m.start_deletion)

    def write(self) -> bytes:
        u = self.u
        self.out += u.table_id.bytes
        self.uv32(len(u.key))
        self.out += u.key
        if u.empty:
            self.out.append(0x01)
            return bytes(self.out)
        flags = 0
        if u.partition_deletion is not None:
            flags |= 0x04
        if u.static_row is not None:
            flags |= 0x08
        if u.row_estimate is not None:
            flags |= 0x10
        self.out.append(flags)
        self.uv(self.min_ts - TS_EPOCH)
        self.uv32(self.min_ldt - LDT_EPOCH)
        self.uv32(self.min_ttl)
        if u.static_row is not None:
            self.columns(u.statics)
        self.columns(u.regulars)
        if u.partition_deletion is not None:
            self.deletion(u.partition_deletion)
        if u.static_row is not None:
            self.row(u.static_row, u.statics, True)
        if u.row_estimate is not None:
            self.uv32(u.row_estimate)
        for x in u.unfiltereds:
            if isinstance(x, WRow):
                self.row(x, u.regulars, False)
            else:
                self.marker(x)
        self.out.append(0x01)
        return bytes(self.out)


def encode_update(update: WUpdate) -> bytes:
    return _Writer(update).write()


def encode_mutation(updates: list[WUpdate]) -> bytes:
    return encode_uvint32(len(updates)) + b"".join(encode_update(u) for u in updates)
