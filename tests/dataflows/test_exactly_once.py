"""Exactly-once effects under SIGKILL: the pipeline is killed at random moments, again and again,
while a workload runs; restarted from Bytewax's recovery store (sometimes with another worker
count), it must leave PostgreSQL, ClickHouse and TimescaleDB equal to Cassandra through the same
masking: no row missing, extra or stale (tests/dataflows/kill_harness.py). Two tables: patients
(to PostgreSQL and ClickHouse) and visits, time-series rows with row and partition deletes (to
all three; TimescaleDB on CI's plain PostgreSQL, see docs/adr/0001-local-stack.md). Runs alternate
between 1 worker, 2 worker threads and 2 processes.

The pipeline deletes consumed cdc_raw segments as it goes (docs/adr/0004): a restart that
resumed into a deleted segment would fail (SegmentVanishedError) or lose its changes.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.dataflows.kill_harness import (
    TABLE_DDL,
    VISITS_DDL,
    Pipeline,
    Workload,
    converge,
    difference,
    drop_clickhouse_tables,
    every_destination,
)
from tests.dataflows.pipeline_files import (
    captured_table,
    cassandra_section,
    clickhouse_destination,
    postgres_destination,
    timescale_destination,
)

KILLS = 6
CONVERGE = 180.0  # seconds for PostgreSQL to catch up after the last restart


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    tmp_path, cassandra_clusters, cassandra_keyspace, postgres_schema, timescale_schema,
    openbao_env
):
    rng = random.Random(20261126)
    table = captured_table(cassandra_keyspace, cassandra_clusters, TABLE_DDL)
    sess, ks, bare, info = table.session, table.keyspace, table.bare, table.info
    store, start, node = table.store, table.start, table.node()
    sess.execute(VISITS_DDL.format(ks=ks))
    ca = openbao_env["BAO_CACERT"]
    pipeline = Pipeline(tmp_path, bare, {
        "cassandra": cassandra_section(info, bare, node, ca),
        "batching": {"max_records": 100},
        "destinations": [postgres_destination(postgres_schema, ca), clickhouse_destination(ca),
                         timescale_destination(timescale_schema, ca, {f"{bare}.visits": "at"})],
    }, openbao_env)

    workload = Workload(sess, ks, visits=True)
    readers = every_destination(postgres_schema, timescale_schema, bare)
    pipeline.start(1)
    workload.start()
    kills = 0
    try:
        for kill in range(KILLS):
            # Long enough for a run to start, resume and commit a few epochs (-s 1), short
            # enough to land in the middle of batches, sink writes included.
            time.sleep(rng.uniform(4.0, 9.0))
            pipeline.kill()
            kills += 1
            # The worker count changes across restarts: 2 threads, 1, 2 processes, 1, ...
            if kill % 4 == 2:
                pipeline.start(processes=2)
            else:
                pipeline.start(2 if kill % 2 == 0 else 1)
        workload.stop()
        expected, found = converge(sess, ks, bare, pipeline.masker(), readers,
                                   timeout=CONVERGE)
    finally:
        workload.stop()
        pipeline.close()
        drop_clickhouse_tables(bare)

    assert kills == KILLS
    assert expected["patients"] and expected["visits"], "the workload left rows in Cassandra"
    # The restarts really resumed from committed snapshots (not from the start every time).
    resumed_at = pipeline.resume_epochs()
    assert len(resumed_at) == KILLS + 1 and max(resumed_at) > 1, resumed_at
    remaining = {s.segment_id for s in store.segments()}
    consumed = range(start.segment_id if start else min(remaining), max(remaining))
    assert any(i not in remaining for i in consumed), "consumed segments were deleted"
    assert "SegmentVanishedError" not in pipeline.log_text()
    for destination, rows in found.items():
        table = readers[destination][0]
        problem = difference(expected[table], rows, str(pipeline.log_path))
        assert problem is None, f"{destination}, after {kills} SIGKILLs: {problem}"
