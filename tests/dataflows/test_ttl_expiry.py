"""TTL expiry end to end: rows and cells whose TTL runs out leave every destination, also when
the pipeline is SIGKILLed between the writes and their expiry (the schedule lives in Cassandra,
the source's cursor in Bytewax's recovery store)."""

from __future__ import annotations

import time

import pytest

from connectors.cassandra.expiry import schema_statements
from tests.dataflows.kill_harness import (
    TABLE_DDL,
    Pipeline,
    clickhouse_rows,
    converge,
    destination_rows,
    difference,
    drop_clickhouse_tables,
)
from tests.dataflows.pipeline_files import (
    captured_table,
    cassandra_section,
    clickhouse_destination,
    postgres_destination,
)

TTL = 15  # seconds: long enough for every row to arrive first


@pytest.mark.slow
def test_expired_rows_and_cells_leave_every_destination_across_a_sigkill(
    tmp_path, cassandra_clusters, cassandra_keyspace, postgres_schema, openbao_env
):
    table = captured_table(cassandra_keyspace, cassandra_clusters, TABLE_DDL)
    sess, ks, bare, info = table.session, table.keyspace, table.bare, table.info
    schedule, schedule_ks = cassandra_keyspace(7)
    for statement in schema_statements(schedule_ks.strip('"'), "{'class': 'SimpleStrategy', "
                                       "'replication_factor': 1}"):
        schedule.execute(statement)
    cassandra = cassandra_section(info, bare, table.node(), openbao_env["BAO_CACERT"])
    cassandra["ttl_expiry"] = {"keyspace": schedule_ks.strip('"'), "buckets": 2,
                               "poll_seconds": 1, "grace_seconds": 1}
    ca = openbao_env["BAO_CACERT"]
    pipeline = Pipeline(tmp_path, bare, {
        "cassandra": cassandra, "batching": {"max_records": 100},
        "destinations": [postgres_destination(postgres_schema, ca), clickhouse_destination(ca)],
    }, openbao_env)
    readers = {"postgres": ("patients", lambda: destination_rows(postgres_schema, bare)),
               "clickhouse": ("patients", lambda: clickhouse_rows(bare))}
    insert = sess.prepare(f"INSERT INTO {ks}.patients (id, first_name, email, visits) "
                          "VALUES (?, ?, ?, ?)")
    expiring = sess.prepare(f"INSERT INTO {ks}.patients (id, first_name, email, visits) "
                            f"VALUES (?, ?, ?, ?) USING TTL {TTL}")
    try:
        pipeline.start(1)
        for i in range(20):
            sess.execute(expiring, (i, f"Gone{i}", f"g{i}@example.org", i))  # whole rows
            sess.execute(insert, (100 + i, f"Stay{i}", f"s{i}@example.org", i))
        for i in range(10):  # one cell of a permanent row
            sess.execute(f"UPDATE {ks}.patients USING TTL {TTL} SET email = %s WHERE id = %s",
                         (f"temp{i}@example.org", 100 + i))
        for i in range(5):  # liveness only: no column shows the TTL
            sess.execute(f"INSERT INTO {ks}.patients (id) VALUES (%s) USING TTL {TTL}",
                         (200 + i,))
        written = time.monotonic()
        deadline = written + TTL - 3
        while len(destination_rows(postgres_schema, bare)) < 45:
            assert time.monotonic() < deadline, "the rows did not arrive before their TTL"
            time.sleep(0.5)
        arrived = len(destination_rows(postgres_schema, bare))
        # Past a snapshot (-s 1) of those batches, so the restart does not replay their
        # changes (whose reads, after the TTL, would delete the rows without the schedule).
        time.sleep(2.5)
        pipeline.kill()  # entries are scheduled; nothing has expired yet
        pipeline.start(1)
        time.sleep(max(0.0, written + TTL - time.monotonic()))
        expected, found = converge(sess, ks, bare, pipeline.masker(), readers, timeout=60)
        written_by = _sources(postgres_schema, bare)
    finally:
        pipeline.close()
        drop_clickhouse_tables(bare)

    assert arrived == 45  # 20 expiring rows, 20 permanent ones, 5 liveness-only rows
    rows = expected["patients"]
    assert len(rows) == 20  # only the permanent rows are left in Cassandra...
    assert sum(1 for row in rows if row[2] is None) == 10  # ...10 of them without email
    for name, found_rows in found.items():
        problem = difference(rows, found_rows, str(pipeline.log_path))
        assert problem is None, f"{name}: {problem}"
    assert len(pipeline.resume_epochs()) == 2
    # They left through the schedule: their last writes came from the expiry source.
    for i in [*range(20), *range(200, 205)]:
        assert written_by[i] == ("ttl-expiry", True), (i, written_by[i])
    for i in range(100, 110):
        assert written_by[i] == ("ttl-expiry", False), (i, written_by[i])
    assert {written_by[i][0] for i in range(110, 120)} == {"c7-node1"}


def _sources(schema: str, keyspace: str) -> dict[int, tuple[str, bool]]:
    """Per id: (the node whose change last wrote the row, deleted) from the rows table."""
    from psycopg import sql

    from devstack import postgres

    with postgres.connect(role="admin") as conn:
        return {i: (node, deleted) for i, node, deleted in conn.execute(sql.SQL(
            "SELECT id, _cdc_source_node, _cdc_deleted FROM {}").format(
            sql.Identifier(schema, f"{keyspace}__patients")))}
