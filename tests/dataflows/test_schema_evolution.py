"""Live schema evolution on the real stack (docs/schema-evolution.md): the pipeline runs while a
writer keeps writing, and mid-run a column is added (and written), a column is dropped, and a
table created with cdc = false gets rows, is switched to cdc = true and gets more.

Oracle: after the run, each destination's current rows (PostgreSQL and ClickHouse "__current"
views) equal Cassandra's SELECT of the current columns passed through the same masking, row
for row: nothing written before, during or after an ALTER is lost. The destination tables were
altered in place (the added column is there with its masked type; the dropped column is kept
in the rows table and gone from the views).
"""

from __future__ import annotations

import threading
import time
import uuid

from psycopg import sql

from dataflows.flow import build
from dataflows.runtime import Runtime
from tests.dataflows.pipeline_files import (
    captured_table,
    clickhouse_destination,
    follow_until_stopped,
    oracle_masker,
    postgres_destination,
    run_in_thread,
    wait_durable,
)

NONE = {"class": "none", "reason": "test data, no personal data"}
RULES = {
    "visits": {"id": NONE, "note": NONE, "weight": NONE, "marker": NONE,
               "ssn": {"class": "ssn", "strategy": "hmac"}},
    "late": {"id": NONE, "v": NONE},
}


class _Writer(threading.Thread):
    """Keeps inserting and updating visits; which columns it writes follows the ALTERs."""

    def __init__(self, sess, ks: str) -> None:
        super().__init__(daemon=True)
        self.sess, self.ks = sess, ks
        self.with_ssn = False
        self.with_weight = True
        self.done = threading.Event()
        self.errors: list[BaseException] = []
        self.count = 0

    def run(self) -> None:
        i = 0
        while not self.done.is_set():
            try:
                columns = ["id", "note"] + ["weight"] * self.with_weight + ["ssn"] * self.with_ssn
                values = [i, f"note {i}"] + [50.0 + i] * self.with_weight + \
                    [100_000 + i] * self.with_ssn
                self.sess.execute(
                    f"INSERT INTO {self.ks}.visits ({', '.join(columns)}) "
                    f"VALUES ({', '.join(['%s'] * len(columns))})", values)
                if i % 3 == 2:
                    self.sess.execute(f"UPDATE {self.ks}.visits SET note = %s WHERE id = %s",
                                      (f"updated {i}", i - 2))
                if i % 7 == 6 and self.with_ssn:
                    self.sess.execute(f"UPDATE {self.ks}.visits SET ssn = %s WHERE id = %s",
                                      (7, i - 5))
            except Exception as error:  # noqa: BLE001 - reported by the test
                self.errors.append(error)
                return
            i += 1
            self.count = i
            time.sleep(0.01)


