"""What the running flow's Runtime answers from the schema registry (no servers: the registry
reads system_schema rows the test gives it)."""

from __future__ import annotations

import uuid
from pathlib import Path

from connectors.cassandra.schema import ClusteringOrder, SchemaRegistry, SchemaRows
from dataflows.config import load
from dataflows.runtime import Runtime
from tests.connectors.postgres.conftest import column

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "pipeline.example.json"


def _rows(table_id: uuid.UUID, order: str) -> SchemaRows:
    columns = [column("t", "p", "partition_key", "int", 0, keyspace="ks"),
               column("t", "c", "clustering", "int", 0, order, keyspace="ks"),
               column("t", "v", "regular", "text", keyspace="ks")]
    table = {"keyspace_name": "ks", "table_name": "t", "id": table_id, "cdc": True,
             "flags": {"compound"}}
    return SchemaRows(all_tables=[table], tables=[table], views=[], columns=columns, types=[],
                      dropped_columns=[])


def test_a_table_created_again_under_its_name_is_looked_up_as_the_new_one() -> None:
    """The registry keeps a dropped table's last schema (its old entries still decode). The
    sinks, masking and routing look tables up by name: they get the one in system_schema, not
    the dropped one (whose layout, here the other clustering order, evaluated the new table's
    range deletes)."""
    old, new = uuid.uuid4(), uuid.uuid4()
    versions = iter([_rows(old, "asc"), _rows(new, "desc")])
    registry = SchemaRegistry(lambda: next(versions), min_refresh_interval=0)
    runtime = Runtime(load(EXAMPLE))
    runtime.__dict__["schemas"] = registry  # the cached property, without a session
    assert runtime.table("ks", "t").id == old
    registry.refresh()
    assert {t.id for t in registry.tables()} == {old, new}  # both kept
    found = runtime.table("ks", "t")
    assert found.id == new and found.clustering[0].order is ClusteringOrder.DESC
