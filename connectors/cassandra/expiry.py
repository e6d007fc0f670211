"""TTL expiry: rows are read again when their cells or liveness expire (docs/adr/0003).

Cassandra writes nothing when a TTL runs out, so no change event ever says a row or cell
expired. The read-back knows when it will: `TTL()` of every column it reads, and the liveness
TTL of an INSERT's event. For each row image with a TTL, an entry goes into a schedule table
in Cassandra itself, keyed by the row's clear primary key. The keys never leave Cassandra
unmasked, and the schedule's size does not count against the pipeline's memory. A source
reads the entries once they are due and sends them down the flow as `ExpiryDue` items. The
row-image step reads those rows again, like a change: the destination gets the row as it is
now, or its delete.

The schedule (created by the operator: the pipeline has no CREATE permission; see
`schema_statements` for the DDL and the grants it needs):

    <keyspace>.expiry_schedule
      ((bucket int, hour bigint), due timestamp, table_id uuid, key blob, static boolean)

`bucket` spreads entries over the source's partitions (a stable hash of table and key), and
`hour` (due // 1 h) keeps each Cassandra partition small. An entry carries its own TTL: a day
past its due time, so the table cleans itself up.

Exactly once: the source's state is a cursor per bucket, in Bytewax's recovery store: the due
time of the last entry it emitted, without its key (a clear primary key must not leave
Cassandra), so a restart emits the entries of that millisecond again. A replay emits entries
again too, and reading a row again is harmless (the image is versioned by when it was read).
Entries are written inside the row-image step, before its batch leaves, so a snapshot never
covers a batch whose entries are missing.

Clocks: `due` is never less than a second ahead of the writer's clock, and the source reads
`grace` seconds behind its own. Clocks further apart than that (NTP keeps them to
milliseconds) make late entries wait for the row's next change instead. Reads and writes of
the schedule are at LOCAL_QUORUM whatever the pipeline's own level: a source reading a
replica that lacks a fresh entry would move its cursor past it for good.

`buckets` may be raised on an existing schedule, never lowered: entries in the buckets
dropped would no longer be read, and their rows would never expire in the destinations. So the
schedule records every count it is written with (partition bucket -1, hour 0: one row per
count, the count as its key, no TTL), and a schedule writer or source configured below the
highest recorded count stops with `BucketCountError` before it writes or reads anything.
(Schedules written before that record existed have none: nothing to compare with.) To lower
it all the same, once no entry is left in the buckets to drop (entries last a day past their
due time, and rows can have TTLs of years): stop every pipeline, then, as the operator,
`DELETE FROM <keyspace>.expiry_schedule WHERE bucket = -1 AND hour = 0` and start them with
the new count.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from cassandra import ConsistencyLevel, cqltypes
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.metadata import protect_name
from prometheus_client import Counter

from connectors.cassandra.schema import IgnoredTable, TableSchema

__all__ = ["BucketCountError", "ExpiryDue", "ExpirySchedule", "ExpirySettings", "ExpirySource",
           "KeyCodec", "check_bucket_count", "schema_statements"]

log = logging.getLogger(__name__)

SCHEDULED = Counter("cdc_expiry_scheduled", "Row re-reads scheduled for a TTL")
DUE = Counter("cdc_expiry_due", "Scheduled row re-reads emitted once due")

TABLE = "expiry_schedule"
HOUR_MS = 3_600_000
KEEP_AFTER_DUE_S = 86_400  # an entry's TTL past its due time
MAX_TTL_S = 630_720_000  # Cassandra's largest TTL (20 years): a row's TTL can be that long
# A cluster in storage_compatibility_mode CASSANDRA_4 refuses expirations past 2038-01-19
# (CASSANDRA-14092): its rows all expire before it, and so need no entry that lasts longer.
_Y2038_S = 2**31 - 1
_PROTOCOL = 4  # the key blob's encoding (native protocol v4 value rules)
_COUNTS_PARTITION = (-1, 0)  # (bucket, hour) of the bucket counts the schedule was written with
_EPOCH = datetime.fromtimestamp(0, UTC)
_MIN_UUID = UUID(int=0)
_CODECS: dict[UUID, KeyCodec] = {}


@dataclass(frozen=True)
class ExpirySettings:
    """keyspace: where the schedule table is; buckets: the source's partitions;
    poll_seconds: between two reads of the schedule; grace_seconds: how far behind its own
    clock the source reads; lookback_seconds: where a source without recovery state starts;
    max_records: entries per batch."""

    keyspace: str = "cdc_pipeline_state"
    buckets: int = 4
    poll_seconds: float = 5.0
    grace_seconds: float = 5.0
    lookback_seconds: float = 86_400.0
    max_records: int = 1000

    def __post_init__(self) -> None:
        if not self.keyspace:
            raise ValueError("ExpirySettings.keyspace must be a keyspace name")
        if not 1 <= self.buckets < 2**31 or self.max_records < 1:  # bucket: a CQL int
            raise ValueError("ExpirySettings: buckets must be 1 to 2**31 - 1, max_records >= 1")
        if self.poll_seconds <= 0 or self.grace_seconds < 0 or self.lookback_seconds < 0:
            raise ValueError("ExpirySettings: poll_seconds > 0, grace and lookback >= 0")


def schema_statements(keyspace: str, replication: str, role: str = "cdc_pipeline") -> list[str]:
    """The CQL an operator runs once (as a superuser) before enabling expiry: the keyspace
    (REPLICATION, a CQL map literal), the schedule table, and ROLE's grants on them."""
    ks = protect_name(keyspace)
    return [
        f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication}",
        f"CREATE TABLE IF NOT EXISTS {ks}.{TABLE} (bucket int, hour bigint, due timestamp, "
        "table_id uuid, key blob, static boolean, "
        "PRIMARY KEY ((bucket, hour), due, table_id, key, static)) "
        "WITH gc_grace_seconds = 3600",
        f"GRANT SELECT ON KEYSPACE {ks} TO {protect_name(role)}",
        f"GRANT MODIFY ON KEYSPACE {ks} TO {protect_name(role)}",
    ]


