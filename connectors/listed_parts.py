"""The partitions a source has ever listed, kept in the recovery store.

Bytewax refuses to start when its recovery store holds state for a partition that no worker
lists any more ("Key ... is not in this worker's routing map"): a source whose partitions come
and go with the schema (the initial load's, one per table and token range) would then stop at
every start after a table it loaded was dropped, or its ranges were cut differently. So such a
source lists, besides its current partitions, every one it listed before, as recorded in one
file of the recovery directory, ``listed-parts-<step>.json``; it builds those as finished.
Without a recovery store nothing resumes, and the current partitions are all there is.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from connectors.path_names import path_component
from connectors.private_files import fsync_directory

__all__ = ["with_listed_before"]


def with_listed_before(directory: Path | None, step: str, current: Iterable[str]
                       ) -> list[str]:
    """CURRENT and every partition STEP listed before (recorded in DIRECTORY, the recovery
    store, which now records them all), sorted; CURRENT alone without a store."""
    current = set(current)
    if directory is None or not Path(directory).is_dir():
        return sorted(current)
    path = Path(directory) / f"listed-parts-{path_component(step)}.json"
    before = _read(path)
    every = current | before
    if not current <= before:
        _write(path, sorted(every))
    return sorted(every)


def _read(path: Path) -> set[str]:
    try:
        listed = json.loads(path.read_bytes())
    except FileNotFoundError:
        return set()
    except ValueError as error:
        raise ValueError(f"the list of partitions {path} does not read back"
                         f" ({type(error).__name__}); it names the partitions the recovery"
                         " store may hold state for: restore it, or empty the recovery store"
                         " with it") from None
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise ValueError(f"the list of partitions {path} is not a list of names")
    return set(listed)


def _write(path: Path, parts: list[str]) -> None:
    """Replace PATH by PARTS at once (a crash leaves the old list or the new one). Processes
    listing at the same time write the same union of what they list."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".listed-")
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(parts, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
