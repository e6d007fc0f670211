"""A source's partitions: the current ones, and every one the recovery store holds state for.

Bytewax refuses to start when its recovery store holds state for a partition that no worker
lists any more ("Key ... is not in this worker's routing map"): a source whose partitions come
and go with the schema (the initial load's, one per table and token range) would then stop at
every start after a table it loaded was dropped, its ranges were cut differently, or their
names changed with the code. So such a source lists, besides its current partitions, every one
the store has state for (connectors/recovery_store.py), and builds those as finished. Read from
the store itself, nothing can be missed: no list of our own to keep, to race on between
processes, or to lack the names an older version wrote. Without a recovery store nothing
resumes, and the current partitions are all there is.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from connectors.recovery_store import state_keys

__all__ = ["with_states_in_store"]


def with_states_in_store(directory: Path | None, step_id: str, current: Iterable[str]
                         ) -> list[str]:
    """CURRENT and every partition of STEP_ID (Bytewax's full step id, "<flow>.<step>") the
    store in DIRECTORY holds state for, sorted; CURRENT alone without a store."""
    current = set(current)
    if directory is None or not Path(directory).is_dir():
        return sorted(current)
    return sorted(current | state_keys(Path(directory), step_id))
