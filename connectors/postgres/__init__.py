"""The PostgreSQL destination: row images applied with version guards (docs/adr/0003).

- `PostgresSink` (_sink.py): a Bytewax FixedPartitionedSink of `(key, RowOp)` items; each
  partition owns a small psycopg pool and applies each batch in one transaction, data and
  progress together, retrying transient errors.
- `PostgresSinkSettings` (_settings.py): connection (verified TLS 1.3 only), schema, partition
  count, batch and pool limits; the password is a secret reference.
- Layout and DDL (_layout.py, _ddl.py, _naming.py): "<keyspace>__<table>", its "__static"
  companion and "__current" view, created IF NOT EXISTS under an advisory lock; an optional
  `TableHook` adds DDL after them in the same transaction (used by connectors/timescale).
- Types (_values.py + connectors/typemap.json), Cassandra's clustering order for range deletes
  (connectors/clustering.py, shared), batch application (_apply.py).

A value PostgreSQL refuses raises `RejectedValueError` (the flow stops; recovery replays it
after the cause is fixed): dropping a row would leave the destination silently different from
Cassandra, and a later older image of it could then be applied.
"""

from connectors.clustering import UnsupportedRange
from connectors.postgres._apply import RejectedValueError, apply_batch
from connectors.postgres._ddl import (
    PROGRESS_TABLE,
    TableHook,
    ensure_progress_table,
    ensure_table,
)
from connectors.postgres._layout import LayoutError, TableLayout, build_layout
from connectors.postgres._naming import shorten, table_names
from connectors.postgres._settings import PostgresSinkSettings
from connectors.postgres._sink import PostgresSink, stable_partition

__all__ = [
    "PROGRESS_TABLE",
    "LayoutError",
    "PostgresSink",
    "PostgresSinkSettings",
    "RejectedValueError",
    "TableHook",
    "TableLayout",
    "UnsupportedRange",
    "apply_batch",
    "build_layout",
    "ensure_progress_table",
    "ensure_table",
    "shorten",
    "stable_partition",
    "table_names",
]
