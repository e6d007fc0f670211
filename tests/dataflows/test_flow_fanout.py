"""The whole flow on the real stack: Cassandra's commit log -> PostgreSQL and ClickHouse, masked,
exact, fanned out in one flow.

Oracle: after the workload, each destination's current rows equal Cassandra's SELECT passed
through the same masking, row for row.
"""

from __future__ import annotations

import json
import uuid

from bytewax.testing import run_main
from psycopg import sql

from dataflows.config import parse
from dataflows.flow import build
from dataflows.runtime import Runtime
from tests.dataflows.kill_harness import drop_clickhouse_tables
from tests.dataflows.pipeline_files import (
    captured_table,
    cassandra_section,
    clickhouse_destination,
    masking_policy,
    oracle_masker,
    postgres_destination,
    timescale_destination,
    wait_durable,
)

WAIT = 45.0

COLUMN_RULES = {
    "id": {"class": "none", "reason": "surrogate key, no personal data"},
    "first_name": {"class": "first_name", "strategy": "tokenize"},
    "email": {"class": "email", "strategy": "hmac"},
    "diagnosis": {"class": "diagnosis", "strategy": "redact"},
    "marker": {"class": "none", "reason": "test sentinel"},
}

def test_commit_log_to_postgres_masked_and_exact(
    tmp_path, cassandra_clusters, cassandra_keyspace, postgres_schema, openbao_env
):
    table = captured_table(
        cassandra_keyspace, cassandra_clusters,
        "CREATE TABLE {ks}.patients (id int PRIMARY KEY, first_name text, email text, "
        "diagnosis text, weight double, marker text) WITH cdc = true")
    sess, ks, bare = table.session, table.keyspace, table.bare
    store, start = table.store, table.start

    insert = sess.prepare(f"INSERT INTO {ks}.patients (id, first_name, email, diagnosis, weight) "
                          "VALUES (?, ?, ?, ?, ?)")
    for i in range(40):
        sess.execute(insert, (i, f"Name{i}", f"p{i}@example.org", f"D{i % 7}", 50.0 + i))
    sess.execute(f"UPDATE {ks}.patients SET weight = 99.5 WHERE id = 3")
    sess.execute(f"UPDATE {ks}.patients SET email = null WHERE id = 4")
    sess.execute(f"DELETE FROM {ks}.patients WHERE id = 5")
    sess.execute(f"DELETE first_name FROM {ks}.patients WHERE id = 6")
    marker = uuid.uuid4().hex
    sess.execute(f"INSERT INTO {ks}.patients (id, marker) VALUES (1000, %s)", (marker,))
    wait_durable(store, start, marker.encode())

    settings = table.settings(
        tmp_path, openbao_env, {"patients": COLUMN_RULES},
        [postgres_destination(postgres_schema, openbao_env["BAO_CACERT"]),
         clickhouse_destination(openbao_env["BAO_CACERT"])])
    runtime = Runtime(settings)
    run_main(build(settings, runtime=runtime, until_caught_up=True))

    # Cassandra's state, through the same masking.
    columns = ["id", "first_name", "email", "diagnosis", "weight", "marker"]
    cassandra_rows = [{c: getattr(r, c) for c in columns}
                      for r in sess.execute(f"SELECT * FROM {ks}.patients")]
    masker = oracle_masker(settings)
    expected = sorted((tuple(r[c] for c in columns)
                       for r in masker.mask_rows(bare, "patients", cassandra_rows)), key=repr)
    from devstack import postgres

    with postgres.connect(role="admin") as conn:
        found = conn.execute(sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.Identifier(postgres_schema, f"{bare}__patients__current"))).fetchall()
    assert sorted(found, key=repr) == expected
    assert len(found) == 40  # 40 written, 5 deleted, the marker row
    by_id = {row[0]: row for row in found}
    assert 5 not in by_id and by_id[3][4] == 99.5 and by_id[4][2] is None
    assert by_id[6][1] is None and by_id[7][3] is None  # deleted cell; redacted diagnosis
    assert by_id[7][1] != "Name7" and by_id[7][1].startswith("vault:")  # tokenized
    assert len(by_id[7][2]) == 64  # HMAC-SHA256 hex
    # The same rows in ClickHouse (timestamps aside, types keep their values).
    from clickhouse_connect.driver.binding import quote_identifier

    from devstack import clickhouse

    client = clickhouse.connect("admin")
    try:
        in_clickhouse = client.query(
            f"SELECT {', '.join(map(quote_identifier, columns))} "
            f"FROM cdc.{quote_identifier(bare + '__patients__current')}").result_rows
        assert sorted(map(tuple, in_clickhouse), key=repr) == expected
    finally:
        for suffix in ("__patients__current", "__patients"):
            client.command(f"DROP TABLE IF EXISTS cdc.{quote_identifier(bare + suffix)}")
        client.close()
    assert not list((tmp_path / "dead-letter").glob("*.jsonl")) or all(
        p.stat().st_size == 0 for p in (tmp_path / "dead-letter").glob("*.jsonl"))


VISIT_RULES = {
    "patient": {"class": "none", "reason": "surrogate key, no personal data"},
    "at": {"class": "none", "reason": "visit time, no personal data"},
    "diagnosis": {"class": "diagnosis", "strategy": "hmac"},
}


