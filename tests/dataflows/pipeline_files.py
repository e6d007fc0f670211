"""The configuration pieces the flow tests give the pipeline: the stack's servers, by reference."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from connectors.cassandra.segment import Entry
from connectors.cassandra.tail import Cursor, LocalSegmentStore, end_cursor, poll


def oracle_masker(settings):
    """The masking the oracles put Cassandra's rows through: the pipeline's policy (from its
    PipelineSettings), OpenBao's keys, and no token cache, so a cache fault cannot sit on
    both sides of a comparison."""
    from connectors.secrets import SecretResolver
    from operators.masking import Masker
    from operators.masking.policy import load_policy
    from operators.masking.tokenizer import OpenBaoTransitTokenizer

    policy = load_policy(settings.masking_policy)
    return Masker(policy, SecretResolver(), OpenBaoTransitTokenizer(policy.tokenize))


def masking_policy(keyspace: str, tables: dict[str, dict[str, dict]]) -> dict:
    """A masking policy for TABLES of one keyspace (table -> column rules), keys from the
    stack's OpenBao."""
    return {"masking": {
        "version": 1,
        "hmac": {"key": "openbao:cdc/masking#hmac_key"},
        "tokenize": {"mount": "transit", "key": "cdc-tokenization"},
        "tables": {keyspace: {table: {"columns": columns} for table, columns in tables.items()}},
    }}


def cassandra_section(info, keyspace: str, node: dict[str, Any], ca_cert: str) -> dict:
    """The pipeline's Cassandra section for one node of a stack cluster (ClusterInfo)."""
    return {
        "contact_points": info.contact_points, "port": info.port, "username": "cdc_pipeline",
        "password": "openbao:cdc/cassandra/pipeline#password", "ca_cert": ca_cert,
        "consistency": "ONE", "keyspaces": [keyspace], "nodes": [node],
    }


def postgres_destination(schema: str, ca_cert: str) -> dict:
    return {
        "kind": "postgres", "host": "127.0.0.1", "port": 54329, "database": "cdc",
        "username": "cdc_pipeline", "password": "openbao:cdc/postgres/pipeline#password",
        "ca_cert": ca_cert, "partitions": 2, "options": {"schema": schema},
    }


def timescale_destination(schema: str, ca_cert: str, time_columns: dict[str, str]) -> dict:
    """A TimescaleDB destination on the stack's PostgreSQL, which has no timescaledb extension
    (docs/adr/0001-local-stack.md): plain tables with a warning; the same SQL path otherwise."""
    return {**postgres_destination(schema, ca_cert), "kind": "timescale", "name": "timescale",
            "options": {"schema": schema, "time_columns": time_columns,
                        "when_missing": "plain"}}


def clickhouse_destination(ca_cert: str) -> dict:
    return {
        "kind": "clickhouse", "host": "127.0.0.1", "port": 8443, "database": "cdc",
        "username": "cdc_pipeline", "password": "openbao:cdc/clickhouse/pipeline#password",
        "ca_cert": ca_cert, "partitions": 2,
    }


@dataclass(frozen=True)
class CapturedTable:
    """A fresh keyspace with one CDC table the pipeline may read, on a one-node stack cluster,
    and where that node's commit log ended before the test wrote anything."""

    session: Any
    keyspace: str  # quoted, for CQL
    bare: str  # unquoted, for configuration
    info: Any  # the cluster's ClusterInfo
    store: LocalSegmentStore
    start: Cursor | None

    def node(self, name: str = "c7-node1") -> dict:
        """The pipeline's node entry: this node's cdc_raw, starting where the test began."""
        node: dict[str, Any] = {"name": name, "cdc_raw": str(self.store.directory)}
        if self.start is not None:
            node["start_at"] = {"segment_id": self.start.segment_id,
                                "offset": self.start.offset}
        return node

    def settings(self, tmp_path, openbao_env, columns: dict[str, dict], destinations: list,
                 **sections: Any):
        """The pipeline's settings for this node: a masking policy of COLUMNS (table -> column
        rules) written under TMP_PATH, dead letters there, DESTINATIONS; SECTIONS: other
        top-level keys (batching, spool_dir, ...)."""
        from dataflows.config import parse

        policy = tmp_path / "masking.json"
        policy.write_text(json.dumps(masking_policy(self.bare, columns)))
        return parse({
            "cassandra": cassandra_section(self.info, self.bare, self.node(),
                                           openbao_env["BAO_CACERT"]),
            "masking_policy": str(policy), "dead_letter_dir": str(tmp_path / "dead-letter"),
            "destinations": destinations, **sections,
        })


def captured_table(cassandra_keyspace, cassandra_clusters, ddl: str,
                   version: int = 7) -> CapturedTable:
    """DDL (with {ks} for the keyspace) in a fresh keyspace, granted to cdc_pipeline."""
    sess, ks = cassandra_keyspace(version)
    sess.execute(ddl.format(ks=ks))
    sess.execute(f"GRANT SELECT ON KEYSPACE {ks} TO cdc_pipeline")
    info = cassandra_clusters[version]
    store = LocalSegmentStore(info.cdc_raw_dirs[0])
    return CapturedTable(sess, ks, ks.strip('"'), info, store, end_cursor(store))


def follow_until_stopped(monkeypatch) -> threading.Event:
    """Makes the flows built next follow the commit log until the returned event is set; then
    each capture partition ends once it has read everything durable (so run_main returns)."""
    from dataflows import flow as flow_module

    stop = threading.Event()

    class StoppableSource(flow_module.CdcSource):
        def build_part(self, step_id, for_part, resume_state):
            part = super().build_part(step_id, for_part, resume_state)
            batch = part.next_batch

            def next_batch():
                if stop.is_set():
                    part._until_caught_up = True
                return batch()

            part.next_batch = next_batch
            return part

    monkeypatch.setattr(flow_module, "CdcSource", StoppableSource)
    return stop


def run_in_thread(dataflow) -> tuple[threading.Thread, list[BaseException]]:
    """run_main(DATAFLOW) on a started daemon thread; what it raised lands in the list."""
    from bytewax.testing import run_main

    failures: list[BaseException] = []

    def run() -> None:
        try:
            run_main(dataflow)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            failures.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, failures


DURABLE_WAIT = 45.0  # seconds for a workload to become readable in cdc_raw


def wait_durable(store, start, marker: bytes) -> None:
    """Until the entry holding MARKER is readable from START (so everything written before it
    is too): polls as fast as the log is read, resting only once caught up."""
    cursor, deadline = start, time.monotonic() + DURABLE_WAIT
    while True:
        batch = poll(store, cursor, max_records=5000)
        if any(isinstance(r, Entry) and marker in r.mutation for r in batch.records):
            return
        cursor = batch.position
        if time.monotonic() >= deadline:
            raise AssertionError(f"the workload was not durable in cdc_raw after "
                                 f"{DURABLE_WAIT:g} s")
        if batch.caught_up:
            time.sleep(0.2)
