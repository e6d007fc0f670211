"""Row images read back from a real node converge to Cassandra's state (docs/adr/0003).

The workload mixes partial updates, out-of-order client timestamps, cell/row/range/partition
deletes, TTLs, collections and static columns. Its real change events (captured from cdc_raw)
go through RowImages; the operations are applied to a minimal in-memory destination with the
ADR's rules (version guard, tombstones); the result must equal SELECT, row for row.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

import pytest
from cassandra import ConsistencyLevel
from prometheus_client import REGISTRY

from connectors.dead_letter import to_line
from operators.readback import RowImages, RowReader, UnreadableChange
from operators.row_ops import RangeDelete, RowDelete, RowUpsert
from tests.connectors.cassandra.cdc_capture import CdcCapture

SCHEMA = [
    "CREATE TABLE {ks}.patients (id int PRIMARY KEY, name text, weight double, tags set<text>, "
    "attrs map<text, int>) WITH cdc = true",
    "CREATE TABLE {ks}.visits (patient int, at timestamp, code text, clinic text static, "
    "PRIMARY KEY (patient, at)) WITH CLUSTERING ORDER BY (at DESC) AND cdc = true",
]
WORKLOAD = [
    "INSERT INTO {ks}.patients (id, name, weight, tags, attrs) VALUES "
    "(1, 'Ana', 61.5, {{'a'}}, {{'x': 1}}) USING TIMESTAMP 1000",
    "UPDATE {ks}.patients USING TIMESTAMP 3000 SET tags = tags + {{'c'}} WHERE id = 1",
    "UPDATE {ks}.patients USING TIMESTAMP 2000 SET weight = 70.0 WHERE id = 1",  # out of order
    "UPDATE {ks}.patients USING TIMESTAMP 500 SET name = 'older' WHERE id = 1",  # loses
    "UPDATE {ks}.patients USING TIMESTAMP 4000 SET attrs = {{'y': 2}} WHERE id = 1",
    "DELETE weight FROM {ks}.patients USING TIMESTAMP 5000 WHERE id = 1",
    "INSERT INTO {ks}.patients (id, name) VALUES (2, 'Ben') USING TIMESTAMP 6000",
    "DELETE FROM {ks}.patients USING TIMESTAMP 7000 WHERE id = 2",
    "INSERT INTO {ks}.patients (id, name) VALUES (3, 'Cy') USING TIMESTAMP 100 AND TTL 3600",
    "INSERT INTO {ks}.visits (patient, at, code, clinic) VALUES "
    "(1, '2024-01-01 10:00:00+0000', 'A01', 'North') USING TIMESTAMP 8000",
    "INSERT INTO {ks}.visits (patient, at, code) VALUES "
    "(1, '2024-02-01 10:00:00+0000', 'B02') USING TIMESTAMP 9000",
    "INSERT INTO {ks}.visits (patient, at, code) VALUES "
    "(1, '2024-03-01 10:00:00+0000', 'C03') USING TIMESTAMP 99000",  # newer than the range delete
    "DELETE FROM {ks}.visits USING TIMESTAMP 10000 WHERE patient = 1 "
    "AND at >= '2024-01-15 00:00:00+0000'",
    "UPDATE {ks}.visits USING TIMESTAMP 11000 SET clinic = 'South' WHERE patient = 1",
    "INSERT INTO {ks}.visits (patient, at, code, clinic) VALUES "
    "(2, '2024-01-01 10:00:00+0000', 'Z', 'East') USING TIMESTAMP 12000",
    "DELETE FROM {ks}.visits USING TIMESTAMP 13000 WHERE patient = 2",
]


class Destination:
    """The ADR's rules in memory: rows by key with version and deleted flag."""

    def __init__(self, clustering_desc: dict[str, bool]) -> None:
        self.rows: dict[tuple, dict] = {}
        self.desc = clustering_desc

    def apply(self, op) -> None:
        if isinstance(op, RowUpsert | RowDelete):
            slot = (op.table, op.static, tuple(sorted(op.key.items())))
            stored = self.rows.get(slot)
            if stored is None or stored["version"] <= op.version:
                values = dict(op.values) if isinstance(op, RowUpsert) else {}
                self.rows[slot] = {"version": op.version, "deleted": isinstance(op, RowDelete),
                                   "values": values}
        elif isinstance(op, RangeDelete):
            for (table, static, key), stored in self.rows.items():
                keyd = dict(key)
                if table != op.table or stored["version"] > op.version:
                    continue
                if any(keyd.get(k) != v for k, v in op.partition_key.items()):
                    continue
                if static and not op.include_static:
                    continue
                if static or self._in_range(keyd, op):
                    stored.update(deleted=True, values={}, version=op.version)

    def _in_range(self, key: dict, op: RangeDelete) -> bool:
        (column,) = self.desc  # one clustering column in this test
        value, desc = key.get(column), self.desc[column]

        def after_start(bound):
            if not bound.prefix:
                return True
            b = bound.prefix[column]
            return (value <= b if desc else value >= b) if bound.inclusive else (
                value < b if desc else value > b)

        def before_end(bound):
            if not bound.prefix:
                return True
            b = bound.prefix[column]
            return (value >= b if desc else value <= b) if bound.inclusive else (
                value > b if desc else value < b)

        return after_start(op.start) and before_end(op.end)

    def live(self, table: str, static: bool = False) -> dict[tuple, dict]:
        return {key: r["values"] for (t, s, key), r in self.rows.items()
                if t == table and s == static and not r["deleted"]}


