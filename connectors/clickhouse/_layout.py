"""The ClickHouse layout of one Cassandra table: names, columns, types, converters.

Rows table "<keyspace>__<table>": partition-key columns, clustering columns, regular columns
(Nullable), then the bookkeeping columns (`CDC_COLUMNS`);
ENGINE = ReplacingMergeTree(_cdc_version) ORDER BY (partition key, clustering).
Static companion "<keyspace>__<table>__static" (only with static columns): partition key,
static columns, bookkeeping; ORDER BY (partition key). View "<keyspace>__<table>__current".
Names are those of the PostgreSQL sink (connectors/postgres/_naming.py: over 63 bytes they are
shortened with a hash), so a table has the same name in every destination.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.cassandra.schema import ClusteringOrder, ColumnKind, TableSchema
from connectors.cassandra.values import CqlType, parse_cql_type
from connectors.clickhouse._types import column_type, converter, stored_value
from connectors.postgres._naming import column_name, table_names
from connectors.postgres._ordering import ClusteringColumn

__all__ = ["CDC_COLUMNS", "CDC_WRITTEN", "Column", "LayoutError", "TableLayout",
           "build_layout"]

# name -> ClickHouse definition, in table order.
CDC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_cdc_version", "Int64"),
    ("_cdc_deleted", "UInt8"),
    ("_cdc_source_node", "String"),
    ("_cdc_source_segment", "Int64"),
    ("_cdc_source_offset", "Int32"),
    ("_cdc_updated_at", "DateTime DEFAULT now()"),
)
# What the apply path writes, with the type names clickhouse-connect needs (18.16).
CDC_WRITTEN: tuple[tuple[str, str], ...] = tuple(
    (n, d) for n, d in CDC_COLUMNS if n != "_cdc_updated_at")


class LayoutError(ValueError):
    """A Cassandra table that cannot be given a ClickHouse layout."""


@dataclass(frozen=True)
class Column:
    name: str  # Cassandra's
    ch_name: str
    type: CqlType  # after masking
    ch_type: str  # as declared: Nullable(...) for non-key columns
    convert: Callable[[Any], Any]
    stored: Callable[[Any], Any]
    masked: bool = False
    order: ClusteringOrder | None = None

    @property
    def is_string(self) -> bool:
        return self.ch_type in ("String", "Nullable(String)")


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

    def column(spec: Any, key: bool) -> Column:
        masked = spec.name in masked_types
        t = parse_cql_type(masked_types[spec.name], schema.keyspace) if masked else spec.type
        ch_name = column_name(spec.name)
        if ch_name.startswith("_cdc_"):
            raise LayoutError(f"column {schema.keyspace}.{schema.name}.{spec.name} clashes "
                              "with the sink's _cdc_ bookkeeping columns")
        if ch_name in seen:
            raise LayoutError(f"columns {seen[ch_name]} and {spec.name} of {schema.keyspace}."
                              f"{schema.name} map to the same ClickHouse name")
        seen[ch_name] = spec.name
        try:
            ch_type = column_type(t)
        except ValueError as error:
            raise LayoutError(f"{schema.keyspace}.{schema.name}.{spec.name}: {error}") from None
        # 18.16 refuses Nullable columns in the sort key; key values are never null anyway.
        declared = ch_type if key else f"Nullable({ch_type})"
        return Column(spec.name, ch_name, t, declared, converter(t), stored_value(t), masked,
                      getattr(spec, "order", None))

    partition = tuple(column(s, True) for s in schema.partition_key)
    clustering = tuple(column(s, True) for s in schema.clustering)
    by_name = sorted(schema.columns.values(), key=lambda s: s.name)
    regular = tuple(column(s, False) for s in by_name if s.kind is ColumnKind.REGULAR)
    static = tuple(column(s, False) for s in by_name if s.kind is ColumnKind.STATIC)
    rows_table, static_table, view = table_names(schema.keyspace, schema.name)
    return TableLayout(schema.keyspace, schema.name, rows_table,
                       static_table if static else None, view,
                       partition, clustering, regular, static)
