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


def test_every_masked_batch_is_in_the_audit_trail(tmp_path, monkeypatch) -> None:
    """The running pipeline's masker records each batch in the audit trail: per column its
    strategy, class, basis and counts, never a value (the audit hook used to be wired in
    tests only). The file is the owner's only."""
    import json
    import stat

    from dataflows.config import parse

    monkeypatch.setenv("MASKING_KEY", "k" * 40)
    policy = tmp_path / "masking.json"
    policy.write_text(json.dumps({"masking": {"hmac": {"key": "env:MASKING_KEY"}, "tables": {
        "clinic": {"patients": {"columns": {"email": {"class": "email", "strategy": "hmac"}}}}}}}))
    config = json.loads(EXAMPLE.read_text())
    config.update(masking_policy=str(policy), audit_dir=str(tmp_path / "audit"))
    runtime = Runtime(parse(config, base=EXAMPLE.parent))
    runtime.masker.mask_rows("clinic", "patients", [
        {"email": "ana@example.org", "status": "active"}, {"email": None, "status": "x"}])
    runtime.audit_trail.close()

    (path,) = (tmp_path / "audit").glob("masking-audit-*.jsonl")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "ana@example.org" not in text and "active" not in text
    (record,) = [json.loads(line) for line in text.splitlines()]
    assert (record["keyspace"], record["table"], record["rows"]) == ("clinic", "patients", 2)
    assert record["columns"] == [
        {"column": "email", "strategy": "hmac", "class": "email", "basis": "policy",
         "values": 1, "nulls": 1},
        {"column": "status", "strategy": "pass", "class": "none", "basis": "unlisted",
         "values": 2, "nulls": 0}]


def test_a_destination_table_without_any_primary_key_says_so() -> None:
    import pytest

    from connectors.table_layout import LayoutError, refuse_another_key

    with pytest.raises(LayoutError, match=r"cdc.t has no primary key, the Cassandra table's "
                                          r"primary key is \(k\)"):
        refuse_another_key("cdc.t", set(), {"k"}, key="primary key", harm="Wrong")
    refuse_another_key("cdc.t", {"k"}, {"k"}, key="primary key", harm="Wrong")  # the same
