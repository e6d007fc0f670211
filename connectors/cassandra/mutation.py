"""Decode one Mutation (the payload of one commit-log entry) into change events.

Layout (messaging versions 12 and 13, i.e. commit-log descriptor versions 7 and 8; checked
against Cassandra 5.0's Mutation.MutationSerializer, PartitionUpdate, UnfilteredRowIterator-
Serializer, SerializationHeader, EncodingStats, Columns, UnfilteredSerializer, ClusteringPrefix,
ClusteringBoundOrBoundary, Cell.Serializer, DeletionTime, LivenessInfo, VIntCoding):

    Mutation        uvint32 n, then n PartitionUpdates (one keyspace, one partition key)
    PartitionUpdate table id (16 bytes), uvint32-prefixed partition key, u8 flags
                    (0x01 empty: stop, 0x02 reversed, 0x04 partition deletion, 0x08 static row,
                    0x10 row estimate), EncodingStats (uvint min timestamp - 2015-09-22 in us,
                    uvint32 min local deletion time - 2015-09-22 in s, uvint32 min TTL),
                    [statics] Columns, regulars Columns (uvint32 n, n uvint-prefixed names),
                    [deletion], [static row], [uvint32 row estimate], unfiltereds, 0x01
    row             u8 flags, [u8 extended flags], clustering (not for the static row),
                    [liveness: timestamp, [ttl, expiration]], [deletion], [column subset],
                    then per present header column a cell, or for a complex column
                    [deletion (of every complex column when the row has any)], uvint32 n,
                    n cells with paths
    column subset   uvint 0 = all; header < 64 columns: bitmap of the MISSING ones; else the
                    missing count, then the indexes of the present columns if fewer than half
                    are present, else of the missing ones (docs/cassandra-cdc.md only tells the
                    second form)
    marker          flags 0x02, u8 bound kind, u16 prefix size, prefix values, deletion (bound)
                    or end deletion + start deletion (boundary)
    cell            u8 flags, [timestamp], [local deletion time], [ttl], [path], [value]
    values          fixed-width types without a length (values.py lists them), others
                    uvint32-prefixed; complex cell values always prefixed

Timestamps, local deletion times and TTLs are deltas against the EncodingStats, computed with
Java's arithmetic: 64-bit wrap-around for timestamps, 32-bit for the stats' own deletion time
and for TTLs. A local deletion time that comes out negative is invalid with messaging 12 and
the unsigned 32-bit value with messaging 13 (expiry up to 2106), as in Cell.decodeLocalDeletion-
Time; tombstone deletion times follow DeletionTime.build.

Granularity (see events.py): one ChangeEvent per row, per static row, per closed range
tombstone (start and end markers, or boundaries, paired into one event) and per partition
deletion; rows carrying live counter cells become CounterUpdate notices. Updates of tables
without cdc are parsed (the next update starts where this one ends) but produce nothing.
Mutations whose tables live in keyspaces the schema source does not load, or in Cassandra's
local system keyspaces (table ids that are name-based, version-3 UUIDs), are skipped whole.

Columns are identified by name: a name that is not in the current schema is looked up in older
versions of the table (SchemaSource.column_history), then in dropped_columns. Cells of dropped
columns are reported like any other, whatever their timestamp, so that what an entry decodes to
never depends on when it is decoded (replicas read at different lags must agree, digests
included); TableSchema.dropped tells consumers which cells Cassandra's reads would ignore.

Checked against bytes from Cassandra 5.0.9 itself (tests/connectors/cassandra/data: its own
serializer and deserializer run offline, and cdc_raw segments of real v7 and v8 nodes).

Failures never raise: a table id or column name unknown even after a schema refresh, or broken
bytes, stop the mutation (an update has no length prefix, so nothing after it can be found)
and yield an UndecodableUpdate with the raw mutation; a value the driver cannot decode only
costs its own update (the structure is still walked to the next one).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import Any
from uuid import UUID

from connectors.cassandra.events import (
    Cell,
    CellElement,
    ChangeEvent,
    ChangeKind,
    ComplexCell,
    CounterUpdate,
    Deletion,
    Liveness,
    Position,
    RangeBound,
    UndecodableUpdate,
)
from connectors.cassandra.schema import (
    ColumnSpec,
    DroppedColumn,
    IgnoredTable,
    SchemaSource,
    TableSchema,
)
from connectors.cassandra.values import CqlType, uuid_from_bytes, value_decoder
from connectors.cassandra.vint import VIntError, read_uvint, read_uvint32

__all__ = [
    "DecodedMutation",
    "MESSAGING_VERSION_40",
    "MESSAGING_VERSION_50",
    "MutationDecoder",
    "decode_mutation",
    "messaging_version_for",
]

MESSAGING_VERSION_40 = 12
MESSAGING_VERSION_50 = 13
_COMMITLOG_TO_MESSAGING = {7: MESSAGING_VERSION_40, 8: MESSAGING_VERSION_50}

TIMESTAMP_EPOCH = 1442880000000000  # 2015-09-22T00:00:00Z in microseconds (EncodingStats)
DELETION_TIME_EPOCH = 1442880000  # the same instant in seconds

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1
_I32_MAX = (1 << 31) - 1
NO_TIMESTAMP = -(1 << 63)  # LivenessInfo.NO_TIMESTAMP, DeletionTime.LIVE's markedForDeleteAt
NO_DELETION_TIME = _I64_MAX  # Cell.NO_DELETION_TIME
MAX_DELETION_TIME = (1 << 32) - 1 - 2  # Cell.MAX_DELETION_TIME
INVALID_DELETION_TIME = (1 << 32) - 1 - 1  # Cell.INVALID_DELETION_TIME
EXPIRED_LIVENESS_TTL = _I32_MAX

# PartitionUpdate flags
_IS_EMPTY, _HAS_PARTITION_DELETION, _HAS_STATIC_ROW, _HAS_ROW_ESTIMATE = 0x01, 0x04, 0x08, 0x10
# Unfiltered flags
_END_OF_PARTITION, _IS_MARKER, _HAS_TIMESTAMP, _HAS_TTL = 0x01, 0x02, 0x04, 0x08
_HAS_DELETION, _HAS_ALL_COLUMNS, _HAS_COMPLEX_DELETION, _EXTENSION = 0x10, 0x20, 0x40, 0x80
_IS_STATIC = 0x01  # extended flags
# Cell flags
_DELETED, _EXPIRING, _EMPTY_VALUE, _USE_ROW_TIMESTAMP, _USE_ROW_TTL = 0x01, 0x02, 0x04, 0x08, 0x10

# ClusteringPrefix.Kind ordinals of bounds and boundaries: (closes, end inclusive,
# opens, start inclusive).
_BOUND_KINDS = {
    0: (True, False, False, False),  # EXCL_END_BOUND
    1: (False, False, True, True),  # INCL_START_BOUND
    2: (True, False, True, True),  # EXCL_END_INCL_START_BOUNDARY
    5: (True, True, True, False),  # INCL_END_EXCL_START_BOUNDARY
    6: (True, True, False, False),  # INCL_END_BOUND
    7: (False, False, True, False),  # EXCL_START_BOUND
}

_pack_qi = struct.Struct(">qi").pack
_pack_qiBi = struct.Struct(">qi?i").pack  # timestamp, ttl, deleted, length: one cell's digest
_pack_q = struct.Struct(">q").pack
_pack_i = struct.Struct(">i").pack
_pack_qiB = struct.Struct(">qi?").pack  # _pack_qiBi without the length: a row's live prefix
# _pack_i(n) of the usual value lengths, precomputed: indexing a tuple costs a fraction of a
# pack call, which would otherwise be the dearest part of a cell's digest bytes.
_LENGTHS = tuple(_pack_i(n) for n in range(256))
_blake2b = hashlib.blake2b



def messaging_version_for(commitlog_version: int) -> int:
    """Messaging version of the mutation bytes in a commit log of this descriptor version."""
    try:
        return _COMMITLOG_TO_MESSAGING[commitlog_version]
    except KeyError:
        raise ValueError(f"unsupported commit-log version {commitlog_version}; "
                         "known: 7 (Cassandra 4.0-5.0) and 8 (5.0)") from None


class _Stop(Exception):
    """The rest of the mutation cannot be parsed."""

    def __init__(self, reason: str, offset: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


class DecodedMutation:
    """What one mutation decoded into. `skipped_updates` counts updates parsed and dropped
    (no cdc) or skipped (ignored keyspaces, system tables)."""

    __slots__ = ("events", "counters", "errors", "updates", "skipped_updates")

    def __init__(self) -> None:
        self.events: list[ChangeEvent] = []
        self.counters: list[CounterUpdate] = []
        self.errors: list[UndecodableUpdate] = []
        self.updates = 0
        self.skipped_updates = 0

    def __repr__(self) -> str:
        return (f"DecodedMutation(events={self.events!r}, counters={self.counters!r}, "
                f"errors={self.errors!r}, updates={self.updates}, "
                f"skipped_updates={self.skipped_updates})")


# --- per-table and per-header plans -------------------------------------------------------------

class _Column:
    """How to read one column of a serialization header."""

    __slots__ = ("name", "name_bytes", "complex", "fixed", "decode", "path_decode",
                 "element_decode", "element_value", "kind", "counter")

    def __init__(self, name: str, spec: ColumnSpec | DroppedColumn):
        t: CqlType = spec.type
        self.name = name
        self.name_bytes = _pack_i(len(name.encode())) + name.encode()
        self.complex = t.is_complex
        self.counter = t.is_counter
        self.kind = t.kind
        self.path_decode: Callable[[bytes], Any] | None = None
        self.element_decode: Callable[[bytes, bytes], Any] | None = None
        # Lists, sets and maps: element_decode(path, v) is element_value(v); complex_column
        # calls element_value directly (one call per element instead of two). None for UDTs,
        # whose values depend on the path.
        self.element_value: Callable[[bytes], Any] | None = None
        if not self.complex:
            # Java writes every simple value with the column type's fixed width, if any.
            self.fixed = t.fixed_length
            self.decode = _no_value if self.counter else value_decoder(t)
            return
        # Complex cell values are written with the collection/UDT type, never fixed-width.
        self.fixed = -1
        self.decode = _no_value
        if t.kind == "list":
            element = value_decoder(t.params[0])
            self.path_decode = uuid_from_bytes
            self.element_decode = lambda p, v: element(v)
            self.element_value = element
        elif t.kind == "set":
            self.path_decode = value_decoder(t.params[0])
            self.element_decode = lambda p, v: None
            self.element_value = _no_value
        elif t.kind == "map":
            value = value_decoder(t.params[1])
            self.path_decode = value_decoder(t.params[0])
            self.element_decode = lambda p, v: value(v)
            self.element_value = value
        else:  # non-frozen UDT: the path is the field's int16 index
            names = t.field_names
            fields = [value_decoder(f) for f in t.params]

            def field_name(p: bytes) -> Any:
                index = int.from_bytes(p, "big", signed=True)
                return names[index] if 0 <= index < len(names) else index

            def field_value(p: bytes, v: bytes) -> Any:
                index = int.from_bytes(p, "big", signed=True)
                return fields[index](v) if 0 <= index < len(fields) else v

            self.path_decode = field_name
            self.element_decode = field_value

    def plan(self) -> tuple:
        """The tuple the row loop unpacks: (name, complex, fixed, decode, counter, name_bytes,
        self)."""
        return (self.name, self.complex, self.fixed, self.decode, self.counter, self.name_bytes,
                self)


def _no_value(raw: bytes) -> None:
    return None


# How many serialization headers a table remembers for the prefix check (the usual case is a
# handful: INSERTs of all columns, a few UPDATE shapes); beyond that a dict keyed by the bytes.
_RECENT_HEADERS = 8
# Seconds between two probes of the schema version while updates of tables without cdc, in
# a captured keyspace, go by (one of them may have been switched to cdc = true).
CDC_WATCH_INTERVAL = 0.5


class _Table:
    """A table's decoding plan: key decoders and a cache of serialization headers."""

    __slots__ = ("schema", "id", "id_bytes", "keyspace", "name", "materialize", "pk",
                 "single_pk", "ck", "headers", "recent")

    def __init__(self, schema: TableSchema, id_bytes: bytes):
        self.schema = schema
        self.id = schema.id
        self.id_bytes = id_bytes
        self.keyspace = schema.keyspace
        self.name = schema.name
        self.materialize = schema.cdc
        self.pk = [(c.name, value_decoder(c.type)) for c in schema.partition_key]
        self.single_pk = len(self.pk) == 1
        self.ck = [(c.name, c.type.fixed_length, value_decoder(c.type)) for c in schema.clustering]
        self.headers: dict[bytes, tuple[list[tuple], list[tuple]]] = {}
        # Per has-static flag: recently used (raw header bytes, statics, regulars).
        self.recent: tuple[list, list] = ([], [])

    def partition_key(self, raw: bytes) -> dict[str, Any]:
        if self.single_pk:
            name, decode = self.pk[0]
            return {name: decode(raw)}
        # CompositeType: per component u16 length, bytes, one end-of-component byte.
        out = {}
        i = 0
        for name, decode in self.pk:
            length = (raw[i] << 8) | raw[i + 1]
            out[name] = decode(raw[i + 2:i + 2 + length])
            i += 3 + length
        if i != len(raw):
            raise ValueError(f"composite partition key of {len(raw)} bytes does not match its "
                             f"{len(self.pk)} components")
        return out