@pytest.mark.parametrize("version", [8])
def test_row_images_converge_to_select(version, cassandra_clusters, cassandra_keyspace):
    sess, ks = cassandra_keyspace(version)
    for ddl in SCHEMA:
        sess.execute(ddl.format(ks=ks))
    capture = CdcCapture(sess, ks, cassandra_clusters[version].cdc_raw_dirs[0])

    def workload():
        for statement in WORKLOAD:
            sess.execute(statement.format(ks=ks))

    captured = capture.run(workload, ["patients", "visits"])
    assert captured.errors == []
    registry = capture.registry()
    images = RowImages(RowReader(sess, consistency=ConsistencyLevel.ONE),
                       lambda e: registry.table(e.table_id))
    destination = Destination({"at": True})
    for event in captured.events:
        for operation in images.operations(event):
            destination.apply(operation)

    def expected(query, key_columns, value_columns):
        return {tuple(sorted((k, getattr(row, k)) for k in key_columns)):
                {c: getattr(row, c) for c in value_columns}
                for row in sess.execute(query.format(ks=ks))}

    patients = expected("SELECT * FROM {ks}.patients", ["id"], ["name", "weight", "tags", "attrs"])
    assert destination.live("patients") == patients
    assert set(patients) == {(("id", 1),), (("id", 3),)}  # 2 deleted
    assert patients[(("id", 1),)]["name"] == "Ana" and patients[(("id", 1),)]["weight"] is None

    visits = expected("SELECT patient, at, code FROM {ks}.visits WHERE code > '' ALLOW FILTERING",
                      ["patient", "at"], ["code"])
    assert destination.live("visits") == visits
    assert sorted(v["code"] for v in visits.values()) == ["A01", "C03"]
    assert datetime(2024, 3, 1, 10, 0) in {dict(k)["at"] for k in visits}
    statics = {(("patient", r.patient),): {"clinic": r.clinic}
               for r in sess.execute(f"SELECT DISTINCT patient, clinic FROM {ks}.visits")
               if r.clinic is not None}
    assert destination.live("visits", static=True) == statics == {
        (("patient", 1),): {"clinic": "South"}}


