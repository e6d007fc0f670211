"""The destination spool (connectors/spool.py): order, durability across a SIGKILL, back-pressure,
close, errors. The spool is under test; behind it is a small real destination: a list (or, in a
child process, a file) that records every batch written to it.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from prometheus_client import REGISTRY

from connectors.spool import SpoolDrainError, SpooledSink
from devstack.paths import REPO_ROOT
from tests.waiting import wait_for


class ListSink(FixedPartitionedSink):
    """A destination that keeps each partition's batches in a list. `held` cleared: writes
    wait; `down`: writes raise ConnectionError (transient); `refuse(n)`: batch [n] raises
    ValueError (not transient)."""

    def __init__(self, partitions: int = 1) -> None:
        self.parts = [str(i) for i in range(partitions)]
        self.written: dict[str, list[list]] = {p: [] for p in self.parts}
        self.held = threading.Event()
        self.held.set()
        self.down = False
        self.refused: set = set()
        self.closed: list[str] = []

    def list_parts(self) -> list[str]:
        return self.parts

    def build_part(self, step_id, for_part, resume_state):
        assert resume_state is None
        return _ListPartition(self, for_part)

    def items(self, part: str = "0") -> list:
        return [item for batch in self.written[part] for item in batch]


class _ListPartition(StatefulSinkPartition):
    def __init__(self, sink: ListSink, part: str) -> None:
        self.sink, self.part = sink, part

    def write_batch(self, values):
        self.sink.held.wait()
        if self.sink.down:
            raise ConnectionError("destination down")
        if self.sink.refused & set(values):
            raise ValueError("refused")
        self.sink.written[self.part].append(list(values))

    def snapshot(self):
        return None

    def close(self):
        self.sink.closed.append(self.part)


def transient(error: BaseException) -> bool:
    return isinstance(error, ConnectionError)


def spooled(inner, directory: Path, **options) -> SpooledSink:
    options.setdefault("max_bytes", 1024 * 1024)
    options.setdefault("retry_backoff", 0.05)
    options.setdefault("retry_max_backoff", 0.2)
    return SpooledSink(inner, directory, transient=transient, **options)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.spool"))


def metric(name: str, step: str, part: str = "0", **labels) -> float | None:
    return REGISTRY.get_sample_value(name, {"destination": step, "partition": part, **labels})


def wait_until(condition, timeout: float = 10.0) -> None:
    wait_for(condition, "the spool's drainer", timeout, interval=0.01)


def test_batches_reach_the_destination_in_order_across_segments(tmp_path):
    inner = ListSink(2)
    sink = spooled(inner, tmp_path, segment_bytes=300)  # a new segment every few batches
    parts = {p: sink.build_part("order", p, None) for p in sink.list_parts()}
    for i in range(300):
        parts[str(i % 2)].write_batch([i, f"row {i}"])
    for part in parts.values():
        part.close()
    assert inner.items("0") == [x for i in range(0, 300, 2) for x in (i, f"row {i}")]
    assert inner.items("1") == [x for i in range(1, 300, 2) for x in (i, f"row {i}")]
    assert sorted(inner.closed) == ["0", "1"]
    assert segments(tmp_path) == []  # drained segments are deleted
    assert metric("cdc_spool_batches_drained_total", "order", "1") == 150


def test_write_batch_returns_while_the_destination_waits(tmp_path):
    inner = ListSink()
    inner.held.clear()
    part = spooled(inner, tmp_path).build_part("held", "0", None)
    started = time.monotonic()
    for i in range(50):
        part.write_batch([i])
    assert time.monotonic() - started < 5  # fsyncs, no waiting for the destination
    time.sleep(0.2)
    assert inner.written["0"] == []
    assert metric("cdc_spool_undrained_bytes", "held") > 0
    assert metric("cdc_spool_drain_lag_seconds", "held") >= 0.2
    inner.held.set()
    part.close()
    assert inner.items() == list(range(50))
    # The backlog went out in a few larger writes (the first one was already waiting).
    assert len(inner.written["0"]) < 10, [len(batch) for batch in inner.written["0"]]


def test_back_pressure_blocks_at_max_bytes(tmp_path):
    inner = ListSink()
    inner.held.clear()
    max_bytes = 4000
    part = spooled(inner, tmp_path, max_bytes=max_bytes).build_part("full", "0", None)
    written = []

    def writer():
        for i in range(40):
            part.write_batch([i, "x" * 500])
            written.append(i)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive(), "write_batch must block while the spool is full"
    # One batch is in the destination's hands (held), the rest waits on disk, within bounds.
    assert 5 <= len(written) <= 9, written
    assert sum(p.stat().st_size for p in segments(tmp_path)) <= max_bytes + 600
    inner.held.set()
    thread.join(30)
    assert not thread.is_alive()
    part.close()
    assert inner.items()[::2] == list(range(40))


def test_close_with_the_destination_down_keeps_everything_for_the_next_start(tmp_path, caplog):
    inner = ListSink()
    inner.down = True
    part = spooled(inner, tmp_path, close_timeout=0.3).build_part("down", "0", None)
    for i in range(10):
        part.write_batch([i])
    started = time.monotonic()
    part.close()  # waits close_timeout, aborts the retries, keeps the batches
    assert time.monotonic() - started < 5
    assert inner.written["0"] == [] and segments(tmp_path)
    assert metric("cdc_spool_drain_errors_total", "down", kind="transient") >= 1
    assert "bytes not yet written to the destination" in caplog.text

    inner.down = False
    again = spooled(inner, tmp_path).build_part("down", "0", None)
    again.close()
    assert inner.items() == list(range(10))
    assert segments(tmp_path) == []


def test_a_refused_batch_stops_the_flow_and_stays_spooled(tmp_path):
    inner = ListSink()
    inner.refused = {3}
    part = spooled(inner, tmp_path).build_part("refused", "0", None)
    for i in range(3):
        part.write_batch([i])
    wait_until(lambda: inner.items() == [0, 1, 2])
    for i in range(3, 5):
        part.write_batch([i])

    def failed() -> bool:
        try:
            part.write_batch([99])
        except SpoolDrainError as error:
            assert isinstance(error.__cause__, ValueError)
            assert "not transient" in str(error)
            return True
        return False

    wait_until(failed)
    assert inner.items() == [0, 1, 2]  # not retried for ever, nothing after it written
    assert metric("cdc_spool_drain_errors_total", "refused", kind="fatal") == 1
    with pytest.raises(SpoolDrainError):
        part.close()

    inner.refused = set()  # the cause fixed: the next start writes it first
    again = spooled(inner, tmp_path).build_part("refused", "0", None)
    again.close()
    assert inner.items()[:5] == [0, 1, 2, 3, 4]
    assert set(inner.items()[5:]) <= {99}  # spooled before the failure was seen, or not


def test_one_owner_per_partition(tmp_path):
    sink = spooled(ListSink(), tmp_path)
    first = sink.build_part("owner", "0", None)
    with pytest.raises(RuntimeError, match="open in another process"):
        sink.build_part("owner", "0", None)
    first.close()
    sink.build_part("owner", "0", None).close()


CHILD = textwrap.dedent("""
    import sys, time
    from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
    from connectors.spool import SpooledSink

    class FileSink(FixedPartitionedSink):
        def list_parts(self):
            return ["0"]
        def build_part(self, step_id, for_part, resume_state):
            return FilePartition()

    class FilePartition(StatefulSinkPartition):
        def __init__(self):
            self.file = open(sys.argv[2], "a")
        def write_batch(self, values):
            time.sleep(0.003)  # a destination slower than the spool: a backlog builds
            self.file.write(" ".join(map(str, values)) + "\\n")  # a line per write
            self.file.flush()
        def snapshot(self):
            return None

    sink = SpooledSink(FileSink(), sys.argv[1], max_bytes=1 << 20, segment_bytes=2048,
                       transient=lambda error: False)
    part = sink.build_part("crash", "0", None)
    i = 0
    while True:
        part.write_batch([i, i + 1])
        print(i + 1, flush=True)  # both items are spooled: write_batch returned
        i += 2
