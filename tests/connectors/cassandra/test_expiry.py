"""The TTL expiry schedule: keys kept exactly, entries emitted once when due (across hour
partitions and batches), resumable from the source's cursor."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest

from connectors.cassandra.expiry import (
    HOUR_MS,
    BucketCountError,
    ExpiryDue,
    ExpirySchedule,
    ExpirySettings,
    ExpirySource,
    KeyCodec,
    schema_statements,
)
from connectors.cassandra.schema import IgnoredTable, SchemaRows, TableSchema, build_schemas
from tests.manual_clock import ManualClock


def table_schema(columns: list[tuple[str, str, str, int]]) -> TableSchema:
    """A TableSchema from (name, kind, CQL type, position) rows, as system_schema has them."""
    ks, name = "ks", "t"
    table_row = {"keyspace_name": ks, "table_name": name, "id": uuid.uuid4(), "cdc": True,
                 "flags": {"compound"}}
    rows = SchemaRows(
        all_tables=[table_row], tables=[table_row], views=[], types=[], dropped_columns=[],
        columns=[{"keyspace_name": ks, "table_name": name, "column_name": n, "kind": k,
                  "type": t, "position": p, "clustering_order": "asc" if k == "clustering"
                  else "none"} for n, k, t, p in columns])
    return next(iter(build_schemas(rows)[0].values()))


VISITS = table_schema([
    ("patient", "partition_key", "uuid", 0), ("site", "partition_key", "text", 1),
    ("at", "clustering", "timestamp", 0), ("codes", "clustering", "frozen<list<int>>", 1),
    ("note", "regular", "text", -1), ("clinic", "static", "text", -1)])


def test_keys_come_back_as_they_went_in():
    codec = KeyCodec(VISITS)
    key = {"patient": uuid.UUID(int=7), "site": "Zoë", "at": datetime(1969, 7, 20, 20, 17),
           "codes": [1, -2, 3]}
    assert codec.decode(codec.encode(key)) == key
    partition = {"patient": uuid.UUID(int=7), "site": "north"}
    blob = codec.encode(partition, static=True)
    assert codec.decode(blob, static=True) == partition
    assert codec.encode(key) != codec.encode({**key, "codes": [1, -2]})


@pytest.fixture
def schedule_keyspace(cassandra_keyspace):
    """A fresh keyspace holding a schedule table the pipeline role may use."""
    sess, ks = cassandra_keyspace(7)
    for statement in schema_statements(ks.strip('"'), "{'class': 'SimpleStrategy', "
                                       "'replication_factor': 1}"):
        sess.execute(statement)
    return sess, ks.strip('"')


def test_entries_come_out_once_when_due_across_hours_and_batches(schedule_keyspace):
    sess, keyspace = schedule_keyspace
    table = table_schema([("id", "partition_key", "int", 0), ("name", "regular", "text", -1)])
    settings = ExpirySettings(keyspace=keyspace, buckets=2, grace_seconds=0,
                              lookback_seconds=3 * 3600, max_records=7)
    start = 1_800_000_000.0  # seconds; entries spread over the three hours after it
    clock = ManualClock(start - 1)
    ExpirySchedule(sess, settings, clock=clock).add(
        [(table, {"id": i}, False, int((start + 400 * i) * 1_000_000)) for i in range(30)]
        + [(table, {"id": 99}, True, int((start + 100) * 1_000_000))])
    source = ExpirySource(lambda: sess, lambda _id: table, settings, clock=clock)
    parts = {name: source.build_part("step", name, None) for name in source.list_parts()}
    assert sorted(parts) == ["expiry-0", "expiry-1"]

    def drain() -> list[ExpiryDue]:
        found: list[ExpiryDue] = []
        for part in parts.values():
            while batch := part.next_batch():
                assert len(batch) <= settings.max_records
                found += batch
        return found

    clock.now = start - 1
    assert drain() == []  # nothing due yet
    clock.now = start + 400 * 12 + 0.5  # entries 0..12 and the static one are due
    first = drain()
    assert sorted(d.key["id"] for d in first if not d.static) == list(range(13))
    (static,) = [d for d in first if d.static]
    assert static.key == static.partition_key == {"id": 99}
    assert drain() == []  # emitted once
    # A restart resumes each bucket from its snapshot, which holds no key (a clear primary
    # key would leave Cassandra for the recovery store): the entries due at the last one's
    # millisecond come again (here one per bucket at most: a bucket whose cursor moved on to
    # the next hour has none), then the rest later.
    snapshots = {name: part.snapshot() for name, part in parts.items()}
    assert all(key == b"" for _due, _table, key, _static in snapshots.values())
    parts = {name: source.build_part("step", name, snapshots[name]) for name in parts}
    again = drain()
    assert {d.due for d in again} <= {due for due, *_ in snapshots.values()}
    assert len(again) <= len(snapshots) and all(d in first for d in again)
    clock.now = start + 400 * 30
    rest = drain()
    assert sorted(d.key["id"] for d in rest) == list(range(13, 30))
    assert {d.due // HOUR_MS for d in first + rest} == {
        int(start + 400 * i) * 1000 // HOUR_MS for i in range(30)}


_DUE_AT = 1_800_000_010.0  # when the entry below falls due (seconds)


def _one_entry_read_by(schedule_keyspace, table_of) -> tuple[TableSchema, list]:
    """One expiry entry of a fresh table scheduled, then read once due by a source whose
    schema lookup is TABLE_OF: (the table, what the source gave)."""
    sess, keyspace = schedule_keyspace
    table = table_schema([("id", "partition_key", "int", 0), ("name", "regular", "text", -1)])
    settings = ExpirySettings(keyspace=keyspace, buckets=1, grace_seconds=0)
    clock = ManualClock(_DUE_AT - 10)
    ExpirySchedule(sess, settings, clock=clock).add(
        [(table, {"id": 1}, False, int(_DUE_AT * 1_000_000))])
    source = ExpirySource(lambda: sess, lambda _id: table_of(table), settings,
                          clock=clock).build_part("step", "expiry-0", None)
    clock.now = _DUE_AT + 10
    return table, source.next_batch()


def test_entries_of_tables_this_process_never_knew_go_on_without_a_key(schedule_keyspace):
    """Their keys cannot be decoded; they go on, keyless, for the row-images step to count
    (tests/operators/test_readback.py), not dropped here unseen."""
    table, read = _one_entry_read_by(schedule_keyspace, lambda _table: None)
    assert read == [ExpiryDue(table.id, {}, {}, False, int(_DUE_AT * 1000))]


def test_entries_of_a_keyspace_no_longer_captured_are_skipped(schedule_keyspace):
    """The table exists, outside the capture: no row of it is written anywhere, so its
    entries are dropped here, not passed on as a dropped table's."""
    _, read = _one_entry_read_by(
        schedule_keyspace, lambda table: IgnoredTable(table.keyspace, table.name, table.id))
    assert read == []