# Each statement's images reach the destination before the next statement runs, as in a live
# pipeline: a version taken from write times would let a newer image lose to an older one.
LIVE_STEPS = [
    "INSERT INTO {ks}.patients (id, name, weight) VALUES (1, 'Ana', 61.5) USING TIMESTAMP 1000",
    "UPDATE {ks}.patients USING TIMESTAMP 4000 SET attrs = {{'y': 2}} WHERE id = 1",
    # Deletes the row's newest cell: what is left is older than what the destination holds.
    "UPDATE {ks}.patients USING TIMESTAMP 6000 SET attrs = null WHERE id = 1",
    # Out of order: older than the tombstone above, yet it is the current value of weight.
    "UPDATE {ks}.patients USING TIMESTAMP 2000 SET weight = 70.0 WHERE id = 1",
    "INSERT INTO {ks}.visits (patient, at, code, clinic) VALUES "
    "(1, '2024-01-01 10:00:00+0000', 'A01', 'North') USING TIMESTAMP 8000",
    "UPDATE {ks}.visits USING TIMESTAMP 9000 SET clinic = null WHERE patient = 1",
    "INSERT INTO {ks}.visits (patient, at, code) VALUES "
    "(1, '2024-02-01 10:00:00+0000', 'B02') USING TIMESTAMP 3000",
]


def test_images_applied_as_they_come_track_every_step(cassandra_clusters, cassandra_keyspace):
    sess, ks = cassandra_keyspace(7)
    for ddl in SCHEMA:
        sess.execute(ddl.format(ks=ks))
    capture = CdcCapture(sess, ks, cassandra_clusters[7].cdc_raw_dirs[0])
    destination = Destination({"at": True})
    images = None
    for step, statement in enumerate(LIVE_STEPS):
        captured = capture.run(lambda s=statement: sess.execute(s.format(ks=ks)),
                               ["patients", "visits"])
        registry = capture.registry()
        images = images or RowImages(RowReader(sess, consistency=ConsistencyLevel.ONE),
                                     lambda e, r=registry: r.table(e.table_id))
        for event in captured.events:
            for operation in images.operations(event):
                destination.apply(operation)
        patients = {(("id", r.id),): {"name": r.name, "weight": r.weight, "tags": r.tags,
                                      "attrs": r.attrs}
                    for r in sess.execute(f"SELECT * FROM {ks}.patients")}
        assert destination.live("patients") == patients, f"after step {step}: {statement}"
        visits = {(("at", r.at), ("patient", r.patient)): {"code": r.code}
                  for r in sess.execute(f"SELECT patient, at, code FROM {ks}.visits")}
        assert destination.live("visits") == visits, f"after step {step}: {statement}"
        statics = {(("patient", r.patient),): {"clinic": r.clinic}
                   for r in sess.execute(f"SELECT DISTINCT patient, clinic FROM {ks}.visits")
                   if r.clinic is not None}
        assert destination.live("visits", static=True) == statics, f"after step {step}"


AT_ONCE_SCHEMA = SCHEMA + [
    "CREATE TABLE {ks}.by_name (name text PRIMARY KEY, n int, tags set<text>) WITH cdc = true",
    "CREATE TABLE {ks}.by_time (at timestamp PRIMARY KEY, n int) WITH cdc = true",
]
AT_ONCE_WORKLOAD = [
    *(f"INSERT INTO {{ks}}.patients (id, name, weight) VALUES ({i}, 'P{i}', {50 + i})"
      for i in range(30)),
    "UPDATE {ks}.patients SET tags = tags + {{'t'}} WHERE id = 3",
    "UPDATE {ks}.patients SET weight = 99.0 WHERE id = 3",
    "DELETE FROM {ks}.patients WHERE id = 4",
    "DELETE name FROM {ks}.patients WHERE id = 5",
    "INSERT INTO {ks}.patients (id, name) VALUES (100, 'gone') USING TTL 1",
    "INSERT INTO {ks}.by_name (name, n, tags) VALUES ('Ana', 1, {{'x'}})",
    "INSERT INTO {ks}.by_name (name, n) VALUES ('Ben', 2)",
    "DELETE FROM {ks}.by_name WHERE name = 'Ben'",
    "INSERT INTO {ks}.by_time (at, n) VALUES ('2024-01-01 10:00:00+0000', 1)",
    "INSERT INTO {ks}.visits (patient, at, code, clinic) VALUES "
    "(1, '2024-01-01 10:00:00+0000', 'A01', 'North')",
]


