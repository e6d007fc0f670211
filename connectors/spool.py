"""A durable spool in front of a destination sink, so one destination down stalls nobody else.

A Bytewax worker is one thread: a sink whose ``write_batch`` blocks while its database is down
would stall every step and every other sink of the worker. `SpooledSink` wraps a
`FixedPartitionedSink` (docs/adr/0006): each partition's ``write_batch`` appends the batch to an
append-only file on local disk (a length + CRC32 frame, fsynced) and returns; a thread per
partition drains the spool, in order, into the wrapped partition's ``write_batch`` and records
how far it got (a cursor file replaced atomically) only after that write committed.

- Order: one partition's batches reach the wrapped partition in the order they were written.
- Durability: a batch is on disk before ``write_batch`` returns, so before Bytewax can commit
  its epoch. After a crash the drainer starts again at the cursor: the batch that was being
  written may be written again, and Bytewax's replay appends batches again. The destination
  sinks apply row images with version guards, so both are harmless (ADR 0003, 0006).
- Back-pressure: past ``max_bytes`` undrained, ``write_batch`` blocks until the drainer frees
  space. Memory holds one batch per partition; disk at most ``max_bytes`` (or one batch).
- Errors: what ``transient`` accepts (the destination is down, a timeout) is retried for ever
  with backoff; anything else stops the drainer, is logged and counted, and is raised by the
  next ``write_batch`` (and by ``close``) as `SpoolDrainError`; the batch stays spooled and is
  retried first at the next start.

Layout of one partition's directory: ``lock`` (flock: one owner at a time), ``cursor`` (JSON,
the next frame to drain), ``closed`` (empty: the last run closed the spool, so no write of it
was torn; removed at open), ``<segment id>.spool`` segment files of frames
``<u32 payload length><u32 crc32(time + payload)><f64 append time><payload>``, little-endian.
The payload is the batch in a tagged format (connectors/spool_format.py: row operations as
columns, anything else pickled; the items are the pipeline's own dataclasses and the driver's
value types, which JSON would not round-trip); the spool is private to the process's own disk,
never read from elsewhere.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from prometheus_client import Counter, Gauge
from typing_extensions import override

from connectors.health import HEALTH
from connectors.path_names import path_component
from connectors.private_files import fsync_directory
from connectors.spool_format import decode_batch, encode_batch
from connectors.tracing import tracer

__all__ = ["Spool", "SpoolCorruptError", "SpoolDrainError", "SpooledSink", "left_behind",
           "undrained_bytes"]

# Undrained batches older than this make the destination not ready (connectors/health.py).
LAG_TROUBLE_SECONDS = 30.0

log = logging.getLogger(__name__)

X = TypeVar("X")  # the items of the wrapped sink

_HEADER = struct.Struct("<IId")
_CLOSED = "closed"  # an empty file: the last run closed the spool (no write torn)
_SUFFIX = ".spool"
_MAX_PAYLOAD = 2**32 - 1

UNDRAINED = Gauge("cdc_spool_undrained_bytes",
                  "Bytes spooled for a destination partition and not yet written to it",
                  ["destination", "partition"])
LAG = Gauge("cdc_spool_drain_lag_seconds",
            "Age of the oldest batch spooled for a destination partition and not yet written",
            ["destination", "partition"])
DRAINED = Counter("cdc_spool_batches_drained",
                  "Batches written from the spool into their destination",
                  ["destination", "partition"])
DRAIN_ERRORS = Counter("cdc_spool_drain_errors",
                       "Failed writes of a spooled batch (transient: retried; fatal: stops),"
                       " and of the spool's own position on a full disk (local_disk: retried)",
                       ["destination", "partition", "kind"])


class SpoolDrainError(RuntimeError):
    """The drainer stopped on an error that retrying will not fix (its cause is chained)."""


class SpoolCorruptError(RuntimeError):
    """A frame the spool had written and synced does not read back (a disk or a foreign
    write): never skipped, since skipping would lose a batch Bytewax considers written."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One spooled batch: where it is, when it was appended, its payload."""

    segment: int
    offset: int
    end: int
    appended_at: float
    payload: bytes


