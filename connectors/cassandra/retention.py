"""Deleting the cdc_raw segments no restart can ever ask for again (docs/adr/0004).

A node's capture partition calls ``SegmentJanitor.tick`` between batches. At most once per
interval it asks the recovery store for the *replay floor* of the partition: the oldest position
from which any restart could resume it. Every segment wholly before that floor is deleted.

The floor is computed the way Bytewax 0.21.1 resumes (its ``recovery.rs``):

- the resume epoch R is that of the newest execution, as far as all its workers' frontiers
  (``exs`` and ``fronts``) have advanced: the minimum over workers of their newest frontier;
- a restart loads, for each state key, the newest snapshot with ``snap_epoch < R``.

Older snapshots still in the store are kept by Bytewax for its backup interval (its GC keeps
everything after the committed epoch), so the floor is the *oldest* snapshot of the partition
kept with ``snap_epoch < R``: a restore from a backup inside that interval is covered too.

Everything in an epoch before R was written by every sink (Bytewax's frontier passes an epoch
only when all outputs finished it), so a segment before the floor holds nothing that is not
durable in every destination.

Anything unexpected in the store (another Bytewax version, a partition file missing, a snapshot
that does not unpickle to a Cursor) stops deletion with an error naming what was wrong: deleting
on a guess could lose changes; not deleting only fills cdc_raw, which the usage gauges show.
"""

from __future__ import annotations

import logging
import pickle
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from prometheus_client import Counter, Gauge

from connectors.cassandra.tail import Cursor, SegmentFile, SegmentStore
from connectors.recovery_store import (
    BYTEWAX_VERSION,
    RecoveryStoreError,
    check_layout,
    part_files,
    read_only,
)

log = logging.getLogger(__name__)


USAGE = Gauge("cdc_raw_usage_bytes", "Bytes in a node's cdc_raw directory", ["node"])
CAPACITY = Gauge("cdc_raw_capacity_bytes",
                 "The node's cdc_total_space: writes to CDC tables stop when usage reaches it",
                 ["node"])
OLDEST_AGE = Gauge("cdc_raw_oldest_segment_age_seconds",
                   "Age of the oldest segment still in a node's cdc_raw", ["node"])
DELETED = Counter("cdc_raw_segments_deleted", "Consumed cdc_raw segments deleted", ["node"])
FLOOR_ERRORS = Counter("cdc_raw_deletion_errors",
                       "Deletion passes refused because the recovery store was not as expected",
                       ["node"])