def test_rows_read_at_once_are_the_rows_read_one_by_one(cassandra_clusters, cassandra_keyspace):
    """read_at_once (many rows per request) gives what operations gives for the events it
    serves, serves none it cannot vouch for (absent rows, clustering, statics, timestamp keys),
    and ImageBatches with it converges to SELECT."""
    import time

    from operators.image_batches import ImageBatches

    sess, ks = cassandra_keyspace(7)
    for ddl in AT_ONCE_SCHEMA:
        sess.execute(ddl.format(ks=ks))
    capture = CdcCapture(sess, ks, cassandra_clusters[7].cdc_raw_dirs[0])
    tables = ["patients", "visits", "by_name", "by_time"]

    def workload():
        for statement in AT_ONCE_WORKLOAD:
            sess.execute(statement.format(ks=ks))
        time.sleep(2)  # the TTL of row 100 runs out: absent when read

    captured = capture.run(workload, tables)
    registry = capture.registry()
    images = RowImages(RowReader(sess, consistency=ConsistencyLevel.ONE),
                       lambda e: registry.table(e.table_id))
    eligible = [e for e in captured.events if images.can_read_at_once(e)]
    assert {e.table for e in eligible} == {"patients", "by_name"}
    assert all(not images.can_read_at_once(e) for e in captured.events
               if e.table in ("visits", "by_time"))

    served = images.read_at_once(eligible, chunk=7)  # several requests per table
    for event, ops in zip(eligible, served, strict=True):
        one_by_one = images.operations(event)
        key = event.partition_key
        if ops is None:  # only rows that are gone
            assert [type(o) for o in one_by_one] == [RowDelete], (event.table, key)
            continue
        assert [(type(o), o.table, o.key, o.values) for o in ops] == \
            [(type(o), o.table, o.key, o.values) for o in one_by_one], (event.table, key)
        assert ops[0].version < one_by_one[0].version  # read earlier, versioned earlier
    gone = {tuple(e.partition_key.values()) for e, ops in zip(eligible, served, strict=True)
            if ops is None}
    assert gone == {(4,), (100,), ("Ben",)}

    # The whole batch through ImageBatches, then compared with SELECT.
    batch = ImageBatches(images.operations, concurrency=4,
                         can_read_at_once=images.can_read_at_once,
                         read_at_once=images.read_at_once)
    destination = Destination({"at": True})
    for _, operation in batch([("bucket", e) for e in captured.events]):
        destination.apply(operation)
    patients = {(("id", r.id),): {"name": r.name, "weight": r.weight, "tags": r.tags,
                                  "attrs": r.attrs}
                for r in sess.execute(f"SELECT * FROM {ks}.patients")}
    assert destination.live("patients") == patients and len(patients) == 29
    by_name = {(("name", r.name),): {"n": r.n, "tags": r.tags}
               for r in sess.execute(f"SELECT * FROM {ks}.by_name")}
    assert destination.live("by_name") == by_name == {(("name", "Ana"),): {"n": 1,
                                                                           "tags": {"x"}}}