class Spool:
    """One partition's durable FIFO of byte payloads: one writer thread, one reader thread.

    Opening takes the directory's lock (a second opener fails), drops segments the cursor is
    past, and truncates a torn frame at the end of a segment (a write that never returned, so
    one nobody was told is durable). Writes always go to a new segment."""

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int) -> None:
        if max_bytes < 1 or segment_bytes < 1:
            raise ValueError("Spool: max_bytes and segment_bytes must be >= 1")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._cond = threading.Condition()
        self._uncut = False  # a failed append could not be cut back (see close)
        self._stopping = False  # close(): the reader returns None once nothing is left
        self._aborted = False   # abort(): the reader and blocked writers give up now
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RuntimeError(f"spool {self.directory} is open in another process") from None
        try:
            self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _open(self) -> None:
        self._cursor, closed = _read_cursor(self.directory)
        paths: dict[int, Path] = {}
        for path in self.directory.glob(f"*{_SUFFIX}"):
            segment = int(path.stem)
            if segment < self._cursor[0]:
                path.unlink()  # drained; its deletion did not happen before a crash
                continue
            paths[segment] = path
        # Only the last run's newest segment can end in a write that never returned, and only
        # if that run did not close: anything else that does not read back is damage.
        torn_possible = None if closed or not paths else max(paths)
        sizes = {segment: self._valid_size(path, torn_possible=segment == torn_possible)
                 for segment, path in paths.items()}
        if closed:  # from now on a crash is possible again (an unlink: needs no free space)
            (self.directory / _CLOSED).unlink(missing_ok=True)
            if self._cursor_says_closed():  # an older version's mark: the cursor holds it
                self._write_cursor(*self._cursor)
            fsync_directory(self.directory)
        self._sizes = sizes  # segment -> bytes of whole frames (sealed ones: final)
        self._active = max([*sizes, self._cursor[0]]) + 1
        self._active_fd = os.open(self._path(self._active),
                                  os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fsync_directory(self.directory)
        self._sizes[self._active] = 0
        segment, offset = self._cursor
        self.pending_bytes = sum(sizes.values()) - (offset if segment in sizes else 0)
        self.head_appended_at: float | None = None  # the frame the reader is on, if any
        self._read_fd: tuple[int, int] | None = None  # (segment, fd)

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:016d}{_SUFFIX}"

    def _valid_size(self, path: Path, *, torn_possible: bool) -> int:
        """Bytes of the whole, checksummed frames of PATH. A write a crash interrupted never
        returned, so nobody was told it is durable: its bytes are cut off, where they can be
        one (TORN_POSSIBLE: the newest segment of a run that did not close) and no whole frame
        follows them (the write was the last). It left a prefix of its frame (a header cut
        short, a length past the end of the file), or, after a power loss, pages of it that
        never reached the disk (a bad checksum, zeros). Anything else that does not check out
        is damage to synced frames (anything in a sealed segment or a closed spool, or a bad
        frame with whole frames after it, as a damaged length leaves): SpoolCorruptError, and
        the file is left as it was."""
        with path.open("r+b") as file:
            data = file.read()
            end, problem = _whole_frames(data)
            if problem is None:
                return end
            torn = torn_possible and (not data[end:].strip(b"\x00")
                                      or _whole_frame_after(data, end) is None)
            if not torn:
                raise SpoolCorruptError(
                    f"spool {self.directory}: the frame at {path.name} offset {end} {problem}, "
                    f"with {len(data) - end} bytes from it to the end of the file, and no "
                    "unfinished write can be there: the file was damaged after it was "
                    "synced; nothing was dropped. Restore the file; or cut it at that offset "
                    f"(truncate -s {end} {path}), which keeps the frames before it and loses "
                    "the batches from it on")
            log.warning("spool %s: %d bytes of an unfinished write after the last whole "
                        "frame dropped", path, len(data) - end)
            file.truncate(end)
            os.fsync(file.fileno())
        return end

    # -- the writer (Bytewax's worker thread) --

    def append(self, payload: bytes, *, appended_at: float | None = None,
               give_up: Callable[[], bool] = lambda: False) -> None:
        """Append PAYLOAD and fsync it. Blocks while the spool holds more than max_bytes
        undrained (unless empty: one batch larger than max_bytes still goes through);
        GIVE_UP() true (checked every 0.5 s) or abort() ends the wait with SpoolDrainError."""
        if len(payload) > _MAX_PAYLOAD:
            raise ValueError(f"spool {self.directory}: a batch of {len(payload)} bytes is "
                             "larger than a frame can hold")
        at = time.time() if appended_at is None else appended_at
        stamp = struct.pack("<d", at)
        frame = _HEADER.pack(len(payload), zlib.crc32(payload, zlib.crc32(stamp)), at) + payload
        with self._cond:
            while self.pending_bytes and self.pending_bytes + len(frame) > self.max_bytes:
                if self._aborted or give_up():
                    raise SpoolDrainError(f"spool {self.directory}: the drainer stopped "
                                          "while this write waited for space")
                self._cond.wait(0.5)
            if self._sizes[self._active] and \
                    self._sizes[self._active] + len(frame) > self._segment_bytes:
                self._roll()
            segment, start = self._active, self._sizes[self._active]
        try:
            _write_all(self._active_fd, frame)
            os.fsync(self._active_fd)
        except BaseException:
            try:  # leave no partial frame behind a later one
                os.ftruncate(self._active_fd, start)
            except OSError:
                self._uncut = True  # a partial frame stays: not a clean close
                log.exception("spool %s: cannot cut a failed write back", self.directory)
            raise
        with self._cond:
            self._sizes[segment] = start + len(frame)
            self.pending_bytes += len(frame)
            self._cond.notify_all()

    def _roll(self) -> None:
        """Seal the active segment (already synced) and start the next one (lock held)."""
        os.close(self._active_fd)
        self._active += 1
        self._active_fd = os.open(self._path(self._active),
                                  os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fsync_directory(self.directory)
        self._sizes[self._active] = 0

    # -- the reader (the drainer thread) --

    def next_frame(self, timeout: float | None = None) -> Frame | None:
        """The oldest undrained frame (the same one until ack()), waiting for one. None after
        abort(), after close() once nothing is left, or when TIMEOUT passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._aborted:
                    return None
                segment, offset = self._cursor
                later = [s for s in self._sizes if s > segment]
                size = self._sizes.get(segment, 0)
                if offset < size:
                    break
                if later and segment != self._active:
                    self._advance(min(later))  # a sealed segment read to its end
                    continue
                if self._stopping:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
        frame = self._read(segment, offset, size)
        with self._cond:
            self.head_appended_at = frame.appended_at
        return frame

    def _read(self, segment: int, offset: int, size: int) -> Frame:
        if self._read_fd is None or self._read_fd[0] != segment:
            self._close_reader()
            self._read_fd = (segment, os.open(self._path(segment), os.O_RDONLY))
        fd = self._read_fd[1]
        header = os.pread(fd, _HEADER.size, offset)
        if len(header) == _HEADER.size:
            length, crc, at = _HEADER.unpack(header)
            end = offset + _HEADER.size + length
            if end <= size:
                payload = os.pread(fd, length, offset + _HEADER.size)
                if zlib.crc32(payload, zlib.crc32(header[8:])) == crc:
                    return Frame(segment, offset, end, at, payload)
        raise SpoolCorruptError(f"spool {self.directory}: the frame at segment {segment}, "
                                f"offset {offset} does not read back as it was written")

    def next_frames(self, max_bytes: int, timeout: float | None = None) -> list[Frame]:
        """next_frame() and the frames after it in its segment, while they add up to less
        than MAX_BYTES: a backlog is written in fewer, larger batches. Empty: see next_frame."""
        first = self.next_frame(timeout)
        if first is None:
            return []
        frames, size = [first], first.end - first.offset
        with self._cond:
            limit = self._sizes[first.segment]
        while frames[-1].end < limit and size < max_bytes:
            frames.append(self._read(first.segment, frames[-1].end, limit))
            size += frames[-1].end - frames[-1].offset
        return frames

    def ack(self, frames: list[Frame]) -> None:
        """FRAMES (consecutive, from next_frames) were written to the destination: record it
        durably, free their bytes."""
        last = frames[-1]
        self._write_cursor(last.segment, last.end)
        with self._cond:
            self._cursor = (last.segment, last.end)
            self.pending_bytes -= last.end - frames[0].offset
            self.head_appended_at = None
            self._cond.notify_all()

    def _advance(self, segment: int) -> None:
        """Delete the drained segments and move the cursor to the start of SEGMENT (lock held).
        Deleted first, so that a full disk gets their space back before the cursor needs a
        new file: the cursor already says they were drained (the last ack recorded the end of
        the last one), and an open handles a cursor in a segment that is gone."""
        done = [s for s in self._sizes if s < segment]
        if self._read_fd is not None and self._read_fd[0] in done:
            self._close_reader()
        for old in done:
            del self._sizes[old]
            self._path(old).unlink(missing_ok=True)
        self._write_cursor(segment, 0)
        self._cursor = (segment, 0)

    def _cursor_says_closed(self) -> bool:
        return _read_cursor(self.directory, legacy_only=True)[1]

    def _write_cursor(self, segment: int, offset: int) -> None:
        temporary = self.directory / "cursor.tmp"
        with temporary.open("wb") as file:
            file.write(json.dumps({"segment": segment, "offset": offset}).encode())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.directory / "cursor")
        fsync_directory(self.directory)

    def _close_reader(self) -> None:
        if self._read_fd is not None:
            os.close(self._read_fd[1])
            self._read_fd = None

    # -- lifecycle --

    def wait_aborted(self, seconds: float) -> bool:
        """Sleep up to SECONDS, waking early on abort(); True if aborted."""
        with self._cond:
            self._cond.wait_for(lambda: self._aborted, seconds)
            return self._aborted

    def stop_when_empty(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Release the files (the reader must have stopped). Segments are removed when all
        is drained; everything undrained stays for the next open."""
        self._close_reader()
        os.close(self._active_fd)
        try:
            if not self.pending_bytes:  # all drained: no file left but the cursor
                for segment in self._sizes:
                    self._path(segment).unlink(missing_ok=True)
            # Last: no write can be torn now, so the next open treats every frame that does
            # not read back as damage (an empty file: no data block needed). Not after a
            # failed write that could not be cut back: its bytes are that kind of tail. Without
            # the mark, the next open allows for an unfinished write as after a crash.
            if not self._uncut:
                try:
                    (self.directory / _CLOSED).touch()
                    fsync_directory(self.directory)
                except OSError as error:
                    log.warning("spool %s: cannot record the clean close (%s)", self.directory,
                                error.strerror or type(error).__name__)
        finally:
            os.close(self._lock_fd)


def _whole_frames(data: bytes) -> tuple[int, str | None]:
    """(bytes of the whole, checksummed frames at the start of DATA, what is wrong with the
    frame after them: None if there is none, "is cut short" (a header or a body past the
    end), "fails its checksum")."""
    end = 0
    while end < len(data):
        if end + _HEADER.size > len(data):
            return end, "is cut short"
        length, crc, _ = _HEADER.unpack_from(data, end)
        body_end = end + _HEADER.size + length
        if body_end > len(data):
            return end, "is cut short"
        if zlib.crc32(data[end + 8:body_end]) != crc:
            return end, "fails its checksum"
        end = body_end
    return end, None


# A frame's append time, time.time() of a run between 2001 and 2286, has one of these as its
# last (most significant) byte: a cheap first test of where a whole frame could start.
_TIME_HIGH_BYTE = re.compile(rb"(?=[\s\S]{15}[\x41\x42])")


def _whole_frame_after(data: bytes, start: int) -> int | None:
    """The offset of a whole, checksummed frame that starts after START in DATA, if any: a
    frame whose length was damaged has such frames after it, an unfinished write does not (it
    was the last). A false match needs a plausible time and length and a matching CRC32."""
    for match in _TIME_HIGH_BYTE.finditer(data, start + 1):
        at = match.start()
        if at + _HEADER.size > len(data):
            return None
        length, crc, appended_at = _HEADER.unpack_from(data, at)
        body_end = at + _HEADER.size + length
        if 1e9 <= appended_at <= 1e10 and body_end <= len(data) and \
                zlib.crc32(data[at + 8:body_end]) == crc:
            return at
    return None


def _read_cursor(directory: Path, *, legacy_only: bool = False
                 ) -> tuple[tuple[int, int], bool]:
    """(the cursor of the partition's spool DIRECTORY, whether the last run closed the spool:
    then no write of it was torn). A spool an older version closed says so in its cursor
    (`"closed": true`) instead of the `closed` file; LEGACY_ONLY: that mark alone."""
    closed = not legacy_only and (directory / _CLOSED).exists()
    try:
        data = json.loads((directory / "cursor").read_text())
    except FileNotFoundError:
        return (0, 0), closed
    return (int(data["segment"]), int(data["offset"])), closed or data.get("closed") is True


def undrained_bytes(directory: Path) -> int:
    """Bytes of whole frames a partition's spool DIRECTORY holds past its cursor, read without
    opening it (no lock taken, nothing changed): what a run that never opens it would leave
    undrained."""
    (cursor_segment, cursor_offset), _ = _read_cursor(directory)
    total = 0
    for path in directory.glob(f"*{_SUFFIX}"):
        segment = int(path.stem)
        if segment >= cursor_segment:
            whole, _ = _whole_frames(path.read_bytes())
            total += max(0, whole - (cursor_offset if segment == cursor_segment else 0))
    return total


def left_behind(root: Path, expected: Mapping[str, Collection[str]]) -> list[tuple[Path, int]]:
    """The partition spools under ROOT that a flow writing EXPECTED (step id -> its partitions)
    never opens, with the bytes of batches they still hold (`undrained_bytes`), if any: left
    by a run whose destination had another name, more partitions, or a spool this one turns
    off. Their batches' epochs were committed, so nothing else will write them."""
    wanted = {(path_component(step), path_component(part))
              for step, parts in expected.items() for part in parts}
    found = []
    for folder in sorted(root.glob("*/*")) if root.is_dir() else ():
        if folder.is_dir() and (folder.parent.name, folder.name) not in wanted:
            left = undrained_bytes(folder)
            if left:
                found.append((folder, left))
    return found


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# The local disk's "full" errors: retried by the drainer (its bookkeeping frees space).
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class _Aborted(Exception):  # noqa: N818 - a signal, not an error
    """The spool was aborted while the drainer waited."""


class _SpooledPartition(StatefulSinkPartition[X, None], Generic[X]):
    def __init__(self, spool: Spool, inner: StatefulSinkPartition, *, step_id: str,
                 partition: str, transient: Callable[[BaseException], bool],
                 close_timeout: float, retry_backoff: float, retry_max_backoff: float,
                 drain_bytes: int) -> None:
        self._spool = spool
        self._drain_bytes = drain_bytes
        self._inner = inner
        self._labels = (step_id, partition)
        self._what = f"spool {step_id}/{partition}"
        self._transient = transient
        self._close_timeout = close_timeout
        self._retry_backoff = retry_backoff
        self._retry_max_backoff = retry_max_backoff
        self._failure: BaseException | None = None
        self._reported = 0.0  # when catch-up progress was last logged (monotonic)
        self._health = f"destination {step_id}/{partition}"
        HEALTH.ok(self._health)
        HEALTH.watch(self._health, self._lag_problem)
        UNDRAINED.labels(*self._labels).set_function(lambda: spool.pending_bytes)
        LAG.labels(*self._labels).set_function(self._lag)
        self._drainer = threading.Thread(target=self._drain, name=f"drain-{step_id}-{partition}",
                                         daemon=True)
        self._drainer.start()

    def _lag_problem(self) -> str | None:
        lag = self._lag()
        return f"{lag:.0f} s behind" if lag > LAG_TROUBLE_SECONDS else None

    def _lag(self) -> float:
        at = self._spool.head_appended_at
        return max(0.0, time.time() - at) if at is not None and self._spool.pending_bytes else 0.0

    @override
    def write_batch(self, values: list[X]) -> None:
        """Spool VALUES durably and return; blocks only while the spool is full. Raises
        SpoolDrainError once the drainer stopped on an error that retries cannot fix."""
        self._raise_failure()
        if not values:
            return
        self._spool.append(encode_batch(values), give_up=lambda: self._failure is not None)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise SpoolDrainError(
                f"{self._what}: writing a spooled batch failed with "
                f"{type(self._failure).__name__}, which is not transient; the batch stays "
                f"spooled and is retried first at the next start") from self._failure

    def _drain(self) -> None:
        try:
            while frames := self._on_local_disk(
                    lambda: self._spool.next_frames(self._drain_bytes)):
                batch = [item for frame in frames for item in decode_batch(frame.payload)]
                started = time.monotonic()
                if not self._write(batch):
                    return
                self._on_local_disk(lambda frames=frames: self._spool.ack(frames))
                DRAINED.labels(*self._labels).inc(len(frames))
                self._report(frames, len(batch), time.monotonic() - started)
        except _Aborted:
            return
        except BaseException as error:  # noqa: BLE001 - surfaced by write_batch and close
            self._fail(error)

    def _on_local_disk(self, action: Callable[[], Any]) -> Any:
        """ACTION's result: the spool's own reading and cursor writing, retried with backoff
        while the local disk is full (or over quota). Draining is what frees space there, so
        that is no reason to stop it; the destination is not to blame either. Raises _Aborted
        if the spool is aborted meanwhile."""
        pause = self._retry_backoff
        while True:
            try:
                return action()
            except OSError as error:
                if error.errno not in _DISK_FULL:
                    raise
                DRAIN_ERRORS.labels(*self._labels, "local_disk").inc()
                HEALTH.trouble(self._health, f"spool disk full ({errno.errorcode[error.errno]})"
                               ", retrying")
                log.warning("%s: the spool's disk is full (%s): cannot record the drained "
                            "position, retry in %.1fs", self._what,
                            errno.errorcode[error.errno], pause)
                if self._spool.wait_aborted(pause):
                    raise _Aborted from None
                pause = min(pause * 2, self._retry_max_backoff)

    def _report(self, frames: list[Frame], items: int, seconds: float) -> None:
        """While a backlog is being written, its progress at most every 10 s."""
        lag = time.time() - frames[0].appended_at
        now = time.monotonic()
        if lag > 10 and now - self._reported > 10:
            self._reported = now
            log.info("%s: catching up, wrote %d items (%d bytes spooled) in %.2fs; %d bytes "
                     "left, the oldest %.0fs old", self._what, items,
                     frames[-1].end - frames[0].offset, seconds, self._spool.pending_bytes, lag)

    def _write(self, batch: list) -> bool:
        """Write BATCH, retrying transient errors until it commits (True) or abort (False)."""
        with tracer().start_as_current_span("sink.write") as span:
            span.set_attributes({"destination": self._labels[0], "partition": self._labels[1],
                                 "operations": len(batch)})
            return self._write_retrying(batch, span)

    def _write_retrying(self, batch: list, span: Any) -> bool:
        pause = self._retry_backoff
        attempts = 0
        while True:
            attempts += 1
            span.set_attribute("attempts", attempts)
            try:
                self._inner.write_batch(batch)
                HEALTH.ok(self._health)
                return True
            except Exception as error:
                if not self._transient(error):
                    raise
                DRAIN_ERRORS.labels(*self._labels, "transient").inc()
                HEALTH.trouble(self._health, f"unavailable ({type(error).__name__}), retrying")
                # The class only: database messages can quote values.
                log.warning("%s: destination unavailable (%s), %d bytes spooled, retry in "
                            "%.1fs", self._what, type(error).__name__,
                            self._spool.pending_bytes, pause)
                if self._spool.wait_aborted(pause):
                    return False
                pause = min(pause * 2, self._retry_max_backoff)

    def _fail(self, error: BaseException) -> None:
        self._failure = error
        DRAIN_ERRORS.labels(*self._labels, "fatal").inc()
        HEALTH.fatal(self._health, f"stopped on {type(error).__name__}")
        log.error("%s: writing a spooled batch failed with %s, which is not transient: the "
                  "drainer stopped, the flow stops at its next write; the batch stays spooled",
                  self._what, type(error).__name__)
        self._spool.wake()

    @override
    def snapshot(self) -> None:
        """Nothing: the spool's position is its own cursor file, and the wrapped sinks keep
        theirs in the destination."""
        return None

    @override
    def close(self) -> None:
        """Drain what can be drained within close_timeout seconds, then close the wrapped
        partition. What is left stays spooled for the next start (logged)."""
        self._spool.stop_when_empty()
        self._drainer.join(self._close_timeout)
        if self._drainer.is_alive():
            self._spool.abort()
            self._drainer.join(self._close_timeout)
        try:
            if self._drainer.is_alive():
                # Still inside a write of the destination: closing its connection under it
                # would fail that write halfway. The process is ending; the batch stays
                # spooled and is written first at the next start.
                log.warning("%s: the destination's write did not return within %.0fs; "
                            "left to the process's end", self._what, 2 * self._close_timeout)
            else:
                self._inner.close()
        finally:
            if not self._drainer.is_alive():
                self._spool.close()
            left = self._spool.pending_bytes
            if left and self._failure is None:
                log.warning("%s: closed with %d bytes not yet written to the destination; "
                            "they are written at the next start", self._what, left)
            UNDRAINED.remove(*self._labels)
            LAG.remove(*self._labels)
            HEALTH.forget(self._health)
        self._raise_failure()


class SpooledSink(FixedPartitionedSink[X, None], Generic[X]):
    """INNER behind a durable spool per partition (see the module docstring).

    inner: a FixedPartitionedSink whose partitions keep no Bytewax state (snapshot None):
        they are always built with resume_state None. Its write_batch may be called again
        with a batch it already committed (after a crash), so it must be idempotent.
    directory: the spools' root; a partition's spool is ``<directory>/<step id>/<partition>``.
        Must survive restarts (a lost spool loses the batches Bytewax already committed).
    max_bytes: undrained bytes per partition past which write_batch blocks (back-pressure).
    transient(error): True for errors after which the same write may succeed (the
        destination down, a timeout): retried for ever, with backoff from retry_backoff to
        retry_max_backoff seconds. Anything else stops the flow (SpoolDrainError).
    segment_bytes: size after which a new segment file starts (drained ones are deleted);
        default: a quarter of max_bytes, at most 64 MiB.
    close_timeout: seconds close() waits for the drain (twice, the second after aborting
        the retries).
    drain_bytes: a backlog is written as batches of consecutive spooled batches up to about
        this many spooled bytes (fewer transactions while catching up; memory: one of them).
    Nothing is opened here: build_part opens the spool and starts its drainer.
    """

    def __init__(self, inner: FixedPartitionedSink, directory: Path | str, *, max_bytes: int,
                 transient: Callable[[BaseException], bool], segment_bytes: int | None = None,
                 close_timeout: float = 60.0, retry_backoff: float = 0.5,
                 retry_max_backoff: float = 5.0, drain_bytes: int = 2 * 1024 * 1024) -> None:
        if max_bytes < 1:
            raise ValueError("SpooledSink.max_bytes must be >= 1")
        if not 0 < retry_backoff <= retry_max_backoff:
            raise ValueError("SpooledSink: need 0 < retry_backoff <= retry_max_backoff")
        if close_timeout < 0:
            raise ValueError("SpooledSink.close_timeout must be >= 0")
        if drain_bytes < 1:
            raise ValueError("SpooledSink.drain_bytes must be >= 1")
        self.inner = inner
        self._directory = Path(directory)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes or max(1, min(max_bytes // 4, 64 * 1024 * 1024))
        self._transient = transient
        self._close_timeout = close_timeout
        self._retry = (retry_backoff, retry_max_backoff)
        self._drain_bytes = drain_bytes

    @override
    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    @override
    def part_fn(self, item_key: str) -> int:
        return self.inner.part_fn(item_key)

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: Any
                   ) -> _SpooledPartition[X]:
        spool = Spool(self._directory / path_component(step_id) / path_component(for_part),
                      max_bytes=self._max_bytes, segment_bytes=self._segment_bytes)
        try:
            inner = self.inner.build_part(step_id, for_part, None)
        except BaseException:
            spool.close()
            raise
        if spool.pending_bytes:
            log.info("spool %s/%s: %d bytes left by the last run are written first", step_id,
                     for_part, spool.pending_bytes)
        return _SpooledPartition(
            spool, inner, step_id=step_id, partition=for_part, transient=self._transient,
            close_timeout=self._close_timeout, retry_backoff=self._retry[0],
            retry_max_backoff=self._retry[1], drain_bytes=self._drain_bytes)
