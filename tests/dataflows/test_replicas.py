"""Exactly-once on a 3-node RF=3 cluster: every change arrives three times (once per replica's
commit log), one Cassandra node is SIGKILLed mid-run and comes back later (its unfinished segment,
then hints replayed into it), and the pipeline itself is SIGKILLed twice. PostgreSQL must end
equal to Cassandra through the same masking: no row missing, extra or stale.
"""

from __future__ import annotations

import time

import pytest
from cassandra import ConsistencyLevel

from connectors.cassandra.tail import LocalSegmentStore, end_cursor
from devstack import process
from devstack.cassandra import REPLICAS, CassandraService
from devstack.cassandra_config import node_specs
from tests.dataflows.kill_harness import (
    TABLE_DDL,
    Pipeline,
    Workload,
    converge,
    destination_rows,
    difference,
)
from tests.dataflows.pipeline_files import cassandra_section, postgres_destination

CONVERGE = 240.0


@pytest.mark.slow
def test_a_replica_killed_mid_run_loses_and_duplicates_nothing(
    tmp_path, replica_cluster, cassandra_keyspace, postgres_schema, openbao_env
):
    sess, ks = cassandra_keyspace(REPLICAS)
    bare = ks.strip('"')
    sess.execute(TABLE_DDL.format(ks=ks))
    sess.execute(f"GRANT SELECT ON KEYSPACE {ks} TO cdc_pipeline")
    nodes = []
    for spec, cdc_raw in zip(node_specs(REPLICAS, 3), replica_cluster.cdc_raw_dirs, strict=True):
        node = {"name": spec.name, "cdc_raw": str(cdc_raw)}
        start = end_cursor(LocalSegmentStore(cdc_raw))
        if start is not None:
            node["start_at"] = {"segment_id": start.segment_id, "offset": start.offset}
        nodes.append(node)
    cassandra = cassandra_section(replica_cluster, bare, nodes[0], openbao_env["BAO_CACERT"])
    cassandra.update(nodes=nodes, consistency="QUORUM")  # row images survive a node down
    pipeline = Pipeline(tmp_path, bare, {
        "cassandra": cassandra,
        "batching": {"max_records": 100},
        "destinations": [postgres_destination(postgres_schema, openbao_env["BAO_CACERT"])],
    }, openbao_env)
    victim = node_specs(REPLICAS, 3)[2]

    workload = Workload(sess, ks, seed=11, consistency=ConsistencyLevel.QUORUM)
    pipeline.start(2)
    workload.start()
    try:
        time.sleep(8)
        assert process.kill(victim.name), f"{victim.name} was running"
        time.sleep(5)
        pipeline.kill()  # while the node is down
        pipeline.start(1)
        time.sleep(8)
        # Back up (a restart replays its commit log; the others replay their hints into it)
        # while the workload goes on.
        CassandraService(clusters=(REPLICAS,), nodes=3).start()
        time.sleep(3)
        pipeline.kill()
        pipeline.start(2)
        time.sleep(8)
        workload.stop()
        expected, found = converge(
            sess, ks, bare, pipeline.masker(),
            {"postgres": ("patients", lambda: destination_rows(postgres_schema, bare))},
            timeout=CONVERGE, consistency=ConsistencyLevel.ALL)
    finally:
        workload.stop()
        pipeline.close()
        CassandraService(clusters=(REPLICAS,), nodes=3).start()  # leave it whole

    assert expected["patients"], "the workload left rows in Cassandra"
    assert workload.statements > 600, workload.statements
    assert len(pipeline.resume_epochs()) == 3
    assert "SegmentVanishedError" not in pipeline.log_text()
    problem = difference(expected["patients"], found["postgres"], str(pipeline.log_path))
    assert problem is None, f"with {victim.name} killed and restarted: {problem}"
