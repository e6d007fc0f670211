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
from connectors.cassandra.values import CqlType
from connectors.postgres._values import column_type, converter
from connectors.table_layout import ColumnSource, LayoutError, TableLayout, build_table_layout

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


@dataclass(frozen=True)
class Column:
    name: str  # Cassandra's
    pg_name: str
    type: CqlType  # after masking
    pg_type: str
    convert: Callable[[Any], Any]
    masked: bool = False
    order: ClusteringOrder | None = None


def _column(source: ColumnSource) -> Column:
    return Column(source.name, source.dest_name, source.type, column_type(source.type),
                  converter(source.type), source.masked, source.order)


def build_layout(schema: TableSchema, masked_types: Mapping[str, str] | None = None
                 ) -> TableLayout[Column]:
    """The PostgreSQL layout of SCHEMA (connectors/table_layout.py)."""
    return build_table_layout(schema, masked_types, destination="PostgreSQL",
                              make_column=_column)
