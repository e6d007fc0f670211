"""The cdc_raw cursor on a real node's segments, for commit-log versions 7 and 8."""

from __future__ import annotations

import time

import pytest

from connectors.cassandra.segment import Entry, ReadError
from connectors.cassandra.tail import LocalSegmentStore, poll

ROWS = 60
WAIT = 30.0  # seconds: many sync periods (1 s) on a busy machine


def drain(store, position):
    records = []
    while True:
        batch = poll(store, position, max_records=500)
        records += batch.records
        position = batch.position
        if batch.caught_up:
            return records, position


@pytest.mark.parametrize("version", [7, 8], ids=["commitlog-v7", "commitlog-v8"])
def test_every_write_arrives_once_in_order_and_replays_identically(
    version, cassandra_clusters, cassandra_keyspace
):
    sess, keyspace = cassandra_keyspace(version)
    sess.execute(f"CREATE TABLE {keyspace}.t (id int PRIMARY KEY, v text) WITH cdc = true")
    table_id = sess.execute(
        "SELECT id FROM system_schema.tables WHERE keyspace_name = %s AND table_name = 't'",
        (keyspace.strip('"'),),
    ).one().id
    store = LocalSegmentStore(cassandra_clusters[version].cdc_raw_dirs[0])
    _, start = drain(store, None)  # history before this test is not its business

    insert = sess.prepare(f"INSERT INTO {keyspace}.t (id, v) VALUES (?, ?)")
    for i in range(ROWS):
        sess.execute(insert, (i, f"value-{i:04d}"))

    ours: list[Entry] = []
    records, position = [], start
    deadline = time.monotonic() + WAIT
    while len(ours) < ROWS and time.monotonic() < deadline:
        new, position = drain(store, position)
        records += new
        # The table id also shows up in the schema mutation of CREATE TABLE, which may be synced
        # after `start`: our entries are the ones carrying a value too.
        ours += [r for r in new if isinstance(r, Entry) and table_id.bytes in r.mutation
                 and b"value-" in r.mutation]
        time.sleep(0.2)

    assert [r for r in records if isinstance(r, ReadError)] == []
    assert len(ours) == ROWS, f"{len(ours)} of {ROWS} writes reached cdc_raw within {WAIT} s"
    # Order: each value appears in the entry at the same rank as its write.
    assert all(f"value-{i:04d}".encode() in e.mutation for i, e in enumerate(ours))
    assert all(e.version == version for e in ours)
    # Replay from the saved start: the very same records, positions included.
    replayed, _ = drain(store, start)
    assert replayed[: len(records)] == records
