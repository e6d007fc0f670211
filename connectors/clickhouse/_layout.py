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

from connectors.cassandra.schema import ClusteringOrder, TableSchema
from connectors.cassandra.values import CqlType
from connectors.clickhouse._types import column_type, converter, stored_value
from connectors.table_layout import ColumnSource, LayoutError, TableLayout, build_table_layout

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


def _column(source: ColumnSource) -> Column:
    ch_type = column_type(source.type)
    # 18.16 refuses Nullable columns in the sort key; key values are never null anyway.
    declared = ch_type if source.key else f"Nullable({ch_type})"
    return Column(source.name, source.dest_name, source.type, declared,
                  converter(source.type, clustering=source.order is not None),
                  stored_value(source.type), source.masked,
                  source.order)


def build_layout(schema: TableSchema, masked_types: Mapping[str, str] | None = None
                 ) -> TableLayout[Column]:
    """The ClickHouse layout of SCHEMA (connectors/table_layout.py)."""
    return build_table_layout(schema, masked_types, destination="ClickHouse",
                              make_column=_column)
