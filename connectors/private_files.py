"""Files of the pipeline's own that hold clear data or positions: the owner's only, synced.

Dead letters and the audit trail append to files that must be the owner's only (0600, in a
0700 directory when it is made here), an existing file too; the spool and the start pins make
a new name durable by syncing its directory.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["fsync_directory", "open_private_append"]


def open_private_append(path: Path) -> BinaryIO:
    """PATH, a file of lines, opened for appending, created if missing: its directory made for
    the owner only (0700) if it is not there, the file the owner's only (0600), one an older
    run left with the default mode as well. A new file's name, and any directory made for it,
    is made durable at once (the first batch's fsync covers the data, not the name). A last
    line left unfinished (a crash or a full disk mid-write) is ended first, so the next line
    starts on its own instead of gluing itself to the fragment (the fragment stays)."""
    _make_directories(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        created = True
    except FileExistsError:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        created = False
    try:
        os.fchmod(fd, 0o600)
        if created:
            fsync_directory(path.parent)
        else:
            _end_last_line(fd)
    except BaseException:
        os.close(fd)
        if created:  # else the next start finds it made and skips what failed here
            path.unlink(missing_ok=True)
        raise
    return os.fdopen(fd, "ab")


def _make_directories(directory: Path) -> None:
    """DIRECTORY and its missing parents, each 0700, each name synced into its parent."""
    if directory.is_dir():
        return
    _make_directories(directory.parent)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        return  # made meanwhile (another worker)
    try:
        fsync_directory(directory.parent)
    except BaseException:
        with contextlib.suppress(OSError):  # not empty: another worker's file is in it
            directory.rmdir()  # as for a file: the next start must not skip the sync
        raise


def _end_last_line(fd: int) -> None:
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        os.write(fd, b"\n")
        os.fsync(fd)


def fsync_directory(directory: Path) -> None:
    """Make the names created, renamed or removed in DIRECTORY durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