def test_images_say_when_their_cells_or_liveness_expire_and_expired_rows_read_as_gone(
    cassandra_clusters, cassandra_keyspace
):
    """`expires` (microseconds) is the read's time plus the least TTL left, a second late; an
    INSERT's liveness TTL counts though no column shows it; an ExpiryDue read after the TTL ran
    out gives the delete (or what is left), versioned by that read."""
    import time

    from connectors.cassandra.expiry import ExpiryDue
    from operators.row_ops import EXPIRY

    sess, ks = cassandra_keyspace(7)
    for ddl in SCHEMA:
        sess.execute(ddl.format(ks=ks))
    capture = CdcCapture(sess, ks, cassandra_clusters[7].cdc_raw_dirs[0])
    statements = [
        "INSERT INTO {ks}.patients (id, name, weight) VALUES (1, 'Ana', 60.0) USING TTL 600",
        "INSERT INTO {ks}.patients (id, name, weight) VALUES (2, 'Ben', 70.0)",
        "UPDATE {ks}.patients USING TTL 300 SET name = 'B.' WHERE id = 2",
        "UPDATE {ks}.patients USING TTL 900 SET tags = tags + {{'t'}} WHERE id = 3",
        "INSERT INTO {ks}.patients (id) VALUES (4) USING TTL 120",  # liveness only
        "INSERT INTO {ks}.patients (id, name) VALUES (5, 'Cy')",
        "INSERT INTO {ks}.patients (id, name) VALUES (6, 'Di') USING TTL 1",
        "UPDATE {ks}.visits USING TTL 1 SET clinic = 'West' WHERE patient = 9",
        "UPDATE {ks}.visits USING TTL 600 SET clinic = 'East' WHERE patient = 8",
    ]
    written = []

    def write() -> None:
        written.append(time.time())
        for statement in statements:
            sess.execute(statement.format(ks=ks))
        written.append(time.time())

    captured = capture.run(write, ["patients", "visits"])
    registry = capture.registry()
    images = RowImages(RowReader(sess, consistency=ConsistencyLevel.ONE),
                       lambda e: registry.table(e.table_id))
    ops = {(o.table, tuple(o.key.values())): o
           for e in captured.events for o in images.operations(e)}

    def ends(table: str, key: tuple, ttl: int) -> bool:
        # When the row's first TTL runs out, by the clock of the writes: the read's time plus
        # the TTL left then (for cells) or the commit log's end (for the liveness), a second
        # late; whole seconds on Cassandra's side, however long after the write the read came.
        at = ops[(table, key)].expires / 1_000_000
        return written[0] + ttl - 1 <= at <= written[1] + ttl + 2

    assert ends("patients", (1,), 600)
    assert ends("patients", (2,), 300)  # the least TTL: the name's
    assert ends("patients", (3,), 900)  # a collection element's
    assert ends("patients", (4,), 120)  # the liveness (no column has a TTL)
    assert ops[("patients", (5,))].expires is None
    assert ops[("visits", (8,))].static and ends("visits", (8,), 600)

    time.sleep(2.5)  # 6 and the static clinic of 9 have run out
    patients, visits = (next(registry.table(e.table_id) for e in captured.events
                             if e.table == name) for name in ("patients", "visits"))
    gone = images.operations(ExpiryDue(patients.id, {"id": 6}, {"id": 6}, False, 0))
    assert [(type(o), o.key, o.source) for o in gone] == [(RowDelete, {"id": 6}, EXPIRY)]
    assert gone[0].version > ops[("patients", (6,))].version
    static = images.operations(ExpiryDue(visits.id, {"patient": 9}, {"patient": 9}, True, 0))
    assert [(type(o), o.static) for o in static] == [(RowDelete, True)]
    kept = images.operations(ExpiryDue(patients.id, {"id": 2}, {"id": 2}, False, 0))
    assert [(type(o), o.values["name"], o.values["weight"]) for o in kept] == [
        (RowUpsert, "B.", 70.0)]
    assert kept[0].expires is not None  # the name's TTL still runs: scheduled again


def _with_tombstone(event, marked_for_delete_at: int):
    """EVENT as if its tombstone were at MARKED_FOR_DELETE_AT: what a read from a replica that
    has not received that tombstone yet looks like to the pipeline."""
    from connectors.cassandra.events import ChangeEvent, Deletion

    deletion, cells = event.deletion, event.cells
    if deletion is not None:
        deletion = Deletion(marked_for_delete_at, deletion.local_deletion_time)
    else:  # a cell delete: the cells' tombstones
        cells = {name: cell._replace(timestamp=marked_for_delete_at)
                 for name, cell in cells.items()}
    return ChangeEvent(event.node, event.position, event.seq, event.keyspace, event.table,
                       event.table_id, event.kind, event.partition_key, event.clustering,
                       cells, event.liveness, deletion, event.is_static, event.range_start,
                       event.range_end, event.digest)