def test_live_add_drop_and_cdc_switch(tmp_path, monkeypatch, cassandra_clusters,
                                      cassandra_keyspace, postgres_schema, openbao_env):
    started = time.monotonic()
    table = captured_table(
        cassandra_keyspace, cassandra_clusters,
        "CREATE TABLE {ks}.visits (id int PRIMARY KEY, note text, weight double, "
        "marker text) WITH cdc = true")
    sess, ks, bare = table.session, table.keyspace, table.bare
    store, start = table.store, table.start

    settings = table.settings(
        tmp_path, openbao_env, RULES,
        [postgres_destination(postgres_schema, openbao_env["BAO_CACERT"]),
         clickhouse_destination(openbao_env["BAO_CACERT"])])

    # The pipeline follows the commit log until the test says stop; then each partition ends
    # once it has read everything durable.
    stop = follow_until_stopped(monkeypatch)
    runtime = Runtime(settings)
    dataflow = build(settings, runtime=runtime)
    writer = _Writer(sess, ks)
    pipeline, failures = run_in_thread(dataflow)
    writer.start()
    try:
        time.sleep(2.0)
        # ADD: written right away by the writer, and by an UPDATE of older rows.
        sess.execute(f"ALTER TABLE {ks}.visits ADD ssn bigint")
        writer.with_ssn = True
        sess.execute(f"UPDATE {ks}.visits SET ssn = 42 WHERE id = 0")
        time.sleep(2.0)
        # DROP: the writer stops naming the column first (its writes would be refused).
        writer.with_weight = False
        sess.execute(f"ALTER TABLE {ks}.visits DROP weight")
        time.sleep(1.0)
        # A new table, written while cdc is off, then switched on and written again.
        sess.execute(f"CREATE TABLE {ks}.late (id int PRIMARY KEY, v text) WITH cdc = false")
        for i in range(20):
            sess.execute(f"INSERT INTO {ks}.late (id, v) VALUES (%s, %s)", (i, f"before {i}"))
        time.sleep(1.0)
        sess.execute(f"ALTER TABLE {ks}.late WITH cdc = true")
        for i in range(20, 40):
            sess.execute(f"INSERT INTO {ks}.late (id, v) VALUES (%s, %s)", (i, f"after {i}"))
        sess.execute(f"UPDATE {ks}.late SET v = 'changed' WHERE id = 3")
        sess.execute(f"DELETE FROM {ks}.late WHERE id = 5")
        time.sleep(1.0)
        writer.done.set()
        writer.join(10)  # the marker comes after the writer's last write
        marker = uuid.uuid4().hex
        sess.execute(f"INSERT INTO {ks}.visits (id, marker) VALUES (-1, %s)", (marker,))
        wait_durable(store, start, marker.encode())
    finally:
        writer.done.set()
        writer.join(10)
        # Also on a failure: a flow left running would go on consuming (and deleting)
        # the shared node's cdc_raw under the next tests.
        stop.set()
        pipeline.join(60)
    assert not pipeline.is_alive(), "the pipeline did not finish after the stop"
    assert not failures, failures
    assert not writer.errors, writer.errors
    assert writer.count > 100

    from clickhouse_connect.driver.binding import quote_identifier

    from devstack import clickhouse, postgres

    client = clickhouse.connect("admin")
    masker = oracle_masker(settings)
    try:
        for table, columns in (("visits", ["id", "note", "ssn", "marker"]),
                               ("late", ["id", "v"])):
            rows = [{c: getattr(r, c) for c in columns}
                    for r in sess.execute(f"SELECT * FROM {ks}.{table}")]
            expected = sorted((tuple(r[c] for c in columns)
                               for r in masker.mask_rows(bare, table, rows)), key=repr)
            view = f"{bare}__{table}__current"
            with postgres.connect(role="admin") as conn:
                found = conn.execute(sql.SQL("SELECT {} FROM {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, columns)),
                    sql.Identifier(postgres_schema, view))).fetchall()
            assert sorted(found, key=repr) == expected, f"PostgreSQL {table}"
            in_clickhouse = client.query(
                f"SELECT {', '.join(map(quote_identifier, columns))} "
                f"FROM cdc.{quote_identifier(view)}").result_rows
            assert sorted(map(tuple, in_clickhouse), key=repr) == expected, f"ClickHouse {table}"
        assert len(expected) == 39  # late: 40 written, one deleted

        # Altered in place: ssn added with its masked type (hmac: text); weight kept in the
        # rows table (values as of the drop), gone from the views.
        with postgres.connect(role="admin") as conn:
            def pg_columns(name: str) -> dict[str, str]:
                return dict(conn.execute(
                    "SELECT column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = %s AND table_name = %s",
                    (postgres_schema, name)).fetchall())

            assert pg_columns(f"{bare}__visits")["ssn"] == "text"
            assert "weight" in pg_columns(f"{bare}__visits")
            assert "weight" not in pg_columns(f"{bare}__visits__current")
            assert "ssn" in pg_columns(f"{bare}__visits__current")

        def ch_columns(name: str) -> dict[str, str]:
            return dict(client.query(
                "SELECT name, type FROM system.columns WHERE database = 'cdc' AND table = "
                "%(t)s", parameters={"t": name}).result_rows)

        assert ch_columns(f"{bare}__visits")["ssn"] == "Nullable(String)"
        assert "weight" in ch_columns(f"{bare}__visits")
        assert "weight" not in ch_columns(f"{bare}__visits__current")
    finally:
        for suffix in ("__visits__current", "__visits", "__late__current", "__late"):
            client.command(f"DROP TABLE IF EXISTS cdc.{quote_identifier(bare + suffix)}")
        client.close()
    dead = list((tmp_path / "dead-letter").glob("*.jsonl"))
    assert all(p.stat().st_size == 0 for p in dead), "changes went to the dead-letter files"
    assert time.monotonic() - started < 120
