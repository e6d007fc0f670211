"""The destination layout of one Cassandra table: names, columns, PostgreSQL types, converters.

Rows table "<keyspace>__<table>": partition-key columns, clustering columns, regular columns,
then the bookkeeping columns (`CDC_COLUMNS`); PRIMARY KEY (partition key, clustering).
Static companion "<keyspace>__<table>__static" (only with static columns): partition key,
static columns, bookkeeping columns; PRIMARY KEY (partition key).
View "<keyspace>__<table>__current": the live rows joined with their live static row, plus
partitions holding only a live static row (Cassandra returns those as one row with NULL
clustering and regular columns).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.cassandra.schema import ClusteringOrder, TableSchema
from connectors.cassandra.values import CqlType, parse_cql_type
from connectors.postgres._naming import column_name, table_names
from connectors.postgres._ordering import ClusteringColumn
from connectors.postgres._values import column_type, converter

__all__ = ["CDC_COLUMNS", "Column", "LayoutError", "TableLayout", "build_layout"]

# name -> PostgreSQL definition, in table order.
CDC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_cdc_version", "bigint NOT NULL"),
    ("_cdc_deleted", "boolean NOT NULL"),
    ("_cdc_source_node", "text"),
    ("_cdc_source_segment", "bigint"),
    ("_cdc_source_offset", "integer"),
    ("_cdc_updated_at", "timestamptz NOT NULL DEFAULT now()"),
)
# What the apply path writes (the rest come from defaults).
CDC_WRITTEN = ("_cdc_version", "_cdc_deleted", "_cdc_source_node", "_cdc_source_segment",
               "_cdc_source_offset")


class LayoutError(ValueError):
    """A Cassandra table that cannot be given a PostgreSQL layout."""


@dataclass(frozen=True)
class Column:
    name: str  # Cassandra's
    pg_name: str
    type: CqlType  # after masking
    pg_type: str
    convert: Callable[[Any], Any]
    masked: bool = False
    order: ClusteringOrder | None = None


@dataclass(frozen=True)
class TableLayout:
    keyspace: str
    table: str
    rows_table: str
    static_table: str | None
    view: str
    partition: tuple[Column, ...]
    clustering: tuple[Column, ...]
    regular: tuple[Column, ...]
    static: tuple[Column, ...]

    @property
    def key(self) -> tuple[Column, ...]:
        return self.partition + self.clustering

    def clustering_columns(self) -> tuple[ClusteringColumn, ...]:
        return tuple(ClusteringColumn(c.name, c.type, c.order or ClusteringOrder.ASC, c.masked)
                     for c in self.clustering)


def build_layout(schema: TableSchema, masked_types: Mapping[str, str] | None = None
                 ) -> TableLayout:
    """The layout of SCHEMA; MASKED_TYPES (from operators.masking.masked_column_types) gives
    the CQL type of columns whose type masking changes."""
    if schema.is_counter:
        raise LayoutError(f"{schema.keyspace}.{schema.name} is a counter table: counters are "
                          "not captured (docs/adr/0003)")
    masked_types = dict(masked_types or {})
    seen: dict[str, str] = {}

    def column(spec: Any) -> Column:
        masked = spec.name in masked_types
        t = parse_cql_type(masked_types[spec.name], schema.keyspace) if masked else spec.type
        pg_name = column_name(spec.name)
        if pg_name.startswith("_cdc_"):
            raise LayoutError(f"column {schema.keyspace}.{schema.name}.{spec.name} clashes "
                              "with the sink's _cdc_ bookkeeping columns")
        if pg_name in seen:
            raise LayoutError(f"columns {seen[pg_name]} and {spec.name} of {schema.keyspace}."
                              f"{schema.name} map to the same PostgreSQL name")
        seen[pg_name] = spec.name
        try:
            pg_type = column_type(t)
        except ValueError as error:
            raise LayoutError(f"{schema.keyspace}.{schema.name}.{spec.name}: {error}") from None
        return Column(spec.name, pg_name, t, pg_type, converter(t), masked,
                      getattr(spec, "order", None))

    from connectors.cassandra.schema import ColumnKind

    partition = tuple(column(s) for s in schema.partition_key)
    clustering = tuple(column(s) for s in schema.clustering)
    by_name = sorted(schema.columns.values(), key=lambda s: s.name)
    regular = tuple(column(s) for s in by_name if s.kind is ColumnKind.REGULAR)
    static = tuple(column(s) for s in by_name if s.kind is ColumnKind.STATIC)
    rows_table, static_table, view = table_names(schema.keyspace, schema.name)
    return TableLayout(schema.keyspace, schema.name, rows_table,
                       static_table if static else None, view,
                       partition, clustering, regular, static)