def test_rows_a_tombstone_covers_are_not_sent_back_from_a_replica_without_it(
    cassandra_clusters, cassandra_keyspace
):
    """Versions are read times, so an image from a replica that lacks the delete would win
    over the delete. A read showing rows (or cells) the tombstone covers does not reflect it:
    row deletes are retried, then sent as stale reads (write-time versions, which lose to the
    delete); range and partition deletes leave those rows out and keep the rest."""
    sess, ks = cassandra_keyspace(7)
    for ddl in SCHEMA:
        sess.execute(ddl.format(ks=ks))
    capture = CdcCapture(sess, ks, cassandra_clusters[7].cdc_raw_dirs[0])
    statements = [
        "INSERT INTO {ks}.visits (patient, at, code, clinic) VALUES "
        "(1, '2024-01-01 10:00:00+0000', 'A01', 'North') USING TIMESTAMP 1000",
        "INSERT INTO {ks}.visits (patient, at, code) VALUES "
        "(1, '2024-02-01 10:00:00+0000', 'B02') USING TIMESTAMP 1000",
        "DELETE FROM {ks}.visits USING TIMESTAMP 500 WHERE patient = 1 "
        "AND at >= '2024-01-15 00:00:00+0000'",
        "DELETE FROM {ks}.visits USING TIMESTAMP 500 WHERE patient = 1",
        "DELETE FROM {ks}.visits USING TIMESTAMP 500 WHERE patient = 1 "
        "AND at = '2024-01-01 10:00:00+0000'",
        "INSERT INTO {ks}.patients (id, name, weight) VALUES (1, 'Ana', 60.0) "
        "USING TIMESTAMP 1000",
        "DELETE FROM {ks}.patients USING TIMESTAMP 500 WHERE id = 1",
        "DELETE weight FROM {ks}.patients USING TIMESTAMP 500 WHERE id = 1",
    ]
    captured = capture.run(lambda: [sess.execute(s.format(ks=ks)) for s in statements],
                           ["patients", "visits"])
    registry = capture.registry()
    images = RowImages(RowReader(sess, consistency=ConsistencyLevel.ONE),
                       lambda e: registry.table(e.table_id), attempts=2, backoff_s=0.01)
    by_kind = {(e.table, e.kind.name, tuple(e.cells)): e for e in captured.events}
    range_delete = by_kind[("visits", "RANGE_DELETE", ())]
    partition_delete = by_kind[("visits", "PARTITION_DELETE", ())]
    row_delete = by_kind[("visits", "ROW_DELETE", ())]
    one_key_delete = by_kind[("patients", "PARTITION_DELETE", ())]  # no clustering: the row
    cell_delete = by_kind[("patients", "UPSERT", ("weight",))]

    def rows(ops):
        return sorted((type(o).__name__, getattr(o, "static", False),
                       dict(getattr(o, "key", {})).get("at")) for o in ops)

    # As captured (tombstones at 500, rows at 1000): every row survives, read back in.
    assert rows(images.operations(range_delete)) == [
        ("RangeDelete", False, None), ("RowUpsert", False, datetime(2024, 1, 1, 10)),
        ("RowUpsert", False, datetime(2024, 2, 1, 10))]
    # Tombstones at 2000, as a replica still without them shows those rows: the one in the
    # range (February) is left out, the one before it stays; a partition delete leaves out
    # every row and the static row.
    assert rows(images.operations(_with_tombstone(range_delete, 2000))) == [
        ("RangeDelete", False, None), ("RowUpsert", False, datetime(2024, 1, 1, 10))]
    assert rows(images.operations(_with_tombstone(partition_delete, 2000))) == [
        ("RangeDelete", False, None)]
    assert rows(images.operations(_with_tombstone(one_key_delete, 2000))) == [
        ("RangeDelete", False, None)]
    assert rows(images.operations(one_key_delete)) == [
        ("RangeDelete", False, None), ("RowUpsert", False, None)]
    # A row delete the read does not show: stale, the row as the delete leaves it (its only
    # regular cell covered: deleted, at the delete's time). A cell delete: stale, versioned by
    # write times.
    (stale,) = images.operations(_with_tombstone(row_delete, 2000))
    assert isinstance(stale, RowDelete) and stale.version == 2000
    (stale,) = images.operations(_with_tombstone(cell_delete, 2000))
    assert isinstance(stale, RowUpsert) and stale.version == 1000
    for event in (row_delete, cell_delete):
        (fresh,) = images.operations(event)
        assert fresh.version > 1_000_000_000_000_000  # reflected: a read time


