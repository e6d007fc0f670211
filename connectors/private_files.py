"""Files of the pipeline's own that hold clear data or positions: the owner's only, synced.

Dead letters and the audit trail append to files that must be the owner's only (0600, in a
0700 directory when it is made here), an existing file too; the spool and the start pins make
a new name durable by syncing its directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["fsync_directory", "open_private_append"]


def open_private_append(path: Path) -> BinaryIO:
    """PATH opened for appending, created if missing: its directory made for the owner only
    (0700) if it is not there, the file the owner's only (0600), one an older run left with
    the default mode as well."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab")


def fsync_directory(directory: Path) -> None:
    """Make the names created, renamed or removed in DIRECTORY durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
