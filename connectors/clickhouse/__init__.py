"""The ClickHouse destination: row images as versioned rows in ReplacingMergeTree tables
(docs/adr/0003), with one code path for Debian's ClickHouse 18.16 and current servers.

- `ClickHouseSink` (_sink.py): a Bytewax FixedPartitionedSink of `(key, RowOp)` items; each
  partition keeps one HTTPS client and applies each batch as one insert per destination table,
  retrying transient errors; its positions go to _cdc_progress off the data path, at most
  once per `progress_interval` (_progress.py).
- `ClickHouseSinkSettings` (_settings.py): connection (verified HTTPS, TLS 1.3 only, no
  compression), database, partition count, retries; the password is a secret reference.
- Layout and DDL (_layout.py, _ddl.py): "<keyspace>__<table>" (ReplacingMergeTree(_cdc_version)
  ORDER BY the primary key), its "__static" companion and "__current" view (FINAL, live rows);
  names as in the PostgreSQL sink.
- Types (_types.py + the 'clickhouse' keys of connectors/typemap.json), batch application
  (_apply.py). Range deletes use the PostgreSQL sink's Cassandra ordering
  (connectors/clustering.py).

How versions are enforced without conditional writes: every operation is inserted with its
version; the engine keeps the highest version per key, the last inserted on ties ("later
wins"), when parts merge, and FINAL applies the same rule at read time. Readers must use the
view or FINAL: a plain SELECT can see superseded versions until a merge.
"""

from connectors.clickhouse._apply import RejectedValueError, apply_batch
from connectors.clickhouse._ddl import (
    PROGRESS_TABLE,
    create_statements,
    ensure_progress_table,
    ensure_table,
)
from connectors.clickhouse._layout import LayoutError, TableLayout, build_layout
from connectors.clickhouse._settings import ClickHouseSinkSettings
from connectors.clickhouse._sink import ClickHouseSink, stable_partition
from connectors.clustering import UnsupportedRange

__all__ = [
    "PROGRESS_TABLE",
    "ClickHouseSink",
    "ClickHouseSinkSettings",
    "LayoutError",
    "RejectedValueError",
    "TableLayout",
    "UnsupportedRange",
    "apply_batch",
    "build_layout",
    "create_statements",
    "ensure_progress_table",
    "ensure_table",
    "stable_partition",
]