def test_each_destination_receives_its_tables(
    tmp_path, cassandra_clusters, cassandra_keyspace, postgres_schema, timescale_schema,
    openbao_env
):
    """pipeline.cassandra.tables limits the capture; a destination's `tables` limits what it
    receives; TimescaleDB receives the tables with a time column. A mutation (logged batch)
    spanning the three tables is split between the destinations, nothing lost."""
    from datetime import UTC, datetime, timedelta

    table = captured_table(
        cassandra_keyspace, cassandra_clusters,
        "CREATE TABLE {ks}.patients (id int PRIMARY KEY, first_name text, email text) "
        "WITH cdc = true")
    sess, ks, bare, info = table.session, table.keyspace, table.bare, table.info
    store, start = table.store, table.start
    sess.execute(f"CREATE TABLE {ks}.visits (patient int, at timestamp, diagnosis text, "
                 "PRIMARY KEY (patient, at)) WITH cdc = true")
    sess.execute(f"CREATE TABLE {ks}.scratch (id int PRIMARY KEY, note text) WITH cdc = true")
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(12):
        sess.execute(f"BEGIN BATCH "
                     f"INSERT INTO {ks}.patients (id, first_name, email) VALUES (%s, %s, %s); "
                     f"INSERT INTO {ks}.visits (patient, at, diagnosis) VALUES (%s, %s, %s); "
                     f"INSERT INTO {ks}.scratch (id, note) VALUES (%s, 'x'); APPLY BATCH",
                     (i, f"Name{i}", f"p{i}@example.org", i % 4, t0 + timedelta(hours=i),
                      f"D{i}", i))
    sess.execute(f"DELETE FROM {ks}.visits WHERE patient = 1 AND at = %s",
                 (t0 + timedelta(hours=1),))
    sess.execute(f"DELETE FROM {ks}.visits WHERE patient = 2")
    marker = uuid.uuid4().hex
    sess.execute(f"INSERT INTO {ks}.scratch (id, note) VALUES (1000, %s)", (marker,))
    wait_durable(store, start, marker.encode())

    policy_file = tmp_path / "masking.json"
    policy_file.write_text(json.dumps(masking_policy(bare, {
        "patients": {**{c: COLUMN_RULES[c] for c in ("id", "first_name", "email")}},
        "visits": VISIT_RULES})))
    ca = openbao_env["BAO_CACERT"]
    settings = parse({
        "cassandra": {**cassandra_section(
            info, bare, {"name": "c7-node1", "cdc_raw": str(store.directory)}, ca),
            "tables": [f"{bare}.patients", f"{bare}.visits"]},
        "masking_policy": str(policy_file),
        "dead_letter_dir": str(tmp_path / "dead-letter"),
        "destinations": [
            postgres_destination(postgres_schema, ca),
            {**clickhouse_destination(ca), "tables": [f"{bare}.patients"]},
            timescale_destination(timescale_schema, ca, {f"{bare}.visits": "at"})],
    })
    runtime = Runtime(settings)
    try:
        run_main(build(settings, runtime=runtime, until_caught_up=True,
                       initial={"c7-node1": start}))
        expected = {name: _masked_rows(sess, ks, bare, name, columns, oracle_masker(settings))
                    for name, columns in (("patients", ["id", "first_name", "email"]),
                                          ("visits", ["patient", "at", "diagnosis"]))}
        assert len(expected["patients"]) == 12 and len(expected["visits"]) == 8
        assert _postgres_tables(postgres_schema) == {f"{bare}__patients", f"{bare}__visits"}
        assert _postgres_tables(timescale_schema) == {f"{bare}__visits"}
        assert _clickhouse_tables(bare) == {f"{bare}__patients"}
        for schema, name in ((postgres_schema, "patients"), (postgres_schema, "visits"),
                             (timescale_schema, "visits")):
            columns = ["id", "first_name", "email"] if name == "patients" else \
                ["patient", "at", "diagnosis"]
            assert _postgres_current(schema, bare, name, columns) == expected[name], \
                (schema, name)
        from clickhouse_connect.driver.binding import quote_identifier

        from devstack import clickhouse

        client = clickhouse.connect("admin")
        try:
            in_clickhouse = client.query(
                "SELECT id, first_name, email "
                f"FROM cdc.{quote_identifier(bare + '__patients__current')}").result_rows
        finally:
            client.close()
        assert sorted(map(tuple, in_clickhouse), key=repr) == expected["patients"]
    finally:
        drop_clickhouse_tables(bare)
    assert all(p.stat().st_size == 0 for p in (tmp_path / "dead-letter").glob("*.jsonl"))


def _masked_rows(sess, ks: str, bare: str, table: str, columns: list[str], masker) -> list:
    rows = [{c: getattr(r, c) for c in columns}
            for r in sess.execute(f"SELECT * FROM {ks}.{table}")]
    if "at" in columns:  # the driver's timestamps are naive UTC; PostgreSQL's are aware
        from datetime import UTC

        rows = [{**r, "at": r["at"].replace(tzinfo=UTC)} for r in rows]
    return sorted((tuple(r[c] for c in columns) for r in masker.mask_rows(bare, table, rows)),
                  key=repr)


def _postgres_tables(schema: str) -> set[str]:
    """The rows tables the sink created in SCHEMA (views and bookkeeping left out)."""
    from devstack import postgres

    with postgres.connect(role="admin") as conn:
        return {name for (name,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND table_type = 'BASE TABLE'", (schema,)) if "__" in name}


def _postgres_current(schema: str, bare: str, table: str, columns: list[str]) -> list:
    from devstack import postgres

    with postgres.connect(role="admin") as conn:
        return sorted(conn.execute(sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.Identifier(schema, f"{bare}__{table}__current"))).fetchall(), key=repr)


def _clickhouse_tables(bare: str) -> set[str]:
    from devstack import clickhouse

    client = clickhouse.connect("admin")
    try:
        return {name for (name, engine) in client.query(
            "SELECT name, engine FROM system.tables WHERE database = 'cdc'").result_rows
            if name.startswith(bare + "__") and engine != "View"}
    finally:
        client.close()