def test_entries_of_rows_with_the_longest_ttls_are_kept_until_due(schedule_keyspace):
    """A row may expire just before 2038 (the latest a cluster in CASSANDRA_4 mode accepts)
    or, on a 5.0-native cluster, up to 20 years on: its entry's own TTL (due + a day) is capped
    at what Cassandra accepts, instead of failing the batch for ever, and still outlives it."""
    sess, keyspace = schedule_keyspace
    table = table_schema([("id", "partition_key", "int", 0), ("name", "regular", "text", -1)])
    settings = ExpirySettings(keyspace=keyspace, buckets=1, grace_seconds=0,
                              lookback_seconds=0)
    now = datetime.now(UTC).timestamp()
    due = 2**31 - 1 - 3600  # an hour before the 2038 limit
    ExpirySchedule(sess, settings).add([(table, {"id": 1}, False, due * 1_000_000)])
    clock = ManualClock(due - 10)
    part = ExpirySource(lambda: sess, lambda _id: table, settings, clock=clock).build_part(
        "step", "expiry-0", (int(due - 60) * 1000, uuid.UUID(int=0), b"", False))
    assert part.next_batch() == []
    clock.now = due + 1
    assert [d.key for d in part.next_batch()] == [{"id": 1}]
    assert now < due


def test_an_entry_written_after_its_due_time_is_read_at_the_next_poll(schedule_keyspace):
    """A due time already past when written (a backlog, a slow batch) is due now, not never;
    a row's entries a few milliseconds apart are one entry."""
    sess, keyspace = schedule_keyspace
    table = table_schema([("id", "partition_key", "int", 0), ("name", "regular", "text", -1)])
    settings = ExpirySettings(keyspace=keyspace, buckets=1, grace_seconds=0,
                              lookback_seconds=3600)
    clock = ManualClock(1_800_000_000.25)
    part = ExpirySource(lambda: sess, lambda _id: table, settings, clock=clock).build_part(
        "step", "expiry-0", None)
    assert part.next_batch() == []  # the cursor is now at the clock
    schedule = ExpirySchedule(sess, settings, clock=clock)
    schedule.add([(table, {"id": 1}, False, int((clock.now - 600) * 1_000_000))])
    schedule.add([(table, {"id": 2}, False, int((clock.now + 30) * 1_000_000) + k)
                  for k in (0, 1_000, 2_000)])
    entries = [r for r in sess.execute(f"SELECT bucket FROM {keyspace}.expiry_schedule")
               if r.bucket >= 0]  # not the bucket counts' record
    assert len(entries) == 2
    clock.now += 2.0  # "now": at most two seconds on (whole seconds, at least one ahead)
    assert [d.key for d in part.next_batch()] == [{"id": 1}]
    clock.now += 31.0
    assert [d.key for d in part.next_batch()] == [{"id": 2}]


