"""The recovery store as the pipeline reads it: the partitions it holds state for."""

from __future__ import annotations

import sqlite3

import pytest

from connectors.recovery_store import RecoveryStoreError, with_state_keys
from tests.recovery_stores import make_store


def test_partitions_with_state_stay_listed(tmp_path):
    make_store(tmp_path, ("flow.load", "ks.gone:0/2"), ("flow.load", "ks.gone:0/2"),
           ("flow.other", "ks.else:0/1"))
    assert with_state_keys(tmp_path, "flow.load", ["ks.t:1/2", "ks.t:0/2"]) == [
        "ks.gone:0/2", "ks.t:0/2", "ks.t:1/2"]
    # Without a recovery store nothing resumes: the current ones are all there is.
    assert with_state_keys(None, "flow.load", ["c"]) == ["c"]
    assert with_state_keys(tmp_path / "absent", "flow.load", ["c"]) == ["c"]


def test_a_store_of_another_layout_is_refused_by_name(tmp_path):
    with sqlite3.connect(tmp_path / "part-0.sqlite3") as db:
        db.execute("CREATE TABLE snaps (step TEXT)")
    with pytest.raises(RecoveryStoreError, match="part-0.sqlite3: table parts has columns"):
        with_state_keys(tmp_path, "flow.load", ["a"])


def test_a_store_file_sqlite_cannot_read_is_named(tmp_path):
    """Half made by another process's `bytewax.recovery`, say: the error names the file."""
    (tmp_path / "part-0.sqlite3").write_bytes(b"not a database, not yet")
    with pytest.raises(RecoveryStoreError, match=r"part-0\.sqlite3: DatabaseError"):
        with_state_keys(tmp_path, "flow.load", ["a"])


def test_the_load_needs_its_step_id_to_read_the_store(tmp_path):
    """Without it, no state key matched, and the store's ranges went unlisted: Bytewax's
    refusal would have come only after a loaded table was dropped."""
    from connectors.cassandra.snapshot import SnapshotSource

    with pytest.raises(ValueError, match="step_id .* is needed with a recovery_directory"):
        SnapshotSource(lambda: None, list, recovery_directory=tmp_path)
    SnapshotSource(lambda: None, list, recovery_directory=tmp_path, step_id="flow.load")
    SnapshotSource(lambda: None, list)  # no store: nothing to read
