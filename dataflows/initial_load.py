"""The initial load as a branch of the pipeline's flow (connectors/cassandra/snapshot.py).

It emits what the row-images step emits, keyed the same way: (bucket, RowOp) with dedup's bucket
of the row's (table, partition key), so flow.py merges it into the operations before masking.
(Nothing routes by that key until the sinks: a loaded row is masked on the worker that read it.)

Why a row written during the load is not missed: the capture's starting cursor ("latest": the
end of each node's commit log) is fixed when the flow is built, before the load reads anything,
so every write the load might not see is after that cursor and comes through the capture. A row
can then arrive twice, once loaded and once as a change. A captured change's image is versioned
by the time it was read; a loaded row by its write times, which are older than any read made
after the write (docs/adr/0003, amendment): a loaded image replaces a captured one only if it
holds a write made after that read (then it is the newer state, and that write's own change
follows), and it fills the rows no change touches, whatever order they arrive in.

A range or partition deletion keeps no tombstone in the sinks for rows they do not hold yet, and
it can overtake the loaded image of a row it deleted (an image read just before the deletion,
still on its way from another worker). Each sink partition remembers the deletions it wrote in
the last ten minutes and drops the loaded images they cover (connectors/range_tombstones.py);
an image later than that, or one replayed after a restart that forgot the deletion, stays until
the row's next change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from cassandra import ConsistencyLevel

from connectors.cassandra.schema import TableSchema
from connectors.cassandra.snapshot import SnapshotSource
from dataflows.runtime import Runtime
from operators.dedup import bucket_of, deduplicate
from operators.row_ops import RowOp

BUCKETS = deduplicate.__kwdefaults__["buckets"]  # the flow's dedup buckets (its default)


@dataclass(frozen=True)
class _PartitionOf:
    """What bucket_of reads of a change event, for a loaded row."""

    table_id: UUID
    partition_key: Mapping[str, Any]


def initial_load(step_id: str, flow: Dataflow, runtime: Runtime, *,
                 buckets: int = BUCKETS) -> op.KeyedStream[RowOp]:
    """Add the load of the configured tables to FLOW: a stream of (bucket, RowOp)."""
    settings = runtime.settings
    load = settings.initial_load
    wanted = set(settings.cassandra.tables)

    def tables() -> list[TableSchema]:
        return [t for t in runtime.schemas.tables()
                if not wanted or f"{t.keyspace}.{t.name}" in wanted]

    # Lambdas: the session and the schemas are made in the worker, on first use.
    rows = op.input(step_id, flow, SnapshotSource(
        lambda: runtime.session, tables, splits=load.splits, page_size=load.page_size,
        consistency=ConsistencyLevel.name_to_value[settings.cassandra.consistency]))

    def bucket(operation: RowOp) -> str:
        table = runtime.table(operation.keyspace, operation.table)
        partition = {c.name: operation.key[c.name] for c in table.partition_key}
        return bucket_of(_PartitionOf(table.id, partition), buckets)  # type: ignore[arg-type]

    return op.key_on(f"{step_id}_key", rows, bucket)
