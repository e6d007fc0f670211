"""The initial load as a branch of the pipeline's flow (connectors/cassandra/snapshot.py).

It emits (key, RowOp) pairs like the row-images step, so flow.py merges it into the operations
before masking. Nothing routes by that key (the sinks key operations by partition after masking,
and a loaded row is masked on the worker that read it), so every loaded row has the same one,
LOADED.

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

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from cassandra import ConsistencyLevel

from connectors.cassandra.schema import TableSchema
from connectors.cassandra.snapshot import SnapshotSource
from dataflows.runtime import Runtime
from operators.row_ops import RowOp

LOADED = "initial-load"
"""The key of every loaded operation (see the module docstring)."""


def initial_load(step_id: str, flow: Dataflow, runtime: Runtime) -> op.KeyedStream[RowOp]:
    """Add the load of the configured tables to FLOW: a stream of (LOADED, RowOp)."""
    settings = runtime.settings
    load = settings.initial_load
    wanted = set(settings.cassandra.tables)

    def tables() -> list[TableSchema]:
        return [t for t in runtime.schemas.tables()
                if not wanted or f"{t.keyspace}.{t.name}" in wanted]

    # Lambdas: the session and the schemas are made in the worker, on first use.
    rows = op.input(step_id, flow, SnapshotSource(
        lambda: runtime.session, tables, splits=load.splits, page_size=load.page_size,
        consistency=ConsistencyLevel.name_to_value[settings.cassandra.consistency],
        generation=load.generation, recovery_directory=settings.recovery_directory,
        step_id=f"{flow.flow_id}.{step_id}"))

    return op.key_on(f"{step_id}_key", rows, lambda _operation: LOADED)
