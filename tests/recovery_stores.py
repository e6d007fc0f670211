"""A recovery store file in Bytewax 0.21.1's layout, made by hand for tests of its readers."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


def make_store(folder: Path, *snapshots: tuple[str, str]) -> None:
    """FOLDER/part-0.sqlite3 holding a snapshot of each (step id, state key) of SNAPSHOTS."""
    with contextlib.closing(sqlite3.connect(folder / "part-0.sqlite3")) as db, db:
        db.execute("CREATE TABLE parts (part_index INTEGER, part_count INTEGER)")
        db.execute("CREATE TABLE exs (ex_num INTEGER, worker_count INTEGER,"
                   " resume_epoch INTEGER)")
        db.execute("CREATE TABLE fronts (ex_num INTEGER, worker_index INTEGER,"
                   " worker_frontier INTEGER)")
        db.execute("CREATE TABLE snaps (step_id TEXT, state_key TEXT, snap_epoch INTEGER,"
                   " ser_change BLOB)")
        db.executemany("INSERT INTO snaps VALUES (?, ?, 1, NULL)", snapshots)