def test_an_expiry_reread_after_a_column_was_dropped_reads_with_the_current_schema(
    cassandra_clusters, cassandra_keyspace, caplog
):
    """The row's prepared read names a column dropped since (Cassandra refuses it): the
    schema is read again and so is the row, as for changes; the re-read is not lost. Once the
    table is dropped, a re-read gives nothing, and a change goes to the dead letters whole."""
    from connectors.cassandra.expiry import ExpiryDue
    from connectors.cassandra.schema import SchemaRegistry

    sess, ks = cassandra_keyspace(7)
    sess.execute(SCHEMA[0].format(ks=ks))
    capture = CdcCapture(sess, ks, cassandra_clusters[7].cdc_raw_dirs[0])
    (change,) = capture.run(lambda: sess.execute(
        f"INSERT INTO {ks}.patients (id, name, weight) VALUES (1, 'Ana', 60.0)"),
        ["patients"]).events
    registry = SchemaRegistry.from_session(sess, [ks.strip('"')], min_refresh_interval=0.0)
    (patients,) = [t for t in registry.tables() if t.name == "patients"]
    images = RowImages(RowReader(sess, consistency=ConsistencyLevel.ONE),
                       lambda item: registry.table(item.table_id), refresh=registry.refresh,
                       exists=registry.exists)
    due = ExpiryDue(patients.id, {"id": 1}, {"id": 1}, False, 0)
    assert images.operations(due)[0].values["weight"] == 60.0  # prepared, with weight
    sess.execute(f"ALTER TABLE {ks}.patients DROP weight")
    (again,) = images.operations(due)
    assert isinstance(again, RowUpsert)
    assert again.values == {"name": "Ana", "tags": None, "attrs": None}
    # The table dropped since, as this process still knows it: nothing to re-read; counted,
    # and logged once for the table, not once per expiry.
    sess.execute(f"DROP TABLE {ks}.patients")
    label = {"table": ks.strip('"') + ".patients"}
    expiries = REGISTRY.get_sample_value("cdc_readback_dropped_table_expiries_total", label) or 0
    with caplog.at_level(logging.WARNING, logger="operators.readback"):
        assert images.operations(due) == []
        assert images.operations(due) == []
    assert REGISTRY.get_sample_value("cdc_readback_dropped_table_expiries_total",
                                     label) == expiries + 2
    (skipped,) = [r for r in caplog.records if "TTL expiries" in r.getMessage()]
    assert "patients" in skipped.getMessage() and "was dropped" in skipped.getMessage()
    caplog.clear()
    # A change of it cannot be read back either: it goes to the dead letters whole, counted,
    # logged once; not a failed batch (every restart failed on it again).
    before = REGISTRY.get_sample_value("cdc_readback_dropped_table_changes_total", label) or 0
    with caplog.at_level(logging.WARNING, logger="operators.readback"):
        (first,) = images.operations(change)
        (unreadable,) = images.operations(change)
    assert isinstance(first, UnreadableChange) and first.event is change
    assert REGISTRY.get_sample_value("cdc_readback_dropped_table_changes_total",
                                     label) == before + 2
    (warning,) = [r for r in caplog.records if "table is gone" in r.getMessage()]
    assert "patients" in warning.getMessage() and "was dropped" in warning.getMessage()
    assert "patients" in unreadable.reason and "was dropped" in unreadable.reason
    line = json.loads(to_line(unreadable))  # as the dead-letter file keeps it
    assert line["type"] == "UnreadableChange"
    assert line["event"]["position"] == {"segment_id": change.position.segment_id,
                                         "offset": change.position.offset}
    assert line["event"]["cells"]["weight"]["value"] == 60.0  # a Cell, by its fields


