"""Bytewax's recovery store, read (never written) by the pipeline.

The store is Bytewax's: SQLite files ``part-*.sqlite3`` in the recovery directory, in the layout
of the Bytewax version checked here. Segment deletion reads the snapshots of the capture's
cursors from it (connectors/cassandra/retention.py); the initial load and the flow's start, the
partitions it holds state for (`state_keys`).

Bytewax refuses to start when its store holds state for a partition that no worker lists any
more ("Key ... is not in this worker's routing map"). A source whose partitions come and go
with the schema (the initial load's, one per table and token range) therefore lists, besides
its current partitions, every one the store has state for (`with_state_keys`), and builds
those as finished: read from the store itself, nothing is missed, not even the names an older
version wrote.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["BYTEWAX_VERSION", "RecoveryStoreError", "check_layout", "part_files", "read_only",
           "state_keys", "with_state_keys"]

# The recovery store's layout is Bytewax's, not ours: read only the version it was checked for.
BYTEWAX_VERSION = "0.21.1"
_EXPECTED_COLUMNS = {
    "parts": {"part_index", "part_count"},
    "exs": {"ex_num", "worker_count", "resume_epoch"},
    "fronts": {"ex_num", "worker_index", "worker_frontier"},
    "snaps": {"step_id", "state_key", "snap_epoch", "ser_change"},
}


class RecoveryStoreError(RuntimeError):
    """The recovery store cannot be read as Bytewax 0.21.1 writes it."""


def part_files(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob("part-*.sqlite3"))


def read_only(file: Path) -> sqlite3.Connection:
    # Read only, so the pipeline can never damage Bytewax's store; WAL lets it read while
    # Bytewax writes.
    return sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=5.0)


def check_layout(db: sqlite3.Connection, file: Path) -> None:
    for table, columns in _EXPECTED_COLUMNS.items():
        found = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if not columns <= found:
            raise RecoveryStoreError(
                f"{file}: table {table} has columns {sorted(found)}, expected {sorted(columns)}")


def state_keys(directory: Path, step_id: str) -> set[str]:
    """The partitions (state keys) of STEP_ID the store in DIRECTORY holds any snapshot of,
    read by a process of its own: the flow asks while Bytewax may hold the store open in this
    process, through the SQLite it bundles, and two SQLite libraries in one process release
    each other's POSIX locks when one closes the file (a reader here then met "disk I/O
    error")."""
    what = f"reading the state keys of {step_id} in {directory}"
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import json, sys; from connectors.recovery_store import"
             " _read_state_keys; print(json.dumps(sorted(_read_state_keys(sys.argv[1],"
             " sys.argv[2]))))", str(directory), step_id],
            capture_output=True, text=True, timeout=120, check=False,
            cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired:
        raise RecoveryStoreError(f"{what}: no answer in 120 s (a lock held?)") from None
    if done.returncode != 0:
        problem = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise RecoveryStoreError(f"{what}: {problem[0]}")
    try:
        return set(json.loads(done.stdout))
    except ValueError:
        raise RecoveryStoreError(f"{what}: the reader printed no list") from None


def _read_state_keys(directory: str | Path, step_id: str) -> set[str]:
    keys: set[str] = set()
    for file in part_files(Path(directory)):
        try:
            with read_only(file) as db:
                check_layout(db, file)
                keys.update(key for (key,) in db.execute(
                    "SELECT DISTINCT state_key FROM snaps WHERE step_id = ?", (step_id,)))
        except sqlite3.Error as error:
            raise RecoveryStoreError(f"{file}: {type(error).__name__}: {error}") from None
    return keys


def with_state_keys(directory: Path | None, step_id: str, current: Iterable[str]) -> list[str]:
    """CURRENT and every partition of STEP_ID (Bytewax's full step id, "<flow>.<step>") the
    store in DIRECTORY holds state for, sorted; CURRENT alone without a store (nothing
    resumes)."""
    current = set(current)
    if directory is None or not Path(directory).is_dir():
        return sorted(current)
    return sorted(current | state_keys(Path(directory), step_id))