""")


def test_a_sigkill_loses_nothing_and_reorders_nothing(tmp_path, caplog):
    spool_dir, drained_file = tmp_path / "spool", tmp_path / "drained.txt"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(spool_dir), str(drained_file)],
                             cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    acked = -1
    try:
        for line in child.stdout:
            acked = int(line)
            if acked >= 1999:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert acked >= 1999, "the child did not get going"
    # The child ran on until the kill landed: what it printed meanwhile (still in the pipe)
    # was spooled too. A loaded machine lets it print several more batches.
    with child.stdout:
        for line in child.stdout:
            acked = max(acked, int(line))
    # The write in flight at the kill, torn: garbage after the last whole frame.
    with segments(spool_dir)[-1].open("ab") as file:
        file.write(b"\x40\x00\x00\x00\x12\x34")

    writes = [[int(v) for v in line.split()] for line in drained_file.read_text().splitlines()]
    before = [v for write in writes for v in write]
    inner = ListSink()
    sink = SpooledSink(inner, spool_dir, max_bytes=1 << 20, transient=transient)
    sink.build_part("crash", "0", None).close()
    after = inner.items()

    # Before the kill: a prefix, in order, once. After: the rest, in order; the only repeat
    # is the last write, if it committed but was not yet recorded as drained at the kill.
    assert before == list(range(len(before)))
    assert after, "a backlog was left in the spool"
    assert after[0] in (len(before), writes[-1][0]), (writes[-1], after[:4])
    total = after[-1] + 1
    assert after == list(range(after[0], total))
    # Everything acknowledged is there; at most the one batch spooled after the last print.
    assert acked + 1 <= total <= acked + 3, (acked, total)
    assert "unfinished write" in caplog.text
    assert segments(spool_dir) == []


def test_a_damaged_frame_before_others_stops_the_start_and_drops_nothing(tmp_path):
    """Only a torn last write is cut off at start: a bad checksum in the middle of a segment
    raises SpoolCorruptError and leaves the file as it was."""
    from connectors.spool import SpoolCorruptError

    inner = ListSink()
    inner.down = True  # nothing drains: five batches stay spooled
    part = spooled(inner, tmp_path / "spool", close_timeout=0.2).build_part("dmg", "0", None)
    for i in range(5):
        part.write_batch([f"item-{i}"])
    part.close()
    (segment,) = segments(tmp_path / "spool")
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01  # a bit flipped in a middle frame
    segment.write_bytes(bytes(data))

    inner.down = False
    with pytest.raises(SpoolCorruptError, match=r"fails its checksum, with \d+ bytes from it"):
        spooled(inner, tmp_path / "spool").build_part("dmg", "0", None)
    assert segment.read_bytes() == bytes(data)
    assert inner.items() == []


def _undrained(directory: Path, batches: int, **options) -> tuple[ListSink, Path]:
    """A spool under DIRECTORY holding BATCHES one-item batches, closed with its destination
    down: (the destination, the partition's spool folder)."""
    inner = ListSink()
    inner.down = True
    part = spooled(inner, directory, close_timeout=0.2, **options).build_part("dmg", "0", None)
    for i in range(batches):
        part.write_batch([f"item-{i}"])
    part.close()
    inner.down = False
    return inner, directory / "dmg" / "0"


def _as_after_a_crash(folder: Path) -> None:
    """The folder as a run that was killed leaves it: without the clean close's mark."""
    (folder / "closed").unlink()  # close() made it


def _frame_starts(data: bytes) -> list[int]:
    starts, at = [], 0
    while at < len(data):
        starts.append(at)
        at += 16 + struct.unpack_from("<I", data, at)[0]
    return starts


@pytest.mark.parametrize("crashed", [False, True])
def test_a_damaged_length_is_not_taken_for_an_unfinished_write(tmp_path, crashed):
    """A length field damaged to point past the end of the file looks like a write cut short.
    With whole frames after it, it is damage whether or not the last run crashed; the file
    stays as it was and nothing is written."""
    from connectors.spool import SpoolCorruptError

    inner, folder = _undrained(tmp_path / "spool", 5)
    if crashed:
        _as_after_a_crash(folder)
    segment = max(segments(folder))
    data = bytearray(segment.read_bytes())
    data[_frame_starts(bytes(data))[1] + 3] ^= 0x01  # frame 1's length: + 16 MiB
    segment.write_bytes(bytes(data))

    with pytest.raises(SpoolCorruptError, match=r"offset \d+ is cut short, with \d+ bytes"):
        spooled(inner, tmp_path / "spool").build_part("dmg", "0", None)
    assert segment.read_bytes() == bytes(data)
    assert inner.items() == []


def test_after_a_clean_close_even_a_cut_short_last_frame_is_damage(tmp_path):
    """A run that closed its spool left no write unfinished: a last frame whose length points
    past the end (damaged, with nothing after it) stops the start instead of being cut off."""
    from connectors.spool import SpoolCorruptError

    inner, folder = _undrained(tmp_path / "spool", 3)
    segment = max(segments(folder))
    data = bytearray(segment.read_bytes())
    data[_frame_starts(bytes(data))[-1] + 3] ^= 0x01
    segment.write_bytes(bytes(data))

    with pytest.raises(SpoolCorruptError, match="is cut short"):
        spooled(inner, tmp_path / "spool").build_part("dmg", "0", None)
    assert segment.read_bytes() == bytes(data)


def test_only_the_newest_segment_can_end_in_an_unfinished_write(tmp_path):
    """Writes go to the newest segment only: an older one cut short was damaged after it was
    sealed, even after a crash. The newest one's unfinished write (a short header, or zeros a
    filesystem left) is cut off, and every whole frame before it is written."""
    from connectors.spool import SpoolCorruptError

    inner, folder = _undrained(tmp_path / "spool", 6, segment_bytes=100)
    _as_after_a_crash(folder)
    sealed, *_ = files = [p for p in segments(folder) if p.stat().st_size]
    assert len(files) >= 3, files
    whole = sealed.read_bytes()
    sealed.write_bytes(whole[:-10])
    with pytest.raises(SpoolCorruptError, match=rf"{sealed.name} offset \d+ is cut short"):
        spooled(inner, tmp_path / "spool").build_part("dmg", "0", None)
    assert inner.items() == []

    sealed.write_bytes(whole)
    newest = max(segments(folder))
    with newest.open("ab") as file:
        file.write(bytes(40))  # zeros where the unfinished write was to go
    part = spooled(inner, tmp_path / "spool").build_part("dmg", "0", None)
    wait_until(lambda: len(inner.items()) == 6)
    part.close()
    assert inner.items() == [f"item-{i}" for i in range(6)]


def test_undrained_bytes_are_read_without_opening_the_spool(tmp_path):
    from connectors.spool import undrained_bytes

    inner, folder = _undrained(tmp_path / "spool", 4)
    spooled_bytes = sum(p.stat().st_size for p in segments(folder))
    assert undrained_bytes(folder) == spooled_bytes > 0
    with max(segments(folder)).open("ab") as file:
        file.write(b"\x40\x00\x00")  # not a whole frame: not counted
    assert undrained_bytes(folder) == spooled_bytes
    assert undrained_bytes(tmp_path / "nothing") == 0

    _as_after_a_crash(folder)  # the three bytes: a write the crash cut short
    part = spooled(inner, tmp_path / "spool").build_part("dmg", "0", None)
    wait_until(lambda: len(inner.items()) == 4)
    part.close()
    assert undrained_bytes(folder) == 0


def test_close_leaves_a_destination_write_that_never_returns_alone(tmp_path, monkeypatch):
    """The wrapped partition is not closed under a write still in progress; the batch stays
    spooled for the next start. Health: reported while open, forgotten once closed; a write
    failing transiently is trouble, a refused one fatal."""
    from connectors.health import Health

    health = Health()
    monkeypatch.setattr("connectors.spool.HEALTH", health)
    inner = ListSink()
    part = spooled(inner, tmp_path / "spool", close_timeout=0.2).build_part("stuck", "0", None)
    name = "destination stuck/0"
    assert health.report()[2]["checks"][name]["state"] == "ok"
    inner.down = True
    part.write_batch(["a"])
    wait_until(lambda: health.report()[2]["checks"][name]["state"] == "trouble")
    inner.down = False
    wait_until(lambda: health.report()[2]["checks"][name]["state"] == "ok")
    inner.held.clear()  # the next write hangs inside the destination
    part.write_batch(["b"])
    part.close()
    assert inner.closed == [] and name not in health.report()[2]["checks"]
    inner.held.set()

    inner = ListSink()
    inner.refused = {"c"}
    part = spooled(inner, tmp_path / "other", close_timeout=0.2).build_part("bad", "0", None)
    part.write_batch(["c"])
    wait_until(lambda: health.report()[2]["checks"]["destination bad/0"]["state"] == "fatal")
    with pytest.raises(SpoolDrainError):
        part.close()


def test_a_frame_in_an_unknown_format_stops_the_drain_and_stays_spooled(tmp_path):
    """A frame written by a later version (or not a spool frame) is not skipped: the drain
    stops, write_batch raises naming the format, and the frame is still there."""
    from connectors.spool import Spool
    from connectors.spool_format import SpoolFormatError

    directory = tmp_path / "fmt" / "0"
    spool = Spool(directory, max_bytes=1 << 20, segment_bytes=1 << 20)
    spool.append(b"Z1 from a later version")
    spool.close()
    inner = ListSink()
    part = spooled(inner, tmp_path).build_part("fmt", "0", None)

    def failed() -> bool:
        try:
            part.write_batch([1])
        except SpoolDrainError as error:
            assert isinstance(error.__cause__, SpoolFormatError)
            return True
        return False

    wait_until(failed)
    with pytest.raises(SpoolDrainError):
        part.close()
    assert inner.items() == []
    assert b"Z1 from a later version" in segments(tmp_path)[0].read_bytes()


def test_a_full_disk_under_the_drained_position_is_retried_not_fatal(tmp_path, monkeypatch):
    """The drainer records its position in a new cursor file; on a full disk that fails with
    ENOSPC. It is retried (draining is what frees space) and counted, the destination is not
    blamed, and once a write succeeds every batch is there once, in order."""
    import errno

    from connectors.spool import Spool

    real = Spool._write_cursor  # noqa: SLF001
    failures = {"left": 3}

    def full_disk(self, *args, **kwargs):
        if failures["left"] and not kwargs.get("closed"):
            failures["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Spool, "_write_cursor", full_disk)
    inner = ListSink()
    part = spooled(inner, tmp_path / "spool").build_part("full", "0", None)
    for i in range(4):
        part.write_batch([i])
    wait_until(lambda: failures["left"] == 0 and inner.items()[-1:] == [3])
    part.write_batch([4])  # not failed: the drainer went on
    wait_until(lambda: inner.items()[-1:] == [4])
    part.close()
    assert sorted(set(inner.items())) == inner.items()[-5:] == [0, 1, 2, 3, 4]
    assert metric("cdc_spool_drain_errors_total", "full", kind="local_disk") == 3
    assert metric("cdc_spool_drain_errors_total", "full", kind="fatal") is None


def test_drained_segments_are_deleted_before_the_cursor_moves_past_them(tmp_path, monkeypatch):
    """On a full disk the space of drained segments comes back before the cursor needs a new
    file; a crash between the two loses nothing (the cursor in a deleted segment is read as
    its end)."""
    import errno

    from connectors.spool import Spool

    inner = ListSink()
    part = spooled(inner, tmp_path / "spool", segment_bytes=60).build_part("adv", "0", None)
    for i in range(3):
        part.write_batch([i])
    wait_until(lambda: inner.items() == [0, 1, 2])
    part.close()
    folder = tmp_path / "spool" / "adv" / "0"
    # A new run whose first cursor write at the next segment fails: the drained ones are gone.
    inner2 = ListSink()
    part = spooled(inner2, tmp_path / "spool", segment_bytes=60).build_part("adv", "0", None)
    part.write_batch([3])
    wait_until(lambda: inner2.items() == [3])
    real = Spool._write_cursor  # noqa: SLF001

    def full_disk(self, segment, offset, **kwargs):
        if offset == 0 and not kwargs.get("closed"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, segment, offset, **kwargs)

    monkeypatch.setattr(Spool, "_write_cursor", full_disk)
    part.write_batch([4])  # a new segment: reaching it moves the cursor to its start
    wait_until(lambda: metric("cdc_spool_drain_errors_total", "adv", kind="local_disk"))
    assert len(segments(folder)) == 1  # only the undrained one is left
    monkeypatch.setattr(Spool, "_write_cursor", real)
    wait_until(lambda: inner2.items() == [3, 4])
    part.close()


def test_after_a_power_loss_a_last_frame_failing_its_checksum_is_an_unfinished_write(tmp_path):
    """A power loss can leave the newest frame's length and header on disk and a page of its
    body not: a bad checksum with nothing after it, in the newest segment of a run that did
    not close, is that write (cut off, the frames before it drained), not damage that stops
    every start. The same after a clean close is damage, whose message says where to cut."""
    from connectors.spool import SpoolCorruptError

    inner, folder = _undrained(tmp_path / "spool", 3)
    segment = max(segments(folder))
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # a byte of the last frame's body
    segment.write_bytes(bytes(data))
    with pytest.raises(SpoolCorruptError, match=r"fails its checksum.*truncate -s \d+ "):
        spooled(inner, tmp_path / "spool").build_part("dmg", "0", None)
    _as_after_a_crash(folder)
    part = spooled(inner, tmp_path / "spool").build_part("dmg", "0", None)
    wait_until(lambda: inner.items() == ["item-0", "item-1"])
    part.close()


def test_opening_a_closed_spool_writes_nothing(tmp_path, monkeypatch):
    """The clean close's mark is removed at open by an unlink: a spool opens on a full disk
    (writing the cursor again there needed a new block, and the flow could not start)."""
    from connectors.spool import Spool

    inner, folder = _undrained(tmp_path / "spool", 2)
    assert (folder / "closed").exists()

    def no_space(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Spool, "_write_cursor", no_space)
    spool = Spool(folder, max_bytes=1 << 20, segment_bytes=1 << 16)
    assert not (folder / "closed").exists() and spool.pending_bytes > 0
    spool.close()


def test_a_spool_an_older_version_closed_is_still_taken_as_closed(tmp_path):
    """Before the `closed` file, a clean close said so in the cursor ("closed": true). Read
    without it, the first open after an upgrade took such a spool as possibly torn, and cut a
    damaged last frame it would have refused. The old mark counts, once: the open rewrites
    the cursor without it."""
    import json

    from connectors.spool import SpoolCorruptError

    inner, folder = _undrained(tmp_path / "spool", 3)
    (folder / "closed").unlink()
    cursor = json.loads((folder / "cursor").read_text()) if (folder / "cursor").exists() \
        else {"segment": 0, "offset": 0}
    (folder / "cursor").write_text(json.dumps({**cursor, "closed": True}))
    segment = max(segments(folder))
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # a byte of the last frame's body: damage, after a clean close
    segment.write_bytes(bytes(data))
    with pytest.raises(SpoolCorruptError, match="fails its checksum"):
        spooled(inner, tmp_path / "spool").build_part("dmg", "0", None)
    data[-3] ^= 0xFF  # mended: it opens, and the old mark is gone with the open
    segment.write_bytes(bytes(data))
    part = spooled(inner, tmp_path / "spool").build_part("dmg", "0", None)
    assert "closed" not in json.loads((folder / "cursor").read_text())
    wait_until(lambda: inner.items() == ["item-0", "item-1", "item-2"])
    part.close()
