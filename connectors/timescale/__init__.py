"""The TimescaleDB destination: the PostgreSQL sink (connectors/postgres) with hypertables.

TimescaleDB is PostgreSQL: `TimescaleSink` IS `PostgresSink` (same row layout, staging COPY,
version-guarded ``INSERT ... ON CONFLICT`` upserts, versioned tombstones, range deletes,
progress rows, retries) plus one `TableHook` that runs in the DDL transaction after the
sink's ``CREATE TABLE IF NOT EXISTS``:

1. `hypertable_of` checks the table's configuration (`TimescaleSettings`): a time column
   (CQL timestamp or date) that is part of the Cassandra primary key, so the destination
   primary key includes it (TimescaleDB requires every unique index, the one ON CONFLICT
   uses included, to contain the time column), segment_by columns of the rows table;
2. it detects the extension (pg_extension / pg_available_extensions): missing, it raises
   `TimescaleMissingError` naming the database and what to install (``when_missing="fail"``)
   or logs a warning listing every skipped statement and leaves a plain PostgreSQL table
   (``when_missing="plain"``);
3. otherwise it runs create_hypertable (if_not_exists, migrate_data), enables compression
   (unless already enabled) with its policy, and adds the retention policy. Compression needs
   TimescaleDB >= 2.11 (upserts into compressed chunks); older versions are refused.

Every extension-specific statement is in `_extension.py`.

NOT EXERCISED AGAINST A REAL TIMESCALEDB (none can be installed here; CI runs plain
PostgreSQL 15): the statements' text is checked exactly, but not that TimescaleDB accepts it;
create_hypertable on a table with data (migrate_data), the argument resolution of
create_hypertable on 2.13+ (its ``dimension`` overload; the named ``time_column_name`` should
select the classic one), the compression_enabled check, upserts, tombstones and range deletes
into compressed chunks (documented to work since 2.11, with decompression cost), policy jobs
(ownership, what if_not_exists does with another interval: kept, with a warning), retention
dropping rows that still exist in Cassandra, and two partitions running the hook at once
(serialized by the sink's advisory lock, as the PostgreSQL DDL is). Plain-PostgreSQL
behaviour (``when_missing`` both ways, upserts, deletes, version guards) is tested.
"""

from connectors.timescale._extension import EXTENSION, ExtensionState
from connectors.timescale._settings import Compression, TimescaleSettings, check_interval
from connectors.timescale._sink import (
    Hypertable,
    TimescaleMissingError,
    TimescaleSink,
    TimescaleVersionError,
    hypertable_of,
    statements,
)

__all__ = [
    "EXTENSION",
    "Compression",
    "ExtensionState",
    "Hypertable",
    "TimescaleMissingError",
    "TimescaleSink",
    "TimescaleSettings",
    "TimescaleVersionError",
    "check_interval",
    "hypertable_of",
    "statements",
]