def test_a_bucket_count_below_one_the_schedule_was_written_with_stops_both_sides(
        schedule_keyspace):
    sess, keyspace = schedule_keyspace
    table = table_schema([("id", "partition_key", "int", 0)])
    four = ExpirySettings(keyspace=keyspace, buckets=4, grace_seconds=0)
    now = datetime.now(UTC).timestamp()
    ExpirySchedule(sess, four).add([(table, {"id": i}, False, int((now - 1) * 1e6))
                                    for i in range(40)])
    two = dataclasses.replace(four, buckets=2)
    lowered = r"ttl_expiry.buckets is 2, but .* written with 4 buckets: entries in buckets 2..3"
    with pytest.raises(BucketCountError, match=lowered):
        ExpirySchedule(sess, two)
    with pytest.raises(BucketCountError, match=lowered):
        ExpirySource(lambda: sess, lambda _id: table, two).list_parts()
    # Raised, every entry is still read once; the recorded counts are not entries.
    eight = dataclasses.replace(four, buckets=8)
    ExpirySchedule(sess, eight)
    later = ManualClock(now + 5)  # entries are due a second after they are written, at the earliest
    source = ExpirySource(lambda: sess, lambda _id: table, eight, clock=later)
    assert len(source.list_parts()) == 8
    due = [d.key["id"] for name in source.list_parts()
           for d in source.build_part("step", name, None).next_batch()]
    assert sorted(due) == list(range(40))
    # 4, the count the entries were written with, is now below the 8 recorded.
    with pytest.raises(BucketCountError, match="written with 8 buckets"):
        ExpirySource(lambda: sess, lambda _id: table, four).list_parts()


@pytest.mark.parametrize("buckets", [0, 2**31])
def test_a_bucket_count_outside_a_cql_int_is_refused(buckets: int) -> None:
    # The bucket is a CQL int column of the schedule (and the configuration caps it at 256).
    with pytest.raises(ValueError, match=r"buckets must be 1 to 2\*\*31 - 1"):
        ExpirySettings(keyspace="ks", buckets=buckets)
    assert ExpirySettings(keyspace="ks", buckets=2**31 - 1).buckets == 2**31 - 1
