"""The PostgreSQL sink when a table's Cassandra schema changes under a running partition
(docs/schema-evolution.md): the layout is rebuilt on the next batch and the destination is
altered in place, additively."""

from __future__ import annotations

import dataclasses
import uuid

from connectors.cassandra.events import Position
from connectors.cassandra.schema import SchemaRows, TableSchema, build_schemas
from connectors.postgres import PostgresSink
from operators.row_ops import RowUpsert, Source
from tests.connectors.postgres.conftest import KS, column, rows

_offset = iter(range(1, 10**9))


def versions(table: str, keyspace: str = KS) -> tuple[TableSchema, TableSchema, TableSchema]:
    """Three versions of one table (same id): (k, v, old); then `new bigint` and a static
    `s` added; then `old` dropped."""
    table_id = uuid.uuid4()

    def build(regular: list[tuple[str, str, str]], dropped: list[str]) -> TableSchema:
        columns = [column(table, "k", "partition_key", "int", 0, keyspace=keyspace),
                   column(table, "c", "clustering", "int", 0, "asc", keyspace=keyspace)]
        columns += [column(table, n, kind, cql, keyspace=keyspace) for n, kind, cql in regular]
        row = {"keyspace_name": keyspace, "table_name": table, "id": table_id, "cdc": True,
               "flags": {"compound"}}
        gone = [{"keyspace_name": keyspace, "table_name": table, "column_name": n,
                 "dropped_time": 1_700_000_000_000, "kind": "regular", "type": "text"}
                for n in dropped]
        built, _ = build_schemas(SchemaRows([row], [row], [], columns, [], gone))
        return built[table_id]

    v1 = build([("v", "regular", "text"), ("old", "regular", "text")], [])
    v2 = build([("v", "regular", "text"), ("old", "regular", "text"),
                ("new", "regular", "bigint"), ("s", "static", "text")], [])
    v3 = build([("v", "regular", "text"), ("new", "regular", "bigint"),
                ("s", "static", "text")], ["old"])
    return v1, v2, v3


def up(key: dict, values: dict, version: int, static: bool = False) -> RowUpsert:
    return RowUpsert(KS, "evo", key, values, version,
                     Source("n1", Position(1700000000000, next(_offset))), static)


def columns_of(conn, schema: str, table: str) -> dict[str, str]:
    return dict(conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, table)).fetchall())


def test_add_and_drop_evolve_the_destination_in_place(settings, conn) -> None:
    v1, v2, v3 = versions("evo")
    current = {"schema": v1}
    refreshed = []

    def refresh() -> None:  # what the registry does when the cluster's schema moved
        refreshed.append(True)
        current["schema"] = pending.pop(0) if pending else current["schema"]

    pending: list[TableSchema] = []
    sink = PostgresSink(settings, lambda ks, t: current["schema"] if t == "evo" else None,
                        schema_refresh=refresh)
    part = sink.build_part("pg_out", "0", None)
    try:
        part.write_batch([up({"k": 1, "c": 1}, {"v": "a", "old": "o1"}, 10)])
        assert set(columns_of(conn, settings.schema, f"{KS}__evo__current")) == \
            {"k", "c", "v", "old", "_cdc_version"}

        # A batch naming columns this process has not read yet: re-read, then evolve.
        pending.append(v2)
        part.write_batch([up({"k": 2, "c": 1}, {"v": "b", "old": "o2", "new": 7}, 20),
                          up({"k": 2}, {"s": "st"}, 20, static=True)])
        assert refreshed
        assert columns_of(conn, settings.schema, f"{KS}__evo")["new"] == "bigint"
        assert rows(conn, settings.schema, f"{KS}__evo__current", "k, c, s, v, old, new",
                    "k") == [(1, 1, None, "a", "o1", None), (2, 1, "st", "b", "o2", 7)]

        # DROP: the next batch (same partition) sees the new schema object; an image read
        # before the drop still carries the column: its value is left out, not refused.
        current["schema"] = v3
        part.write_batch([up({"k": 3, "c": 1}, {"v": "c", "new": 8, "old": "late"}, 30),
                          up({"k": 1, "c": 1}, {"v": "a2", "new": 9}, 40)])
        view = columns_of(conn, settings.schema, f"{KS}__evo__current")
        assert "old" not in view and {"new", "s"} <= set(view)
        table = columns_of(conn, settings.schema, f"{KS}__evo")
        assert "old" in table  # kept, with its values as of the drop, no longer written
        assert rows(conn, settings.schema, f"{KS}__evo", "k, v, old, new", "k") == [
            (1, "a2", "o1", 9), (2, "b", "o2", 7), (3, "c", None, 8)]
    finally:
        part.close()

    # A restart on the latest schema finds the evolved table as it is: nothing to do.
    again = PostgresSink(settings, lambda ks, t: v3).build_part("pg_out", "1", None)
    try:
        again.write_batch([up({"k": 4, "c": 1}, {"v": "d"}, 50)])
        assert len(rows(conn, settings.schema, f"{KS}__evo__current")) == 4
    finally:
        again.close()


def test_stage_of_an_older_layout_is_not_reused(settings, conn) -> None:
    """A pooled connection keeps its temporary staging table between batches; after a schema
    change the batch stages into one with the new columns."""
    v1, v2, _ = versions("evo")
    current = {"schema": v1}
    one_connection = dataclasses.replace(settings, pool_min_size=1, pool_max_size=1)
    part = PostgresSink(one_connection, lambda ks, t: current["schema"]).build_part(
        "pg_out", "0", None)
    try:
        part.write_batch([up({"k": 1, "c": 1}, {"v": "a"}, 10)])
        current["schema"] = v2
        part.write_batch([up({"k": 1, "c": 1}, {"v": "b", "new": 1}, 20)])
        assert rows(conn, settings.schema, f"{KS}__evo__current", "v, new") == [("b", 1)]
    finally:
        part.close()


def rekeyed(keyspace: str = KS) -> tuple[TableSchema, TableSchema]:
    """One table name, two tables: `c` a regular column, then (dropped and created again)
    a clustering one."""
    from tests.connectors.postgres.conftest import schemas

    first = schemas([column("rekey", "k", "partition_key", "int", 0, keyspace=keyspace),
                     column("rekey", "c", "regular", "int", keyspace=keyspace)])
    second = schemas([column("rekey", "k", "partition_key", "int", 0, keyspace=keyspace),
                      column("rekey", "c", "clustering", "int", 0, "asc", keyspace=keyspace)])
    return first[(keyspace, "rekey")], second[(keyspace, "rekey")]


def test_a_destination_table_with_another_primary_key_is_refused(settings, conn) -> None:
    """A table dropped and created again with another primary key must not write into the
    old destination table: its rows would be matched by the wrong columns (ON CONFLICT on a
    key the table has no constraint for, or rows of one key merged)."""
    import pytest

    from connectors.postgres import LayoutError

    old, new = rekeyed()
    current = {"schema": old}
    sink = PostgresSink(settings, lambda ks, t: current["schema"])
    part = sink.build_part("pg_rekey", "0", None)
    try:
        part.write_batch([RowUpsert(KS, "rekey", {"k": 1}, {"c": 1}, 10,
                                    Source("n1", Position(1, next(_offset))))])
        current["schema"] = new
        with pytest.raises(LayoutError, match=r"__rekey has the primary key \(k\), the "
                                              r"Cassandra table's primary key is \(c, k\)"):
            part.write_batch([RowUpsert(KS, "rekey", {"k": 1, "c": 2}, {}, 20,
                                        Source("n1", Position(1, next(_offset))))])
    finally:
        part.close()
