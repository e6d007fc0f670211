"""ProgressWriter without a server: what it inserts, when, and after failures, through a
client that records its inserts (the writer is what is tested, not ClickHouse)."""

from __future__ import annotations

import threading
import time

import pytest

from connectors.cassandra.events import Position
from connectors.clickhouse._progress import PROGRESS_WRITE_ERRORS, ProgressWriter
from tests.waiting import wait_for


class RecordingClient:
    """Records each insert's rows; `fail` raises instead; `hold` blocks an insert until set."""

    def __init__(self, fail: bool = False, hold: threading.Event | None = None) -> None:
        self.inserts: list[list[tuple]] = []
        self.fail = fail
        self.hold = hold
        self.closed = False

    def insert(self, table: str, rows: list[tuple], **_: object) -> None:
        if self.hold is not None:
            self.hold.wait()
        if self.fail:
            raise ConnectionError("down")
        self.inserts.append(rows)

    def close(self) -> None:
        self.closed = True


def _writer(client: RecordingClient, interval: float,
            transient: bool = True) -> ProgressWriter:
    return ProgressWriter(lambda: client, "cdc", "step", 3, interval,
                          transient=lambda _error: transient)


def _rows(*positions: tuple[str, int, int]) -> list[tuple]:
    return [(b"step", 3, node.encode(), segment, offset) for node, segment, offset in positions]


def test_batches_within_an_interval_make_one_insert_of_the_highest_positions() -> None:
    client = RecordingClient()
    writer = _writer(client, interval=60)
    for offset in (10, 30, 20):
        writer.record({"n1": Position(1, offset)}, client=None)
    writer.record({"n2": Position(2, 5)}, client=None)
    assert client.inserts == []  # none on the data path, none before the interval
    writer.close()
    assert client.inserts == [_rows(("n1", 1, 30), ("n2", 2, 5))]
    assert client.closed


def test_interval_zero_inserts_every_batch_through_the_data_path_client() -> None:
    thread_client, data_client = RecordingClient(), RecordingClient()
    writer = _writer(thread_client, interval=0)
    writer.record({"n1": Position(1, 10)}, client=data_client)
    writer.record({"n1": Position(1, 20)}, client=data_client)
    writer.close()
    assert data_client.inserts == [_rows(("n1", 1, 10)), _rows(("n1", 1, 20))]
    assert thread_client.inserts == []


def test_the_thread_writes_each_interval_without_close() -> None:
    client = RecordingClient()
    writer = _writer(client, interval=0.1)
    try:
        writer.record({"n1": Position(1, 10)}, client=None)
        wait_for(lambda: client.inserts, "a first write", 10)
        assert client.inserts == [_rows(("n1", 1, 10))]
        writer.record({"n1": Position(1, 11)}, client=None)
        wait_for(lambda: len(client.inserts) >= 2, "a second write", 10)
        assert client.inserts[1:] == [_rows(("n1", 1, 11))]  # only what is new
    finally:
        writer.close()


def test_failed_writes_keep_their_positions_and_the_last_is_written_at_close() -> None:
    client = RecordingClient(fail=True)
    writer = _writer(client, interval=0.1)
    errors = PROGRESS_WRITE_ERRORS.labels("step", "3")
    before = errors._value.get()  # noqa: SLF001 - prometheus_client's counter value
    writer.record({"n1": Position(1, 10)}, client=None)
    wait_for(lambda: errors._value.get() >= before + 2, "two failed writes", 10)  # noqa: SLF001
    writer.record({"n1": Position(1, 5), "n2": Position(2, 2)}, client=None)
    client.fail = False
    writer.close()
    assert client.inserts[-1] == _rows(("n1", 1, 10), ("n2", 2, 2))


def test_close_does_not_wait_longer_than_told_for_a_write_that_hangs() -> None:
    hold = threading.Event()
    client = RecordingClient(hold=hold)
    writer = _writer(client, interval=60)
    writer.record({"n1": Position(1, 10)}, client=None)
    started = time.monotonic()
    writer.close(wait=0.2)
    assert time.monotonic() - started < 5
    hold.set()  # the thread's write returns later, at the process's pace


def test_recording_after_close_is_refused() -> None:
    client = RecordingClient()
    writer = _writer(client, interval=60)
    writer.close()
    with pytest.raises(RuntimeError, match="after close"):
        writer.record({"n1": Position(1, 10)}, client=None)
    writer.close()  # twice: nothing more
    assert client.inserts == []


def test_a_failure_retrying_cannot_fix_is_raised_by_the_next_record() -> None:
    client = RecordingClient(fail=True)
    writer = _writer(client, interval=0.1, transient=False)
    writer.record({"n1": Position(1, 10)}, client=None)

    def raised() -> bool:
        try:
            writer.record({"n1": Position(1, 11)}, client=None)
        except ConnectionError:
            return True
        return False

    wait_for(raised, "the failure raised", 10)
    client.fail = False
    writer.close()
    assert client.inserts[-1] == _rows(("n1", 1, 11))  # nothing recorded was lost


@pytest.mark.parametrize("transient", [True, False])
def test_a_last_write_that_fails_at_close_is_logged(transient, caplog) -> None:
    """The last write happens at close, where nothing can raise it for the flow: its failure
    is logged, an error when retrying cannot fix it (the table dropped), and the class only."""
    client = RecordingClient(fail=True)
    writer = _writer(client, interval=3600, transient=transient)
    writer.record({"n1": Position(1, 10), "n2": Position(2, 3)}, client=None)
    writer.close()
    [record] = [r for r in caplog.records if "last _cdc_progress write" in r.getMessage()]
    assert record.levelname == ("WARNING" if transient else "ERROR")
    assert ("(ConnectionError)" if transient else
            "(ConnectionError, which retrying cannot fix)") in record.getMessage()
    assert "positions of 2 node(s) are not written" in record.getMessage()
    assert "down" not in record.getMessage()  # the error's own message is not logged
