"""A Cassandra table's destination layout, shared by every sink: which columns, in which role,
under which names, with which (masked) CQL types. Each sink only says how one column becomes
its own column type (`make_column`).

Rows table "<keyspace>__<table>": partition-key columns, clustering columns, regular columns
(sorted by name); static companion "<keyspace>__<table>__static" only with static columns; a
view "<keyspace>__<table>__current". Names come from connectors/postgres/_naming.py, so a table
has the same name in every destination.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from connectors.cassandra.schema import ClusteringOrder, ColumnKind, TableSchema
from connectors.cassandra.values import CqlType, parse_cql_type
from connectors.clustering import ClusteringColumn
from connectors.postgres._naming import column_name, table_names

C = TypeVar("C")


class LayoutError(ValueError):
    """A Cassandra table that cannot be given a destination layout; names table and column."""


@dataclass(frozen=True)
class ColumnSource:
    """What a sink needs to make one destination column."""

    name: str  # Cassandra's
    dest_name: str
    type: CqlType  # after masking
    masked: bool
    key: bool  # partition or clustering column
    order: ClusteringOrder | None


@dataclass(frozen=True)
class TableLayout(Generic[C]):
    keyspace: str
    table: str
    rows_table: str
    static_table: str | None
    view: str
    partition: tuple[C, ...]
    clustering: tuple[C, ...]
    regular: tuple[C, ...]
    static: tuple[C, ...]

    @property
    def key(self) -> tuple[C, ...]:
        return self.partition + self.clustering

    def clustering_columns(self) -> tuple[ClusteringColumn, ...]:
        return tuple(ClusteringColumn(c.name, c.type, c.order or ClusteringOrder.ASC, c.masked)
                     for c in self.clustering)


def build_table_layout(schema: TableSchema, masked_types: Mapping[str, str] | None, *,
                       destination: str, make_column: Callable[[ColumnSource], C]
                       ) -> TableLayout[C]:
    """The layout of SCHEMA; MASKED_TYPES (operators.masking.masked_column_types) gives the CQL
    type of columns whose type masking changes. MAKE_COLUMN raises ValueError for a type the
    destination cannot hold; that becomes a LayoutError naming the column."""
    if schema.is_counter:
        raise LayoutError(f"{schema.keyspace}.{schema.name} is a counter table: counters are "
                          "not captured (docs/adr/0003)")
    masked_types = dict(masked_types or {})
    seen: dict[str, str] = {}

    def column(spec: Any, key: bool) -> C:
        masked = spec.name in masked_types
        t = parse_cql_type(masked_types[spec.name], schema.keyspace) if masked else spec.type
        name = column_name(spec.name)
        if name.startswith("_cdc_"):
            raise LayoutError(f"column {schema.keyspace}.{schema.name}.{spec.name} clashes "
                              "with the sink's _cdc_ bookkeeping columns")
        if name in seen:
            raise LayoutError(f"columns {seen[name]} and {spec.name} of {schema.keyspace}."
                              f"{schema.name} map to the same {destination} name")
        seen[name] = spec.name
        try:
            return make_column(ColumnSource(spec.name, name, t, masked, key,
                                            getattr(spec, "order", None)))
        except ValueError as error:
            raise LayoutError(f"{schema.keyspace}.{schema.name}.{spec.name}: {error}") from None

    partition = tuple(column(s, True) for s in schema.partition_key)
    clustering = tuple(column(s, True) for s in schema.clustering)
    by_name = sorted(schema.columns.values(), key=lambda s: s.name)
    regular = tuple(column(s, False) for s in by_name if s.kind is ColumnKind.REGULAR)
    static = tuple(column(s, False) for s in by_name if s.kind is ColumnKind.STATIC)
    rows_table, static_table, view = table_names(schema.keyspace, schema.name)
    return TableLayout(schema.keyspace, schema.name, rows_table,
                       static_table if static else None, view,
                       partition, clustering, regular, static)


def refuse_another_key(table: str, found: set[str], wanted: set[str], *, key: str,
                       harm: str) -> None:
    """LayoutError unless the destination TABLE's KEY columns (its primary key, its sort key)
    are the Cassandra table's key columns, WANTED: a table dropped and created again with
    another primary key must not write into the old destination table (HARM says why)."""
    if found != wanted:
        has = f"the {key} ({', '.join(sorted(found))})" if found else f"no {key}"
        raise LayoutError(
            f"{table} has {has}, the Cassandra table's "
            f"primary key is ({', '.join(sorted(wanted))}): was it dropped and created again "
            f"with another primary key? {harm}; move or drop the destination table (and its "
            "view), then restart (docs/schema-evolution.md)")
