"""De-duplication of replica copies, on real decoded events (the golden segments)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.cassandra.events import ChangeEvent
from operators.dedup import DUPLICATES, EVICTIONS, DigestWindow, bucket_of, deduplicate
from tests.connectors.cassandra.golden_load import decode_all, read_all, unpack


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> list[ChangeEvent]:
    records = read_all(unpack(7, tmp_path_factory.mktemp("golden")))
    return [e for d in decode_all(7, records) for e in d.events]


def copy_from(event: ChangeEvent, node: str) -> ChangeEvent:
    """The same change as another replica's commit log holds it: other node, other position."""
    return dataclasses.replace(event, node=node,
                               position=dataclasses.replace(event.position, offset=7))


def run(items, **kwargs) -> list:
    out: list = []
    flow = Dataflow("dedup")
    stream = op.input("in", flow, TestingSource(items))
    kept = deduplicate("dedup", stream, **kwargs)
    op.output("out", op.key_rm("unkey", kept), TestingSink(out))
    run_main(flow)
    return out


def test_replica_copies_are_dropped_and_each_change_kept_once(events):
    replicas = [copy_from(e, node) for node in ("n1", "n2", "n3") for e in events]
    before = DUPLICATES._value.get()  # noqa: SLF001 - reading the metric's current value
    kept = run(replicas)
    assert sorted(e.digest for e in kept) == sorted(e.digest for e in events)
    assert {e.node for e in kept} == {"n1"}  # the first copy to arrive wins
    assert DUPLICATES._value.get() - before == 2 * len(events)  # noqa: SLF001


def test_each_partitions_changes_keep_their_order(events):
    interleaved = [copy_from(e, n) for e in events for n in ("n1", "n2")]
    kept = run(interleaved)
    for table_pk in {(e.table, tuple(e.partition_key.items())) for e in events}:
        ours = [e.digest for e in events if (e.table, tuple(e.partition_key.items())) == table_pk]
        theirs = [e.digest for e in kept
                  if (e.table, tuple(e.partition_key.items())) == table_pk]
        assert theirs == ours


def test_distinct_changes_are_never_taken_for_copies(events):
    assert len({e.digest for e in events}) == len(events)
    assert len(run(events)) == len(events)


def test_state_is_bounded_by_size_and_time():
    window = DigestWindow()
    size_before = EVICTIONS.labels("size")._value.get()  # noqa: SLF001
    for i in range(100):
        assert window.admit(i.to_bytes(16, "big"), now=1000.0, window=60, max_size=10)
    assert len(window.seen) == 10
    assert EVICTIONS.labels("size")._value.get() - size_before == 90  # noqa: SLF001
    # An evicted digest is admitted again: a duplicate downstream, never a lost change.
    assert window.admit((0).to_bytes(16, "big"), now=1000.0, window=60, max_size=10)
    # Past the window everything old is forgotten.
    assert window.admit(b"new", now=1061.0, window=60, max_size=10)
    assert list(window.seen) == [b"new"]


def test_buckets_are_stable_across_processes_and_spread(events, tmp_path):
    import os
    import subprocess
    import sys

    # Another interpreter with another hash seed must bucket the same events the same way.
    script = (
        "import sys, tempfile, pathlib\n"
        "from tests.connectors.cassandra.golden_load import decode_all, read_all, unpack\n"
        "from operators.dedup import bucket_of\n"
        "d = pathlib.Path(tempfile.mkdtemp())\n"
        "events = [e for m in decode_all(7, read_all(unpack(7, d))) for e in m.events]\n"
        "print(','.join(bucket_of(e, 64) for e in events))\n"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert other.stdout.strip() == ",".join(bucket_of(e, 64) for e in events)
    assert len({bucket_of(e, 64) for e in events}) > 1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="window must be positive"):
        run([], window=timedelta(0))


def test_digests_of_one_second_share_one_time_object():
    """First-seen times are whole seconds, one float object per second: a digest's time
    costs no object of its own (the bucket's memory is the digests and the dict)."""
    from operators.dedup import _Seconds

    times = iter([100.1, 100.5, 100.9, 101.2, 101.3])
    seconds = _Seconds(lambda: next(times))
    stamps = [seconds() for _ in range(5)]
    assert stamps == [100.0, 100.0, 100.0, 101.0, 101.0]
    assert stamps[0] is stamps[1] is stamps[2] and stamps[3] is stamps[4]
    window = DigestWindow()
    for i, stamp in enumerate(stamps):
        window.admit(i.to_bytes(16, "big"), stamp, window=60, max_size=10)
    assert len({id(t) for t in window.seen.values()}) == 2


def test_state_of_earlier_versions_restores_and_keeps_its_order():
    """A snapshot pickled by the earlier dataclass (its `seen` an OrderedDict) restores: the
    same digests, the oldest still evicted first."""
    import pickle
    from collections import OrderedDict

    old = DigestWindow.__new__(DigestWindow)
    old.__setstate__({"seen": OrderedDict((bytes([i]), 100.0 + i) for i in range(5))})
    window = pickle.loads(pickle.dumps(old))  # noqa: S301 - made here
    assert list(window.seen) == [bytes([i]) for i in range(5)]
    assert not window.admit(bytes([2]), 104.0, window=60, max_size=5)  # still known
    assert window.admit(b"new", 104.0, window=60, max_size=5)
    assert list(window.seen) == [bytes([i]) for i in range(1, 5)] + [b"new"]  # 0 went first


def test_a_copy_within_a_fractional_window_is_dropped(events):
    """Times are whole seconds: a window of 1.5 s still drops a copy 1.2 s later (the window
    rounds up to 2 s), where rounding only the times would have let it through."""
    event = next(e for e in events if isinstance(e, ChangeEvent))
    copy = dataclasses.replace(event, node="other")
    times = iter([10.9, 12.1])
    assert run([event, copy], window=timedelta(seconds=1.5), clock=lambda: next(times)) == [event]