class BucketCountError(ValueError):
    """`buckets` is below a count the schedule was already written with."""


def check_bucket_count(session, settings: ExpirySettings, consistency: int) -> None:
    """Raise BucketCountError if the schedule in settings.keyspace was written with more
    buckets than settings.buckets (the entries of the others would never be read)."""
    ks = protect_name(settings.keyspace)
    select = session.prepare(f"SELECT key FROM {ks}.{TABLE} WHERE bucket = ? AND hour = ?")  # noqa: S608 - quoted
    select.consistency_level = consistency
    used = max((int.from_bytes(row.key, "big")
                for row in session.execute(select, _COUNTS_PARTITION)), default=0)
    if used > settings.buckets:
        raise BucketCountError(
            f"ttl_expiry.buckets is {settings.buckets}, but {settings.keyspace}.{TABLE} was "
            f"written with {used} buckets: entries in buckets {settings.buckets}..{used - 1} "
            f"would never be read, and their rows would not expire in the destinations. Set "
            f"ttl_expiry.buckets to {used} or more (it may be raised, never lowered).")


def codec_of(table: TableSchema) -> KeyCodec:
    """The KeyCodec of TABLE, made once per table id (key columns never change type)."""
    codec = _CODECS.get(table.id)
    if codec is None:
        codec = _CODECS[table.id] = KeyCodec(table)
    return codec


class KeyCodec:
    """A table's primary key (partition then clustering columns) <-> one blob: a CQL tuple
    of the key's types, serialized by cassandra-driver. Key columns cannot change type."""

    def __init__(self, table: TableSchema) -> None:
        self.columns = [c.name for c in (*table.partition_key, *table.clustering)]
        self.partition_columns = [c.name for c in table.partition_key]
        self._tuple = cqltypes.TupleType.apply_parameters(
            [c.type.driver for c in (*table.partition_key, *table.clustering)])

    def encode(self, key: dict[str, Any], *, static: bool = False) -> bytes:
        names = self.partition_columns if static else self.columns
        values = [key[name] for name in names] + [None] * (len(self.columns) - len(names))
        return self._tuple.serialize(tuple(values), _PROTOCOL)

    def decode(self, blob: bytes, *, static: bool = False) -> dict[str, Any]:
        values = self._tuple.deserialize(blob, _PROTOCOL)
        names = self.partition_columns if static else self.columns
        return dict(zip(names, values, strict=False))