def test_a_keyless_expiry_of_a_table_never_known_is_counted_and_logged_once(caplog) -> None:
    """What the expiry source passes on for a table dropped before this process read the schema
    (connectors/cassandra/expiry.py): no operation, counted under the table's id, one warning."""
    import uuid

    from connectors.cassandra.expiry import ExpiryDue

    table_id = uuid.uuid4()
    images = RowImages(None, lambda _item: None)  # type: ignore[arg-type] - nothing is read
    label = {"table": str(table_id)}
    with caplog.at_level(logging.WARNING, logger="operators.readback"):
        assert images.operations(ExpiryDue(table_id, {}, {}, False, 0)) == []
        assert images.operations(ExpiryDue(table_id, {}, {}, True, 1)) == []
    assert REGISTRY.get_sample_value("cdc_readback_dropped_table_expiries_total", label) == 2
    (warning,) = [r for r in caplog.records if str(table_id) in r.getMessage()]
    assert "TTL expiries" in warning.getMessage()
    # Keyless, though this lookup knows the table (the source's did not): nothing to read.
    from tests.connectors.postgres.conftest import column, schemas

    (known,) = schemas([column("t", "k", "partition_key", "int", 0)]).values()
    knowing = RowImages(None, lambda _item: known)  # type: ignore[arg-type] - nothing is read
    label = {"table": str(known.id)}
    assert knowing.operations(ExpiryDue(known.id, {}, {}, False, 0)) == []
    assert REGISTRY.get_sample_value("cdc_readback_dropped_table_expiries_total", label) == 1


# --- what a read reflects (no server: events and images as the capture and the reader give) --

def _event(kind, cells=None, liveness=None, deletion=None):
    import uuid

    from connectors.cassandra.events import ChangeEvent, ChangeKind, Position

    return ChangeEvent("n1", Position(1, 1), 0, "ks", "t", uuid.uuid4(), ChangeKind[kind],
                       {"p": 1}, {"c": 1}, cells or {}, liveness, deletion, False, None, None,
                       b"")


def test_an_update_read_back_as_no_row_is_not_reflected() -> None:
    """An UPDATE has no liveness, but a value it writes (without a TTL) makes the row live: a
    read finding no row has missed it (retried, then stale), where it became a delete at the
    read's time. Writing only nulls, or values that expire, may leave no row: accepted."""
    from connectors.cassandra.events import Cell, CellElement, ComplexCell
    from operators.readback import _reflects

    regular = {"v", "w"}
    assert not _reflects(_event("UPSERT", {"v": Cell(5, 300)}), None, regular)
    assert not _reflects(_event("UPSERT", {"v": ComplexCell(None, (
        CellElement("x", None, 300),))}), None, regular)
    assert _reflects(_event("UPSERT", {"v": Cell(None, 300, deleted=True)}), None, regular)
    assert _reflects(_event("UPSERT", {"v": Cell(5, 300, ttl=60)}), None, regular)


def test_a_row_delete_is_reflected_only_by_a_read_without_the_cells_it_covers() -> None:
    """A replica with a row tombstone at T shows no regular cell written at or before T. One
    such cell (not all of them) says the replica lacks it; static cells are the partition's
    and say nothing."""
    from connectors.cassandra.events import Deletion
    from connectors.cassandra.images import Image
    from operators.readback import _after_tombstone, _reflects

    regular = {"a", "b"}
    delete = _event("ROW_DELETE", deletion=Deletion(2000, 0))
    mixed = Image({"p": 1, "c": 1}, {"a": "old", "b": "new", "s": "x"},
                  {"a": 1000, "b": 3000, "s": 3000})
    assert not _reflects(delete, mixed, regular)
    assert not _reflects(delete, Image({}, {"a": "old", "s": "x"}, {"a": 1000, "s": 3000}),
                         regular)
    assert _reflects(delete, Image({}, {"b": "new", "s": "x"}, {"b": 3000, "s": 1000}),
                     regular)
    # The row as the tombstone leaves it: the covered cell gone, the later one and the
    # static one as read; nothing regular left: no row.
    after = _after_tombstone(mixed, regular, 2000)
    assert (after.values, after.write_times) == ({"a": None, "b": "new", "s": "x"},
                                                 {"b": 3000, "s": 3000})
    assert _after_tombstone(Image({}, {"a": 1, "s": 2}, {"a": 1000, "s": 3000}),
                            regular, 2000) is None
    assert _after_tombstone(mixed, regular, 500) is mixed
