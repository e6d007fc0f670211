"""`start_from: "latest"` fixed once, in the recovery store, not at every start.

A capture partition without recovery state starts at the end of its node's commit log as it
is when the flow is built. Until the first epoch is committed, Bytewax has no state for it, so
a start that failed before then (a sink's configuration error, say) and a later one would each
take "the end" anew, and the writes acknowledged in between would never be captured. So the
first start pins each node's cursor in the recovery directory, and later starts without state
use the pin. One file per node, ``cdc-start-latest-<node>.json``, published by a hard link, so
that when several processes build the flow at once the first pin stays and every process
uses it. Once Bytewax has state for a node's partition, its pin is of no more use and is
removed (`release`), so a recovery store emptied to start over does not start from an old pin.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from connectors.cassandra.tail import Cursor
from connectors.path_names import path_component
from connectors.private_files import fsync_directory

__all__ = ["pinned", "release"]


def pinned(directory: Path | None, latest: Mapping[str, Cursor | None]
           ) -> dict[str, Cursor | None]:
    """Per node, the cursor pinned in DIRECTORY (the recovery store) by the first start, else
    LATEST's, which is pinned now. Without a recovery store (nothing resumes), LATEST."""
    if directory is None or not Path(directory).is_dir():
        return dict(latest)
    return {node: _pin(Path(directory), node, cursor) for node, cursor in latest.items()}


def release(directory: Path | None, node: str) -> None:
    """Remove NODE's pin: its partition has Bytewax state, which every later start takes."""
    if directory is not None:
        _path(Path(directory), node).unlink(missing_ok=True)


def _path(directory: Path, node: str) -> Path:
    return directory / f"cdc-start-latest-{path_component(node)}.json"


def _pin(directory: Path, node: str, cursor: Cursor | None) -> Cursor | None:
    path = _path(directory, node)
    if not path.exists():
        data = json.dumps(None if cursor is None else {
            "segment_id": cursor.segment_id, "offset": cursor.offset, "done": cursor.done})
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".pin-")
        try:
            with os.fdopen(fd, "w") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temporary, path)  # atomic; fails if another process pinned first
            except FileExistsError:
                pass
        finally:
            os.unlink(temporary)
        fsync_directory(directory)
    try:
        stored = json.loads(path.read_text())
        return None if stored is None else Cursor(int(stored["segment_id"]),
                                                  int(stored["offset"]), bool(stored["done"]))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"the start pin {path} does not read back ({type(error).__name__}): "
                         "remove it to start from the end of the log as it is now") from None