@dataclass(frozen=True)
class ExpiryDue:
    """A row whose TTL ran out (or will within the read's resolution): read it again.

    An entry of a table the source does not know (dropped before this process read the
    schema) has an empty KEY and PARTITION_KEY: nothing can decode its key, and nothing is
    read; the row-images step counts it (operators/readback.py)."""

    table_id: UUID
    key: dict[str, Any]  # partition then clustering columns (statics: the partition key)
    partition_key: dict[str, Any] = field(repr=False)
    static: bool
    due: int  # milliseconds since the epoch


def _entry_ttl(due_ms: int, now_ms: int) -> int:
    """Seconds an entry due at DUE_MS is kept: a day past its due time, within what the
    cluster accepts (never shorter than until its due time)."""
    ttl = min(max(0, (due_ms - now_ms) // 1000) + KEEP_AFTER_DUE_S, MAX_TTL_S)
    if due_ms // 1000 < _Y2038_S:
        ttl = min(ttl, _Y2038_S - now_ms // 1000 - 1)
    return ttl


def _bucket(table_id: UUID, blob: bytes, buckets: int) -> int:
    digest = hashlib.blake2b(table_id.bytes + blob, digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


class ExpirySchedule:
    """Writes schedule entries (one per row image with a TTL)."""

    def __init__(self, session, settings: ExpirySettings, *,
                 consistency: int = ConsistencyLevel.LOCAL_QUORUM,
                 clock: Callable[[], float] = time.time) -> None:
        self._session = session
        self._settings = settings
        self._clock = clock
        self._insert = session.prepare(
            f"INSERT INTO {protect_name(settings.keyspace)}.{TABLE} "  # noqa: S608 - quoted
            "(bucket, hour, due, table_id, key, static) VALUES (?, ?, ?, ?, ?, ?) USING TTL ?")
        self._insert.consistency_level = consistency
        # Checked, then recorded, before any entry is written with this count.
        check_bucket_count(session, settings, consistency)
        session.execute(self._insert, (*_COUNTS_PARTITION, _EPOCH, _MIN_UUID,
                                       settings.buckets.to_bytes(4, "big"), False, 0))

    def add(self, entries: Sequence[tuple[TableSchema, dict[str, Any], bool, int]]) -> None:
        """ENTRIES: (table, key, static, due in microseconds since the epoch). Written before
        this returns; a failed write raises (the batch is then replayed)."""
        if not entries:
            return
        now_ms = int(self._clock() * 1000)
        rows = []
        for table, key, static, due_us in entries:
            blob = codec_of(table).encode(key, static=static)
            # Never behind the source's cursor (it reads up to its clock less grace): a due
            # time already past (a backlog, a slow batch, a liveness that ended meanwhile)
            # means "read it again now", not "never". In whole seconds, rounded up (TTLs have
            # one-second resolution): the entries a row's successive reads make then coincide
            # instead of each starting its own chain of re-reads.
            due_ms = -(-max(due_us // 1000, now_ms + 1000) // 1000) * 1000
            ttl = _entry_ttl(due_ms, now_ms)
            rows.append((_bucket(table.id, blob, self._settings.buckets), due_ms // HOUR_MS,
                         datetime.fromtimestamp(due_ms / 1000, UTC), table.id, blob, static,
                         ttl))
        execute_concurrent_with_args(self._session, self._insert, rows, concurrency=32,
                                     raise_on_first_error=True)
        SCHEDULED.inc(len(rows))


Cursor = tuple[int, UUID, bytes, bool]  # (due ms, table id, key, static) of the last emitted


class ExpirySource(FixedPartitionedSource[ExpiryDue, Cursor]):
    """The due entries of the schedule, one partition per bucket (any worker may read any)."""

    def __init__(self, session: Callable[[], Any], tables: Callable[[UUID], Any],
                 settings: ExpirySettings, *,
                 consistency: int = ConsistencyLevel.LOCAL_QUORUM,
                 clock: Callable[[], float] = time.time) -> None:
        """session(): the Cassandra session (made lazily, in the worker); tables(id): the
        table's current schema (None: unknown, its entries go on without a key: see ExpiryDue)."""
        self._session = session
        self._tables = tables
        self._settings = settings
        self._consistency = consistency
        self._clock = clock

    def list_parts(self) -> list[str]:
        """One partition per bucket; BucketCountError if the schedule has more buckets."""
        check_bucket_count(self._session(), self._settings, self._consistency)
        return [f"expiry-{bucket}" for bucket in range(self._settings.buckets)]

    def build_part(self, step_id: str, for_part: str, resume_state: Cursor | None
                   ) -> ExpiryPartition:
        bucket = int(for_part.removeprefix("expiry-"))
        if resume_state is None:
            start = int((self._clock() - self._settings.lookback_seconds) * 1000)
            resume_state = (start, _MIN_UUID, b"", False)
        return ExpiryPartition(self._session(), self._tables, self._settings, bucket,
                               resume_state, consistency=self._consistency, clock=self._clock)


class ExpiryPartition(StatefulSourcePartition[ExpiryDue, Cursor]):
    def __init__(self, session, tables: Callable[[UUID], Any], settings: ExpirySettings,
                 bucket: int, cursor: Cursor, *, consistency: int,
                 clock: Callable[[], float]) -> None:
        self._tables = tables
        self._settings = settings
        self._bucket = bucket
        self._cursor = cursor
        self._clock = clock
        self._awake: datetime | None = None
        self._session = session
        # Multi-column slices only: Cassandra refuses single- and multi-column relations on
        # clustering columns together.
        self._select = session.prepare(
            f"SELECT due, table_id, key, static FROM {protect_name(settings.keyspace)}.{TABLE} "  # noqa: S608
            "WHERE bucket = ? AND hour = ? AND (due, table_id, key, static) > (?, ?, ?, ?) "
            "AND (due) <= (?) LIMIT ?")
        self._select.consistency_level = consistency

    def next_batch(self) -> list[ExpiryDue]:
        """Entries due up to now - grace, after the cursor, hour partition by hour partition,
        at most max_records."""
        until = int((self._clock() - self._settings.grace_seconds) * 1000)
        limit = self._settings.max_records
        items: list[ExpiryDue] = []
        cursor = self._cursor
        while len(items) < limit and cursor[0] // HOUR_MS <= until // HOUR_MS:
            hour = cursor[0] // HOUR_MS
            want = limit - len(items)
            due, table_id, key, static = cursor
            rows = list(self._session.execute(self._select, (
                self._bucket, hour, _timestamp(due), table_id, key, static, _timestamp(until),
                want)))
            for row in rows:
                cursor = (_millis(row.due), row.table_id, row.key, row.static)
                item = self._item(row.table_id, row.key, row.static, cursor[0])
                if item is not None:
                    items.append(item)
            if len(rows) == want:
                break  # full: the rest next time, at once
            if (hour + 1) * HOUR_MS - 1 > until:
                break  # this hour's later entries are not due yet
            # Everything of this hour is read: the next hour partition, from its start (no
            # entry sorts at or before (start, 0, b"", false): a key blob is never empty).
            cursor = ((hour + 1) * HOUR_MS, _MIN_UUID, b"", False)
        self._cursor = cursor
        self._awake = None if len(items) >= limit else \
            datetime.now(UTC) + timedelta(seconds=self._settings.poll_seconds)
        DUE.inc(len(items))
        return items

    def _item(self, table_id: UUID, blob: bytes, static: bool, due: int) -> ExpiryDue | None:
        table = self._tables(table_id)
        if isinstance(table, IgnoredTable):
            # A table of a keyspace this flow does not capture (any more): it writes nothing
            # of it, so there is no row to read again. Not a dropped table: not counted as one.
            log.debug("expiry entry of %s.%s skipped: its keyspace is not captured",
                      table.keyspace, table.name)
            return None
        if not isinstance(table, TableSchema):
            # A table this process never knew (dropped before it read the schema): its key
            # cannot be decoded, but the entry goes on, keyless, so that the row-images step
            # counts it and warns (operators/readback.py) instead of it vanishing here.
            return ExpiryDue(table_id, {}, {}, static, due)
        codec = codec_of(table)
        key = codec.decode(blob, static=static)
        return ExpiryDue(table_id, key, {c: key[c] for c in codec.partition_columns}, static,
                         due)

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> Cursor:
        """Where a restart resumes: before the first entry due at the same millisecond as the
        last one emitted. Not that entry itself: its key is the row's clear primary key, and
        the snapshot goes to Bytewax's recovery store, outside Cassandra. The entries of that
        millisecond are emitted again after a restart, which reads their rows again
        (harmless: see the module docstring)."""
        return (self._cursor[0], _MIN_UUID, b"", False)


def _timestamp(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, UTC)


def _millis(value: datetime) -> int:
    """Milliseconds since the epoch of a driver timestamp (naive UTC)."""
    return round(value.replace(tzinfo=UTC).timestamp() * 1000)
