"""Golden corpus: whole cdc_raw segments a real Cassandra 5.0.9 node wrote, kept as test data.

`python -m tests.connectors.cassandra.golden` (with the local stack running) re-captures them:
for commit-log versions 7 and 8 it runs DML below in a fresh keyspace, writes filler to a
non-CDC keyspace until the segment holding the DML is COMPLETED, and saves under
data/golden-v<version>/: the segment (gzip: a 1 MiB mmap segment is mostly zeros and filler),
its _cdc.idx, and the keyspace's system_schema rows. tests/.../test_golden_segments.py reads them
without a node.
"""

from __future__ import annotations

import datetime
import gzip
import json
import shutil
import time
import uuid
from pathlib import Path

DATA = Path(__file__).parent / "data"
KEYSPACE = "golden"
FILLER_KEYSPACE = "golden_filler"

SCHEMA = [
    "CREATE TABLE {ks}.patients (id int PRIMARY KEY, name text, born date, weight double, "
    "tags set<text>, notes list<text>, attrs map<text, int>) WITH cdc = true",
    "CREATE TABLE {ks}.visits (patient int, at timestamp, code text, cost decimal, "
    "clinic text static, PRIMARY KEY (patient, at)) WITH CLUSTERING ORDER BY (at DESC) "
    "AND cdc = true",
    "CREATE TABLE {ks}.audit_off (id int PRIMARY KEY, v text)",  # cdc off: parsed, dropped
]

# Every statement carries its own timestamp, so what it wrote is known exactly.
DML = [
    "INSERT INTO {ks}.patients (id, name, born, weight, tags, notes, attrs) VALUES "
    "(1, 'Ana Lima', '1980-02-29', 61.5, {{'a', 'b'}}, ['first'], {{'x': 1}}) "
    "USING TIMESTAMP 1000",
    "UPDATE {ks}.patients USING TIMESTAMP 2000 AND TTL 3600 SET weight = 62.0 WHERE id = 1",
    "UPDATE {ks}.patients USING TIMESTAMP 3000 SET tags = tags + {{'c'}}, "
    "notes = notes + ['second'] WHERE id = 1",
    "UPDATE {ks}.patients USING TIMESTAMP 4000 SET attrs = {{'y': 2}} WHERE id = 1",
    "DELETE name FROM {ks}.patients USING TIMESTAMP 5000 WHERE id = 1",
    "INSERT INTO {ks}.patients (id, name) VALUES (2, 'Ben') USING TIMESTAMP 6000",
    "DELETE FROM {ks}.patients USING TIMESTAMP 7000 WHERE id = 2",
    "INSERT INTO {ks}.visits (patient, at, code, cost, clinic) VALUES "
    "(1, '2024-01-01 10:00:00+0000', 'A01', 12.50, 'North') USING TIMESTAMP 8000",
    "INSERT INTO {ks}.visits (patient, at, code) VALUES "
    "(1, '2024-02-01 10:00:00+0000', 'B02') USING TIMESTAMP 9000",
    "DELETE FROM {ks}.visits USING TIMESTAMP 10000 WHERE patient = 1 "
    "AND at >= '2024-01-15 00:00:00+0000'",
    "DELETE FROM {ks}.visits USING TIMESTAMP 11000 WHERE patient = 2",
    "BEGIN BATCH USING TIMESTAMP 12000 "
    "INSERT INTO {ks}.patients (id, name) VALUES (3, 'Cy'); "
    "INSERT INTO {ks}.audit_off (id, v) VALUES (3, 'not captured'); APPLY BATCH",
]


def golden_dir(version: int) -> Path:
    return DATA / f"golden-v{version}"


def _jsonable(value):
    if isinstance(value, uuid.UUID | datetime.datetime):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    try:  # lists, sets, the driver's SortedSet (table flags)
        return [_jsonable(v) for v in value]
    except TypeError:
        pass
    return value


def capture(version: int) -> Path:
    """Run the workload on the stack's cluster for VERSION and save the segment holding it."""
    from cassandra.query import SimpleStatement

    from connectors.cassandra.cdc_index import CdcIndex
    from connectors.cassandra.schema import fetch_schema_rows
    from connectors.cassandra.tail import LocalSegmentStore, poll
    from devstack.cassandra import cluster_info, session

    store = LocalSegmentStore(cluster_info(version).cdc_raw_dirs[0])
    replication = "{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}"
    with session(version, "admin") as sess:
        for ks in (KEYSPACE, FILLER_KEYSPACE):
            sess.execute(f"DROP KEYSPACE IF EXISTS {ks}")
            sess.execute(f"CREATE KEYSPACE {ks} WITH replication = {replication}")
        for ddl in SCHEMA:
            sess.execute(ddl.format(ks=KEYSPACE))
        sess.execute(f"CREATE TABLE {FILLER_KEYSPACE}.f (id int PRIMARY KEY, v text)")
        time.sleep(2)  # schema mutations synced: the DML starts after them in the log
        cursor = _end(store, poll)
        for statement in DML:
            sess.execute(SimpleStatement(statement.format(ks=KEYSPACE)))
        # Roll the segment over with filler in a keyspace the decoder never loads.
        filler = sess.prepare(f"INSERT INTO {FILLER_KEYSPACE}.f (id, v) VALUES (?, ?)")
        target = cursor.segment_id
        deadline = time.monotonic() + 120
        i = 0
        while time.monotonic() < deadline:
            segments = [s for s in store.segments() if s.segment_id >= target]
            holding = _holding_dml(store, segments, cursor, poll)
            if holding is not None:
                index = store.index(holding)
                if isinstance(index, CdcIndex) and index.completed:
                    break
            for _ in range(20):
                sess.execute(filler, (i, "f" * 16_000))
                i += 1
        else:
            raise RuntimeError("the segment holding the workload never completed")
        schema = fetch_schema_rows(sess, [KEYSPACE])
        sess.execute(f"DROP KEYSPACE {FILLER_KEYSPACE}")
        sess.execute(f"DROP KEYSPACE {KEYSPACE}")

    out = golden_dir(version)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with gzip.open(out / (holding.path.name + ".gz"), "wb", compresslevel=9) as packed:
        packed.write(holding.path.read_bytes())
    shutil.copy(holding.index_path, out / holding.index_path.name)
    rows = {name: [{k: _jsonable(v) for k, v in row.items()} for row in getattr(schema, name)]
            for name in ("tables", "views", "columns", "types", "dropped_columns")}
    # Ids of every table that existed then (the filler's included): their mutations are skipped
    # as other keyspaces', as a live registry would.
    rows["all_tables"] = [{k: _jsonable(v) for k, v in row.items()} for row in schema.all_tables]
    (out / "schema.json").write_text(json.dumps(rows, indent=1, sort_keys=True))
    return out


def _end(store, poll):
    position = None
    while True:
        batch = poll(store, position, max_records=1000)
        position = batch.position
        if batch.caught_up:
            return position


def _holding_dml(store, segments, cursor, poll):
    """The segment where the workload's first entry after CURSOR landed (once synced)."""
    batch = poll(store, cursor, max_records=1)
    if not batch.records:
        return None
    first = batch.records[0]
    return next((s for s in segments if s.segment_id == first.segment_id), None)


if __name__ == "__main__":
    for v in (7, 8):
        print(capture(v))