def replay_floor(directory: Path, step_id: str, state_key: str) -> Cursor | None:
    """The oldest cursor a restart from DIRECTORY could resume the partition STATE_KEY of input
    STEP_ID at; None when no restart would resume it from a snapshot (nothing may be deleted)."""
    if version("bytewax") != BYTEWAX_VERSION:
        raise RecoveryStoreError(
            f"bytewax {version('bytewax')} is installed; segment deletion reads the recovery "
            f"store of bytewax {BYTEWAX_VERSION} only")
    files = part_files(directory)
    if not files:
        raise RecoveryStoreError(f"no recovery partitions (part-*.sqlite3) in {directory}")
    parts: set[int] = set()
    counts: set[int] = set()
    executions: dict[int, tuple[int, int]] = {}  # ex_num -> (worker_count, resume_epoch)
    fronts: list[tuple[int, int, int]] = []
    snapshots: list[tuple[int, bytes | None]] = []
    for file in files:
        with read_only(file) as db:
            check_layout(db, file)
            for index, count in db.execute("SELECT part_index, part_count FROM parts"):
                parts.add(index)
                counts.add(count)
            for ex, workers, resume in db.execute(
                    "SELECT ex_num, worker_count, resume_epoch FROM exs"):
                executions[ex] = (workers, resume)
            fronts.extend(db.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts"))
            snapshots.extend(db.execute(
                "SELECT snap_epoch, ser_change FROM snaps WHERE step_id = ? AND state_key = ?",
                (step_id, state_key)))
    if len(counts) != 1 or parts != set(range(next(iter(counts)))):
        raise RecoveryStoreError(
            f"recovery partitions in {directory} are incomplete (found {sorted(parts)} of "
            f"{sorted(counts)}): the resume epoch cannot be known from here")
    resume = _resume_epoch(executions, fronts)
    if resume is None:
        return None
    kept = sorted((epoch, change) for epoch, change in snapshots if epoch < resume)
    if not kept or kept[0][1] is None:
        return None
    state = pickle.loads(kept[0][1])  # noqa: S301 - our own Cursor, written by our own process
    if state is not None and not isinstance(state, Cursor):
        raise RecoveryStoreError(
            f"the snapshot of {step_id}/{state_key} is a {type(state).__name__}, not a Cursor")
    return state


def _resume_epoch(executions: dict[int, tuple[int, int]],
                  fronts: list[tuple[int, int, int]]) -> int | None:
    """Bytewax 0.21.1's resume epoch: the newest execution's epoch that every worker passed."""
    if not executions:
        return None
    newest = max(executions)
    workers, resume = executions[newest]
    frontier = dict.fromkeys(range(workers), resume)
    for ex, worker, front in fronts:
        if ex == newest and worker in frontier:
            frontier[worker] = max(frontier[worker], front)
    return min(frontier.values())


def deletable(segments: list[SegmentFile], floor: Cursor | None) -> list[SegmentFile]:
    """The segments wholly before FLOOR: no resume can start in or before them."""
    if floor is None:
        return []
    return [s for s in segments if s.segment_id < floor.segment_id
            or (s.segment_id == floor.segment_id and floor.done)]


@dataclass(frozen=True)
class RetentionSettings:
    """How a node's consumed segments are cleaned up; ``recovery_directory`` None: never."""

    recovery_directory: Path | None
    capacity_bytes: int | None = None  # the node's cdc_total_space, for the usage gauges
    interval_seconds: float = 5.0
    warn_fraction: float = 0.8


class SegmentJanitor:
    """Deletes a node's consumed segments and keeps its cdc_raw gauges current."""

    def __init__(self, node: str, store: SegmentStore, step_id: str,
                 settings: RetentionSettings, *,
                 floor: Callable[[Path, str, str], Cursor | None] = replay_floor,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._node = node
        self._store = store
        self._step_id = step_id
        self._settings = settings
        self._floor = floor
        self._clock = clock
        self._next = clock()
        self._refused: str | None = None
        if settings.capacity_bytes:
            CAPACITY.labels(node).set(settings.capacity_bytes)
        if settings.recovery_directory is None:
            log.warning("cdc_raw of %s: no recovery directory configured, so consumed segments "
                        "are never deleted; Cassandra stops CDC writes when cdc_raw is full",
                        node)

    def tick(self, live: Cursor | None) -> list[SegmentFile]:
        """At most once per interval: delete what is wholly before both the replay floor and
        LIVE (the partition's own cursor), then update the gauges. Returns what was deleted."""
        now = self._clock()
        if now < self._next:
            return []
        self._next = now + self._settings.interval_seconds
        removed = self._delete(live) if self._settings.recovery_directory is not None else []
        self._measure()
        return removed

    def _delete(self, live: Cursor | None) -> list[SegmentFile]:
        try:
            floor = self._floor(self._settings.recovery_directory, self._step_id, self._node)
        except (RecoveryStoreError, sqlite3.Error) as error:
            FLOOR_ERRORS.labels(self._node).inc()
            if str(error) != self._refused:  # once per distinct problem, not every interval
                log.error("cdc_raw of %s: not deleting consumed segments: %s", self._node, error)
                self._refused = str(error)
            return []
        self._refused = None
        segments = self._store.segments()
        removed = [s for s in deletable(segments, floor) if s in deletable(segments, live)]
        for segment in removed:
            self._store.delete(segment)
            DELETED.labels(self._node).inc()
            log.info("cdc_raw of %s: deleted consumed segment %s", self._node, segment.path.name)
        return removed

    def _measure(self) -> None:
        usage = self._store.usage_bytes()
        USAGE.labels(self._node).set(usage)
        segments = self._store.segments()
        if segments:
            try:
                age = time.time() - segments[0].path.stat().st_mtime
            except FileNotFoundError:
                age = 0.0
            OLDEST_AGE.labels(self._node).set(max(age, 0.0))
        capacity = self._settings.capacity_bytes
        if capacity and usage >= self._settings.warn_fraction * capacity:
            log.warning("cdc_raw of %s holds %d of %d bytes (cdc_total_space): Cassandra stops "
                        "CDC writes when it is full", self._node, usage, capacity)