_SKIP = object()  # table plan of ignored keyspaces and system tables


# --- the decoder --------------------------------------------------------------------------------

class MutationDecoder:
    """Decodes mutations of one node's commit log. Keeps per-table plans between calls
    (dropped when the schema source's generation changes). Not thread-safe: one per worker.

    schemas: a SchemaRegistry (or any SchemaSource).
    messaging_version: 12 (commit-log v7) or 13 (v8); `messaging_version_for(v)` maps them.
    node: the node name written into every event.
    all_tables: also produce events for tables without cdc (diagnostics, replays).
    """

    def __init__(self, schemas: SchemaSource, *, messaging_version: int, node: str = "",
                 all_tables: bool = False):
        if messaging_version not in (MESSAGING_VERSION_40, MESSAGING_VERSION_50):
            raise ValueError(f"messaging_version must be 12 or 13, not {messaging_version!r}")
        self._schemas = schemas
        self._v50 = messaging_version >= MESSAGING_VERSION_50
        self.messaging_version = messaging_version
        self.node = node
        self._all_tables = all_tables
        self._tables: dict[bytes, _Table | object] = {}
        self._generation = schemas.generation
        self._current: _Table | None = None  # the update being read, for error records

    # -- public --

    def decode(self, data: bytes | bytearray | memoryview, position: Position) -> DecodedMutation:
        """Decode one mutation. Never raises for bad input: see DecodedMutation.errors."""
        buf = data if type(data) is bytes else bytes(data)
        out = DecodedMutation()
        if self._schemas.generation != self._generation:
            self._tables.clear()
            self._generation = self._schemas.generation
        index = 0
        pos = 0
        self._current = None
        try:
            count = buf[0]
            if count < 0x80:
                pos = 1
            else:
                count, pos = read_uvint32(buf, 0)
            if count <= 0:
                raise _Stop(f"mutation announces {count} partition updates", 0)
            for index in range(count):
                pos = self._update(buf, pos, index, position, out)
                if pos < 0:  # the whole mutation is in an ignored keyspace
                    out.skipped_updates += count - index
                    return out
                out.updates += 1
            if pos != len(buf):
                raise _Stop(f"{len(buf) - pos} bytes left after the last partition update", pos)
        except _Stop as stop:
            out.errors.append(self._error(buf, position, stop.reason, index, stop.offset))
        except (IndexError, ValueError, VIntError, struct.error, KeyError) as error:
            # Bytes that end too early or contradict the grammar: nothing after can be trusted.
            reason = f"malformed mutation: {type(error).__name__}: {error}"
            out.errors.append(self._error(buf, position, reason, index, pos))
        except Exception as error:  # noqa: BLE001 - a decoder bug must not stop the stream
            reason = f"decoder failure: {type(error).__name__}: {error}"
            out.errors.append(self._error(buf, position, reason, index, pos))
        return out

    # -- helpers --

    def _error(self, buf: bytes, position: Position, reason: str, index: int | None,
               offset: int | None) -> UndecodableUpdate:
        table = self._current
        return UndecodableUpdate(
            node=self.node, position=position, reason=reason, raw=buf, update_index=index,
            mutation_offset=offset, keyspace=table.keyspace if table else None,
            table=table.name if table else None, table_id=table.id if table else None)

    def _table(self, id_bytes: bytes, offset: int) -> _Table | object:
        table_id = UUID(bytes=id_bytes)
        schema = self._schemas.table(table_id)
        if schema is None and self._schemas.refresh(table_id):
            schema = self._schemas.table(table_id)
        if schema is None:
            if table_id.version == 3:
                # TableId.forSystemTable: a local system table (system.*, system_schema.*).
                plan: _Table | object = _SKIP
            else:
                raise _Stop(f"unknown table id {table_id} (not in system_schema after a refresh)",
                            offset)
        elif isinstance(schema, IgnoredTable):
            plan = _SKIP
        else:
            plan = _Table(schema, id_bytes)
            if self._all_tables:
                plan.materialize = True
        self._tables[id_bytes] = plan
        return plan

    def _switched_on(self) -> bool:
        """Whether the schema changed since this table's plan was made without cdc (a table
        switched to cdc = true while running). Probed at most every CDC_WATCH_INTERVAL seconds,
        so changes written just after the switch may still be skipped here: the row images
        of such a table are read whole once its first change is captured (operators/
        readback.py), which covers them."""
        check = getattr(self._schemas, "refresh_if_changed", None)
        if check is None or not check(max_age=CDC_WATCH_INTERVAL) or \
                self._schemas.generation == self._generation:
            return False
        self._tables.clear()
        self._generation = self._schemas.generation
        return True

    def _header(self, table: _Table, buf: bytes, pos: int, has_static: bool
                ) -> tuple[list[tuple], list[tuple], int]:
        """The statics and regulars Columns: their column plans and the end position."""
        recent = table.recent[has_static]
        for entry in recent:
            if buf.startswith(entry[0], pos):  # the same header bytes: the same columns
                return entry[1], entry[2], pos + len(entry[0])
        start = pos
        for _ in range(2 if has_static else 1):
            n, pos = read_uvint32(buf, pos)
            if n < 0:
                raise _Stop(f"negative column count {n}", pos)
            for _ in range(n):
                length, pos = read_uvint32(buf, pos)
                if length < 0:
                    raise _Stop(f"negative column name length {length}", pos)
                pos += length
        if pos > len(buf):
            raise IndexError("column names run past the end of the mutation")
        raw = buf[start:pos]
        cached = table.headers.get(raw) if has_static else table.headers.get(b"r" + raw)
        if cached is None:
            statics: list[tuple] = []
            regulars: list[tuple] = []
            p = start
            for target in ((statics, regulars) if has_static else (regulars,)):
                n, p = read_uvint32(buf, p)
                for _ in range(n):
                    length, p = read_uvint32(buf, p)
                    name = buf[p:p + length].decode("utf-8")
                    p += length
                    target.append(self._column(table, name).plan())
            cached = (statics, regulars)
            table.headers[raw if has_static else b"r" + raw] = cached
        recent.insert(0, (raw, cached[0], cached[1]))
        del recent[_RECENT_HEADERS:]
        return cached[0], cached[1], pos

    def _find(self, schema: TableSchema, name: str) -> ColumnSpec | DroppedColumn | None:
        """The current column; else the column as an older schema version had it (exact type:
        dropped_columns records non-frozen UDTs as frozen tuples, which would misread their
        cells); else the dropped_columns entry."""
        return (schema.columns.get(name) or self._schemas.column_history(schema.id, name)
                or schema.dropped.get(name))

    def _column(self, table: _Table, name: str) -> _Column:
        schema = table.schema
        spec = self._find(schema, name)
        if spec is None and self._schemas.refresh(schema.id):
            fresh = self._schemas.table(schema.id)
            if isinstance(fresh, TableSchema):
                schema = fresh
                spec = self._find(schema, name)
                # Later updates of this table get a plan built on the fresh schema.
                self._tables.clear()
                self._generation = self._schemas.generation
        if spec is None:
            raise _Stop(f"column {name!r} of {schema.keyspace}.{schema.name} is unknown "
                        "(not in system_schema after a refresh)")
        return _Column(name, spec)

    # -- one partition update --

    def _update(self, buf: bytes, pos: int, index: int, position: Position,
                out: DecodedMutation) -> int:
        start = pos
        self._current = None
        id_bytes = buf[pos:pos + 16]
        pos += 16
        table = self._tables.get(id_bytes)
        if table is None:
            if len(id_bytes) != 16:
                raise IndexError("table id runs past the end of the mutation")
            table = self._table(id_bytes, start)
        if table is _SKIP:
            if index == 0:
                return -1
            raise _Stop("an update of an ignored table follows updates of a loaded keyspace", start)
        assert isinstance(table, _Table)
        if not table.materialize and self._switched_on():
            table = self._table(id_bytes, start)
        self._current = table

        # Partition key
        b = buf[pos]
        if b < 0x80:
            key_len = b
            pos += 1
        else:
            key_len, pos = read_uvint32(buf, pos)
            if key_len < 0:
                raise _Stop(f"negative partition key length {key_len}", pos)
        key_raw = buf[pos:pos + key_len]
        pos += key_len
        flags = buf[pos]
        pos += 1
        if flags & _IS_EMPTY:
            out.skipped_updates += 1
            return pos

        # EncodingStats
        v, pos = read_uvint(buf, pos)
        min_ts = v + TIMESTAMP_EPOCH
        if min_ts > _I64_MAX:
            min_ts -= _U64
        b = buf[pos]
        if b < 0x80:
            v = b
            pos += 1
        else:
            v, pos = read_uvint32(buf, pos)
        min_ldt = ((v + DELETION_TIME_EPOCH + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)  # int + int
        min_ttl = buf[pos]
        if min_ttl < 0x80:
            pos += 1
        else:
            min_ttl, pos = read_uvint32(buf, pos)

        statics, regulars, pos = self._header(table, buf, pos, bool(flags & _HAS_STATIC_ROW))

        materialize = table.materialize
        ctx = _Context(self, table, buf, min_ts, min_ldt, min_ttl, materialize)
        if materialize:
            try:
                if table.single_pk:  # partition_key()'s first case, inline (every mutation)
                    pk_name, pk_decode = table.pk[0]
                    ctx.pk = {pk_name: pk_decode(key_raw)}
                else:
                    ctx.pk = table.partition_key(key_raw)
            except Exception as error:  # noqa: BLE001 - any driver failure is a value error
                ctx.value_error = f"partition key: {type(error).__name__}: {error}"
            ctx.digest_head = table.id_bytes + _pack_i(key_len) + key_raw

        if flags & _HAS_PARTITION_DELETION:
            deletion, pos = ctx.deletion_time(pos)
            if materialize:
                ctx.emit(ChangeKind.PARTITION_DELETE, {}, {}, None, deletion, False,
                         None, None, b"P" + _pack_q(deletion.marked_for_delete_at))
        if flags & _HAS_STATIC_ROW:
            rflags = buf[pos]
            if not rflags & _EXTENSION or not buf[pos + 1] & _IS_STATIC or rflags & _IS_MARKER:
                raise _Stop(f"static row expected, flags {rflags:#x}", pos)
            pos = ctx.row_body(pos + 2, rflags, statics, {}, b"", True)
        if flags & _HAS_ROW_ESTIMATE:
            if buf[pos] < 0x80:
                pos += 1
            else:
                _, pos = read_uvint32(buf, pos)
        pos = ctx.unfiltereds(pos, regulars)
        if pos > len(buf):
            raise IndexError("partition update runs past the end of the mutation")

        if not materialize:
            out.skipped_updates += 1
        elif ctx.value_error is not None:
            out.errors.append(UndecodableUpdate(
                node=self.node, position=position,
                reason=f"undecodable value in {table.keyspace}.{table.name}: {ctx.value_error}",
                raw=buf, keyspace=table.keyspace, table=table.name, table_id=table.id,
                update_index=index, mutation_offset=start))
        else:
            node, ks, name, tid, pk = self.node, table.keyspace, table.name, table.id, ctx.pk
            events = out.events
            counters = out.counters
            seq = len(events) + len(counters)
            for item in ctx.items:
                if item[0] is _COUNTER:
                    _, ck, columns, ts, is_static = item
                    counters.append(CounterUpdate(node, position, seq, ks, name, tid, pk, ck,
                                                  columns, ts, is_static))
                else:
                    kind, ck, cells, liveness, deletion, is_static, rs, re, digest = item
                    events.append(ChangeEvent(node, position, seq, ks, name, tid, kind, pk, ck,
                                              cells, liveness, deletion, is_static, rs, re,
                                              digest))
                seq += 1
        return pos


_COUNTER = object()  # tag of counter items in _Context.items
_new = tuple.__new__  # builds the NamedTuple event parts without their Python-level __new__


class _Context:
    """State while reading one partition update (stats, collected events)."""

    __slots__ = ("table", "buf", "min_ts", "min_ldt", "min_ttl", "materialize", "pk",
                 "digest_head", "items", "value_error", "v50", "open_range")

    def __init__(self, dec: MutationDecoder, table: _Table, buf: bytes, min_ts: int,
                 min_ldt: int, min_ttl: int, materialize: bool):
        self.table = table
        self.buf = buf
        self.min_ts = min_ts
        self.min_ldt = min_ldt
        self.min_ttl = min_ttl
        self.materialize = materialize
        self.v50 = dec._v50
        self.pk: dict[str, Any] = {}
        self.digest_head = b""
        self.items: list[tuple] = []
        self.value_error: str | None = None
        self.open_range: tuple[RangeBound, bytes, Deletion] | None = None

    # -- small readers --

    def deletion_time(self, pos: int) -> tuple[Deletion, int]:
        """SerializationHeader.readDeletionTime + DeletionTime.build."""
        buf = self.buf
        v = buf[pos]
        if v < 0x80:  # one-byte vints inline (small deltas against the stats: the usual case)
            pos += 1
        else:
            v, pos = read_uvint(buf, pos)
        mfda = v + self.min_ts
        if mfda > _I64_MAX:
            mfda -= _U64
        v = buf[pos]
        if v < 0x80:
            pos += 1
        else:
            v, pos = read_uvint32(buf, pos)
        ldt = v + self.min_ldt
        if ldt < 0 or ldt > MAX_DELETION_TIME:
            ldt = INVALID_DELETION_TIME
        return _new(Deletion, (mfda, ldt)), pos

    def expiry(self, ldt: int, ttl: int) -> int:
        """Cell.decodeLocalDeletionTime."""
        if ldt >= ttl:
            return ldt
        if ldt < 0:
            if not self.v50:
                return INVALID_DELETION_TIME
            ldt &= 0xFFFFFFFF
            return NO_DELETION_TIME if ldt == 0xFFFFFFFF else ldt
        if ttl == EXPIRED_LIVENESS_TTL:
            return ldt
        return INVALID_DELETION_TIME

    def ttl(self, pos: int) -> tuple[int, int]:
        v, pos = read_uvint32(self.buf, pos)
        ttl = ((v + self.min_ttl + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)  # Java int + int
        if ttl < 0:
            raise _Stop(f"invalid TTL {ttl}", pos)
        return ttl, pos

    def clustering(self, pos: int, size: int) -> tuple[dict[str, Any], int]:
        """ClusteringPrefix values: per 32 columns a uvint header of (empty, null) bit pairs."""
        buf = self.buf
        columns = self.table.ck
        if size > len(columns):
            raise _Stop(f"clustering prefix of {size} values, table has {len(columns)}", pos)
        values: dict[str, Any] = {}
        materialize = self.materialize
        offset = 0
        while offset < size:
            b = buf[pos]
            if b < 0x80:
                header = b
                pos += 1
            else:
                header, pos = read_uvint(buf, pos)
            limit = size if size - offset <= 32 else offset + 32  # min(), without the call
            shift = 0
            while offset < limit:
                name, fixed, decode = columns[offset]
                bits = (header >> shift) & 3
                if bits & 2:  # null
                    value: Any = None
                elif bits & 1:  # empty
                    value = decode(b"") if materialize else None
                else:
                    if fixed >= 0:
                        length = fixed
                    else:
                        b = buf[pos]
                        if b < 0x80:
                            length = b
                            pos += 1
                        else:
                            length, pos = read_uvint32(buf, pos)
                            if length < 0:
                                raise _Stop(f"negative value length {length}", pos)
                    value = None
                    if materialize:
                        try:
                            value = decode(buf[pos:pos + length])
                        except Exception as error:  # noqa: BLE001
                            self.value_error = f"clustering {name}: {type(error).__name__}: {error}"
                    pos += length
                if materialize:
                    values[name] = value
                offset += 1
                shift += 2
        return values, pos

    # -- unfiltereds --

    def unfiltereds(self, pos: int, regulars: list[tuple]) -> int:
        buf = self.buf
        ck_size = len(self.table.ck)
        while True:
            flags = buf[pos]
            pos += 1
            if flags & _END_OF_PARTITION:
                break
            ext = 0
            if flags & _EXTENSION:
                ext = buf[pos]
                pos += 1
            if flags & _IS_MARKER:
                pos = self.marker(pos)
                continue
            if ext & _IS_STATIC:
                raise _Stop(f"static flag on a regular row, flags {flags:#x}", pos)
            if ck_size:
                ck_start = pos
                ck, pos = self.clustering(pos, ck_size)
                pos = self.row_body(pos, flags, regulars, ck, buf[ck_start:pos], False)
            else:
                pos = self.row_body(pos, flags, regulars, {}, b"", False)
        if self.open_range is not None and self.materialize:
            start, start_raw, deletion = self.open_range
            self.range_event(start, start_raw, _new(RangeBound, ({}, True)), b"",
                             deletion)
        self.open_range = None
        return pos

    def marker(self, pos: int) -> int:
        buf = self.buf
        kind = buf[pos]
        size = (buf[pos + 1] << 8) | buf[pos + 2]
        bound_start = pos
        pos += 3
        shape = _BOUND_KINDS.get(kind)
        if shape is None:
            raise _Stop(f"range tombstone marker of clustering kind {kind}", bound_start)
        prefix, pos = self.clustering(pos, size) if size else ({}, pos)
        raw = buf[bound_start:pos]
        closes, end_inclusive, opens, start_inclusive = shape
        first, pos = self.deletion_time(pos)
        if closes and opens:  # boundary: end deletion, then start deletion
            second, pos = self.deletion_time(pos)
        else:
            second = first
        if not self.materialize:
            return pos
        if closes:
            if self.open_range is not None:
                start, start_raw, _ = self.open_range
            else:  # unpaired end: the range starts at the bottom of the partition
                start, start_raw = _new(RangeBound, ({}, True)), b""
            self.range_event(start, start_raw, _new(RangeBound, (prefix, end_inclusive)), raw,
                             first)
            self.open_range = None
        if opens:
            self.open_range = (_new(RangeBound, (prefix, start_inclusive)), raw, second)
        return pos

    def range_event(self, start: RangeBound, start_raw: bytes, end: RangeBound, end_raw: bytes,
                    deletion: Deletion) -> None:
        common = {}
        for name, value in start.clustering.items():
            if name in end.clustering and end.clustering[name] == value:
                common[name] = value
            else:
                break
        digest = b"R" + _pack_i(len(start_raw)) + start_raw + _pack_i(len(end_raw)) + end_raw \
            + _pack_q(deletion.marked_for_delete_at)
        self.emit(ChangeKind.RANGE_DELETE, common, {}, None, deletion, False, start, end, digest)

    def emit(self, kind: ChangeKind, ck: Any, cells: dict, liveness: Liveness | None,
             deletion: Deletion | None, is_static: bool, range_start: RangeBound | None,
             range_end: RangeBound | None, digest_body: bytes) -> None:
        digest = _blake2b(self.digest_head + digest_body, digest_size=16).digest()
        self.items.append((kind, ck, cells, liveness, deletion, is_static, range_start,
                           range_end, digest))

    # -- rows --

    def row_body(self, pos: int, flags: int, header: list[tuple], ck: Any, ck_raw: bytes,
                 is_static: bool) -> int:
        buf = self.buf
        materialize = self.materialize
        min_ts = self.min_ts

        # Primary-key liveness
        row_ts = NO_TIMESTAMP
        row_ttl = 0
        row_ldt = None
        if flags & _HAS_TIMESTAMP:
            b = buf[pos]
            if b < 0x80:
                row_ts = b + min_ts
                pos += 1
            else:
                v, pos = read_uvint(buf, pos)
                row_ts = v + min_ts
            if row_ts > _I64_MAX:
                row_ts -= _U64
            if flags & _HAS_TTL:
                row_ttl, pos = self.ttl(pos)
                v, pos = read_uvint32(buf, pos)
                row_ldt = self.expiry(v + self.min_ldt, row_ttl)
                if row_ldt == NO_DELETION_TIME:
                    row_ldt = None
        deletion = None
        if flags & _HAS_DELETION:
            deletion, pos = self.deletion_time(pos)

        # Which header columns are present
        if flags & _HAS_ALL_COLUMNS:
            columns = header
        else:
            columns, pos = self.subset(pos, header)

        cells: dict[str, Cell | ComplexCell] = {}
        parts: list[bytes] = []
        counter_columns: list[str] = []
        counter_ts = NO_TIMESTAMP
        min_ldt = self.min_ldt
        live = None  # digest prefix of the row's live cells (timestamp, ttl 0, not deleted)
        for name, complex_, fixed, decode, counter, name_bytes, col in columns:
            if complex_:
                pos = self.complex_column(pos, col, flags & _HAS_COMPLEX_DELETION, row_ts,
                                          row_ttl, row_ldt, cells, parts)
                continue
            # Simple cell: flags, [timestamp], [local deletion time], [ttl], [value]
            cflags = buf[pos]
            pos += 1
            if cflags == _USE_ROW_TIMESTAMP:  # the INSERT case: live, the row's timestamp
                if fixed >= 0:
                    raw = buf[pos:pos + fixed]
                    pos += fixed
                else:
                    b = buf[pos]
                    if b < 0x80:
                        pos += 1
                        raw = buf[pos:pos + b]
                        pos += b
                    else:
                        length, pos = read_uvint32(buf, pos)
                        if length < 0:
                            raise _Stop(f"negative value length {length}", pos)
                        raw = buf[pos:pos + length]
                        pos += length
                if not materialize:
                    continue
                # Finished here rather than by the general tail below: most cells take this
                # branch, and it needs none of the tail's tests (not deleted, no TTL).
                if counter:
                    counter_columns.append(name)
                    counter_ts = row_ts if row_ts > counter_ts else counter_ts
                    continue
                try:
                    value = decode(raw)
                except Exception as error:  # noqa: BLE001 - recorded, the walk goes on
                    value = None
                    self.value_error = f"column {name}: {type(error).__name__}: {error}"
                cells[name] = _new(Cell, (value, row_ts, 0, None, False))
                # The digest's _pack_qiBi(row_ts, 0, False, len(raw)), in two parts: the
                # prefix is the same for every such cell of the row, so it is packed once.
                if live is None:
                    live = _pack_qiB(row_ts, 0, False)
                n = len(raw)
                parts += (name_bytes, live, _LENGTHS[n] if n < 256 else _pack_i(n), raw)
                continue
            else:
                if cflags & _USE_ROW_TIMESTAMP:
                    ts = row_ts
                else:
                    b = buf[pos]
                    if b < 0x80:
                        ts = b + min_ts
                        pos += 1
                    else:
                        v, pos = read_uvint(buf, pos)
                        ts = v + min_ts
                    if ts > _I64_MAX:
                        ts -= _U64
                if cflags & _USE_ROW_TTL:
                    ldt = row_ldt
                    ttl = row_ttl
                elif cflags & (_DELETED | _EXPIRING):
                    b = buf[pos]
                    if b < 0x80:
                        ldt = b + min_ldt
                        pos += 1
                    else:
                        v, pos = read_uvint32(buf, pos)
                        ldt = v + min_ldt
                    if cflags & _EXPIRING:
                        ttl, pos = self.ttl(pos)
                    else:
                        ttl = 0
                    if ldt < ttl:
                        ldt = self.expiry(ldt, ttl)
                        if ldt == NO_DELETION_TIME:
                            ldt = None
                else:
                    ldt = None
                    ttl = 0
                if cflags & _EMPTY_VALUE:
                    raw = b""
                elif fixed >= 0:
                    raw = buf[pos:pos + fixed]
                    pos += fixed
                else:
                    b = buf[pos]
                    if b < 0x80:
                        pos += 1
                        raw = buf[pos:pos + b]
                        pos += b
                    else:
                        length, pos = read_uvint32(buf, pos)
                        if length < 0:
                            raise _Stop(f"negative value length {length}", pos)
                        raw = buf[pos:pos + length]
                        pos += length
                if not materialize:
                    continue
                deleted = bool(cflags & _DELETED)
            if counter and not deleted and ldt is None:
                # A counter context (per-replica shards), not a value: reported, not decoded.
                counter_columns.append(name)
                counter_ts = ts if ts > counter_ts else counter_ts
                continue
            if deleted:
                value = None
            else:
                try:
                    value = decode(raw)
                except Exception as error:  # noqa: BLE001 - recorded, the walk goes on
                    value = None
                    self.value_error = f"column {name}: {type(error).__name__}: {error}"
            cells[name] = _new(Cell, (value, ts, ttl, ldt, deleted))
            parts += (name_bytes, _pack_qiBi(ts, ttl, deleted, len(raw)), raw)

        if not materialize:
            return pos
        liveness = None
        if row_ts != NO_TIMESTAMP:
            liveness = _new(Liveness, (row_ts, row_ttl, row_ldt))
        if counter_columns:
            self.items.append((_COUNTER, ck, tuple(counter_columns), counter_ts, is_static))
            if not cells and deletion is None:
                return pos
        if cells or liveness is not None:
            kind = ChangeKind.UPSERT
        elif deletion is not None:
            kind = ChangeKind.ROW_DELETE
        else:
            return pos  # nothing but counter cells (reported above)
        # Canonical row encoding for the digest: every optional part is tagged, and local
        # deletion times are left out (node-local, as in Cassandra's own digests).
        # emit() inlined: the table and partition key head joined with the row's parts in one
        # b"".join (no intermediate bytes), hashed once.
        n = len(ck_raw)
        parts[0:0] = (
            self.digest_head,
            b"S" if is_static else b"W", _LENGTHS[n] if n < 256 else _pack_i(n), ck_raw,
            b"l" if liveness is None else b"L" + _pack_qi(row_ts, row_ttl),
            b"x" if deletion is None else b"X" + _pack_q(deletion.marked_for_delete_at))
        self.items.append((kind, ck, cells, liveness, deletion, is_static, None, None,
                           _blake2b(b"".join(parts), digest_size=16).digest()))
        return pos

    def subset(self, pos: int, header: list[tuple]) -> tuple[list[tuple], int]:
        """Columns.deserializeSubset: which header columns a row holds."""
        buf = self.buf
        encoded = buf[pos]
        if encoded < 0x80:
            pos += 1
        else:
            encoded, pos = read_uvint(buf, pos)
        if encoded == 0:
            return header, pos
        n = len(header)
        if n < 64:
            # Bitmap of the MISSING columns.
            if encoded >> n:
                raise _Stop(f"column subset bitmap {encoded:#x} has bits beyond {n} columns", pos)
            return [c for i, c in enumerate(header) if not (encoded >> i) & 1], pos
        # Large header: the count of missing columns, then the indexes of the present columns
        # if fewer than half are present, else the indexes of the missing ones.
        missing = encoded
        present = n - missing
        if present < 0:
            raise _Stop(f"{missing} missing columns out of {n}", pos)
        if present < n // 2:
            chosen = []
            for _ in range(present):
                i, pos = read_uvint32(buf, pos)
                chosen.append(header[i])
            return chosen, pos
        skip = set()
        for _ in range(missing):
            i, pos = read_uvint32(buf, pos)
            skip.add(i)
        return [c for i, c in enumerate(header) if i not in skip], pos

    def complex_column(self, pos: int, col: _Column, has_deletion: int, row_ts: int,
                       row_ttl: int, row_ldt: int | None, cells: dict, parts: list[bytes]
                       ) -> int:
        buf = self.buf
        materialize = self.materialize
        min_ts = self.min_ts
        min_ldt = self.min_ldt
        deletion = None
        if has_deletion:
            deletion, pos = self.deletion_time(pos)
            if deletion.marked_for_delete_at == NO_TIMESTAMP:
                deletion = None  # DeletionTime.LIVE: written for every complex column
        count = buf[pos]
        if count < 0x80:
            pos += 1
        else:
            count, pos = read_uvint32(buf, pos)
        elements = []
        element_parts = []
        path_decode = col.path_decode
        element_value = col.element_value
        # One-byte vints (timestamp deltas, path and value lengths) are read inline: a call to
        # read_uvint32 costs more than the rest of the element's parsing.
        for _ in range(count):
            cflags = buf[pos]
            pos += 1
            if cflags & _USE_ROW_TIMESTAMP:
                ts = row_ts
            else:
                v = buf[pos]
                if v < 0x80:
                    pos += 1
                else:
                    v, pos = read_uvint(buf, pos)
                ts = v + min_ts
                if ts > _I64_MAX:
                    ts -= _U64
            if cflags & _USE_ROW_TTL:
                ldt = row_ldt
                ttl = row_ttl
            elif cflags & (_DELETED | _EXPIRING):
                v, pos = read_uvint32(buf, pos)
                ldt = v + min_ldt
                if cflags & _EXPIRING:
                    ttl, pos = self.ttl(pos)
                else:
                    ttl = 0
                if ldt < ttl:
                    ldt = self.expiry(ldt, ttl)
                    if ldt == NO_DELETION_TIME:
                        ldt = None
            else:
                ldt = None
                ttl = 0
            length = buf[pos]
            if length < 0x80:
                pos += 1
            else:
                length, pos = read_uvint32(buf, pos)
                if length < 0:
                    raise _Stop(f"negative cell path length {length}", pos)
            path = buf[pos:pos + length]
            pos += length
            if cflags & _EMPTY_VALUE:
                raw = b""
            else:
                length = buf[pos]
                if length < 0x80:
                    pos += 1
                else:
                    length, pos = read_uvint32(buf, pos)
                    if length < 0:
                        raise _Stop(f"negative value length {length}", pos)
                raw = buf[pos:pos + length]
                pos += length
            if not materialize:
                continue
            deleted = bool(cflags & _DELETED)
            key = value = None
            try:
                key = path_decode(path)  # type: ignore[misc]
                if not deleted:
                    if element_value is not None:
                        value = element_value(raw)
                    else:
                        value = col.element_decode(path, raw)  # type: ignore[misc]
            except Exception as error:  # noqa: BLE001
                self.value_error = f"column {col.name}: {type(error).__name__}: {error}"
            elements.append(_new(CellElement, (key, value, ts, ttl, ldt, deleted)))
            n = len(raw)
            element_parts += (_pack_qiBi(ts, ttl, deleted, len(path)), path,
                              _LENGTHS[n] if n < 256 else _pack_i(n), raw)
        if materialize and (elements or deletion is not None):
            cells[col.name] = _new(ComplexCell, (deletion, tuple(elements)))
            parts.append(col.name_bytes)
            parts.append(b"C" + (_pack_q(deletion.marked_for_delete_at)
                                 if deletion is not None else b"-"))
            parts += element_parts
        return pos


def decode_mutation(data: bytes | bytearray | memoryview, schemas: SchemaSource, *,
                    messaging_version: int, position: Position, node: str = ""
                    ) -> DecodedMutation:
    """One-shot convenience; keep a MutationDecoder for a stream (it caches per-table plans)."""
    return MutationDecoder(schemas, messaging_version=messaging_version, node=node).decode(
        data, position)
