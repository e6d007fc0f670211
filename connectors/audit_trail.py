"""The masking audit trail: what each masked batch did, column by column, as JSON lines.

The masking step calls `AuditTrail.record` with every batch's `BatchAudit`
(operators/masking/masker.py): the table, how many rows, and per column its strategy, data
class, why (listed in the policy, detected by name, unlisted) and how many values and NULLs it
had. No value, no key, no token is in it: it says how data left, not what left, so it can be
kept and read where the data may not be.

One file per process, ``<directory>/masking-audit-<host>-<pid>.jsonl`` (pods sharing a volume
have a name each, and often the same pid; appended, the owner's only,
0600 in a 0700 directory). Each record is written and flushed as its batch is masked, and
fsynced at most once a second (and at close): a crash can lose the last second of records, and
a replayed epoch writes its batches' records again (at-least-once, as the dead letters).
Rotating and keeping the files is the operator's (they only grow; `copytruncate` works, since
every write appends).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from connectors.path_names import path_component
from connectors.private_files import open_private_append
from operators.masking import BatchAudit

__all__ = ["AuditTrail"]

SYNC_INTERVAL = 1.0  # seconds between fsyncs


class AuditTrail:
    """Appends `BatchAudit` records to this process's audit file (see the module docstring).
    Thread-safe: a process's workers share it."""

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._file = None
        self._synced = 0.0

    @property
    def path(self) -> Path:
        host = path_component(socket.gethostname())
        return self.directory / f"masking-audit-{host}-{os.getpid()}.jsonl"

    def record(self, audit: BatchAudit) -> None:
        line = orjson.dumps({
            "at": self._clock(), "keyspace": audit.keyspace, "table": audit.table,
            "rows": audit.rows,
            "columns": [{"column": c.column, "strategy": str(c.strategy),
                         "class": str(c.data_class), "basis": str(c.basis),
                         "values": c.values, "nulls": c.nulls} for c in audit.columns],
        }) + b"\n"
        with self._lock:
            file = self._open()
            file.write(line)
            file.flush()
            now = self._monotonic()
            if now - self._synced >= SYNC_INTERVAL:
                os.fsync(file.fileno())
                self._synced = now

    def _open(self):
        if self._file is None:
            self._file = open_private_append(self.path)
        return self._file

    def close_after_opening(self) -> None:
        """Open (create) the file and close it: whether this process can keep its trail."""
        with self._lock:
            self._open()
        self.close()

    def close(self) -> None:
        with self._lock:
            file, self._file = self._file, None
        if file is not None:
            file.flush()
            os.fsync(file.fileno())
            file.close()
