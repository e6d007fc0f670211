"""DROP TABLE while the pipeline runs (docs/schema-evolution.md, "DROP TABLE"), on the real stack.

The pipeline has already written the table (its schema is known), then a burst of inserts and a
delete are written and the table is dropped at once, before the pipeline can read those rows
back. The pipeline must go on (another table's later rows arrive) and nothing of the burst may
vanish: every change is either applied in PostgreSQL (read back before the drop) or kept whole
in the dead-letter files.
"""

from __future__ import annotations

import json
import uuid

import psycopg
from cassandra.concurrent import execute_concurrent_with_args
from psycopg import sql

from dataflows.flow import build
from dataflows.runtime import Runtime
from tests.dataflows.pipeline_files import (
    captured_table,
    follow_until_stopped,
    postgres_destination,
    run_in_thread,
    wait_durable,
)
from tests.waiting import wait_for

NONE = {"class": "none", "reason": "test data, no personal data"}
BURST = 200


def _rows(postgres_schema: str, view: str) -> dict[int, str]:
    from devstack import postgres

    with postgres.connect(role="admin") as conn:
        return dict(conn.execute(sql.SQL("SELECT id, v FROM {}").format(
            sql.Identifier(postgres_schema, view))).fetchall())


def _wait_for(what: str, check, failures: list, timeout: float = 60.0) -> None:
    """Until CHECK() holds, the pipeline not having failed meanwhile."""

    def holds() -> bool:
        assert not failures, failures
        try:
            return check()
        except psycopg.errors.UndefinedTable:  # its view is made with the first row
            return False

    wait_for(holds, what, timeout)


def test_a_table_dropped_while_running_goes_to_the_dead_letters_and_the_flow_goes_on(
    tmp_path, monkeypatch, cassandra_clusters, cassandra_keyspace, postgres_schema, openbao_env
):
    table = captured_table(
        cassandra_keyspace, cassandra_clusters,
        "CREATE TABLE {ks}.doomed (id int PRIMARY KEY, v text) WITH cdc = true")
    sess, ks, bare = table.session, table.keyspace, table.bare
    sess.execute(f"CREATE TABLE {ks}.kept (id int PRIMARY KEY, v text) WITH cdc = true")
    store, start = table.store, table.start
    settings = table.settings(
        tmp_path, openbao_env, {t: {"id": NONE, "v": NONE} for t in ("doomed", "kept")},
        [postgres_destination(postgres_schema, openbao_env["BAO_CACERT"])])
    stop = follow_until_stopped(monkeypatch)
    dataflow = build(settings, runtime=Runtime(settings))
    pipeline, failures = run_in_thread(dataflow)
    try:
        # The pipeline knows the table: its first row has arrived.
        sess.execute(f"INSERT INTO {ks}.doomed (id, v) VALUES (0, 'first')")
        _wait_for("the first row in PostgreSQL",
                  lambda: _rows(postgres_schema, f"{bare}__doomed__current") == {0: "first"},
                  failures)
        # The burst (all at once), and the drop right after it: the commit log is synced once
        # a second, so the pipeline reads these back after the table is gone.
        insert = sess.prepare(f"INSERT INTO {ks}.doomed (id, v) VALUES (?, ?)")
        execute_concurrent_with_args(sess, insert, [(i, f"row {i}") for i in range(1, BURST + 1)],
                                     concurrency=100, raise_on_first_error=True)
        sess.execute(f"DELETE FROM {ks}.doomed WHERE id = 0")
        sess.execute(f"DROP TABLE {ks}.doomed")
        # The flow goes on: another table's rows, written after the drop, arrive.
        for i in range(10):
            sess.execute(f"INSERT INTO {ks}.kept (id, v) VALUES (%s, %s)", (i, f"kept {i}"))
        marker = uuid.uuid4().hex
        sess.execute(f"INSERT INTO {ks}.kept (id, v) VALUES (-1, %s)", (marker,))
        wait_durable(store, start, marker.encode())
        _wait_for("the rows written after the drop in PostgreSQL",
                  lambda: len(_rows(postgres_schema, f"{bare}__kept__current")) == 11,
                  failures)
    finally:
        stop.set()
        pipeline.join(60)
    assert not pipeline.is_alive(), "the pipeline did not finish after the stop"
    assert not failures, failures

    applied = _rows(postgres_schema, f"{bare}__doomed__current")
    dead = [json.loads(line) for path in (tmp_path / "dead-letter").glob("*.jsonl")
            for line in path.read_text().splitlines()]
    assert dead, "no dead letters: the drop came after the pipeline had read the burst back?"
    assert {d["type"] for d in dead} == {"UnreadableChange"}
    assert all(d["event"]["table"] == "doomed" and "was dropped" in d["reason"] for d in dead)
    dead_inserts = {d["event"]["partition_key"]["id"] for d in dead
                    if d["event"]["kind"] == "upsert"}
    # (A DELETE by the whole primary key of a table without clustering deletes the partition.)
    dead_deletes = {d["event"]["partition_key"]["id"] for d in dead
                    if d["event"]["kind"] in ("row_delete", "partition_delete")}
    # Every change of the burst is in one place or the other: applied, or a dead letter.
    for i in range(1, BURST + 1):
        assert applied.get(i) == f"row {i}" or i in dead_inserts, f"row {i} vanished"
    assert 0 not in applied or 0 in dead_deletes, "the delete of row 0 vanished"
