"""The initial load against a real node: every existing row exactly once, with its version.

Oracle: the workload itself. Each cell is written with an explicit client timestamp, so the
expected operations (values, and versions = the largest write time of the row's regular cells,
0 for a row holding only its key; the static row separately, once per partition) are known
without reading Cassandra back.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, cluster_main, run_main
from cassandra import ConsistencyLevel

from connectors.cassandra.schema import SchemaRegistry
from connectors.cassandra.snapshot import (
    MAX_TOKEN,
    MIN_TOKEN,
    SnapshotSource,
    token_ranges,
)
from operators.row_ops import INITIAL_LOAD, RowUpsert

WIDE = 40  # rows of the one wide partition: more than a page


def _norm(value):
    """Driver collections as comparable tuples (sets, maps, lists); scalars as they are."""
    if value is None or isinstance(value, str | int | float):
        return value
    if hasattr(value, "items"):
        return tuple(sorted(dict(value).items()))
    if isinstance(value, list | tuple):
        return tuple(value)
    return tuple(sorted(value))


def _canonical(upsert: RowUpsert) -> tuple:
    assert upsert.source == INITIAL_LOAD
    return (upsert.table, upsert.static, tuple(sorted(upsert.key.items())),
            tuple(sorted((k, _norm(v)) for k, v in upsert.values.items())), upsert.version)


class Workload:
    """Writes the tables and remembers what each row must load as."""

    def __init__(self, sess, ks: str) -> None:
        self.sess, self.ks = sess, ks
        self.expected: list[tuple] = []

    def row(self, table: str, key: dict, values: dict, version: int) -> None:
        self.expected.append((table, False, tuple(sorted(key.items())),
                              tuple(sorted((k, _norm(v)) for k, v in values.items())), version))

    def static(self, table: str, key: dict, values: dict, version: int) -> None:
        self.expected.append((table, True, tuple(sorted(key.items())),
                              tuple(sorted(values.items())), version))


def write_visits(w: Workload) -> None:
    """A composite partition key, a static column, collections, multi-row partitions, rows
    holding only their key, partitions holding only static cells, and one wide partition."""
    ks, sess = w.ks, w.sess
    sess.execute(f"CREATE TABLE {ks}.visits (region text, patient int, at int, code text, "
                 "clinic text static, tags set<text>, attrs map<text, int>, "
                 "PRIMARY KEY ((region, patient), at)) WITH cdc = true")
    insert_code = sess.prepare(f"INSERT INTO {ks}.visits (region, patient, at, code) "
                               "VALUES (?, ?, ?, ?) USING TIMESTAMP ?")
    insert_key = sess.prepare(f"INSERT INTO {ks}.visits (region, patient, at) VALUES (?, ?, ?) "
                              "USING TIMESTAMP ?")
    add_tags = sess.prepare(f"UPDATE {ks}.visits USING TIMESTAMP ? SET tags = tags + ? "
                            "WHERE region = ? AND patient = ? AND at = ?")
    set_attrs = sess.prepare(f"UPDATE {ks}.visits USING TIMESTAMP ? SET attrs = ?, code = ? "
                             "WHERE region = ? AND patient = ? AND at = ?")
    set_clinic = sess.prepare(f"UPDATE {ks}.visits USING TIMESTAMP ? SET clinic = ? "
                              "WHERE region = ? AND patient = ?")
    for region in ("n", "s", "e"):
        for patient in range(20):
            rows = WIDE if (region, patient) == ("n", 0) else patient % 6 + 1
            for at in range(rows):
                key = {"region": region, "patient": patient, "at": at}
                ts = 1_000_000 + patient * 1000 + at * 10 + len(region)
                empty = {"code": None, "tags": None, "attrs": None}
                kind = (patient + at) % 4
                if kind == 0:
                    sess.execute(insert_code, (region, patient, at, f"c{at}", ts))
                    w.row("visits", key, {**empty, "code": f"c{at}"}, ts)
                elif kind == 1:
                    sess.execute(insert_code, (region, patient, at, f"c{at}", ts))
                    sess.execute(add_tags, (ts + 7, {"a", f"t{at}"}, region, patient, at))
                    w.row("visits", key, {**empty, "code": f"c{at}", "tags": {"a", f"t{at}"}},
                          ts + 7)
                elif kind == 2:  # only the key: no write time to version it by
                    sess.execute(insert_key, (region, patient, at, ts))
                    w.row("visits", key, empty, 0)
                else:  # no row marker: the row lives by its cells
                    sess.execute(set_attrs, (ts, {"x": at}, f"c{at}", region, patient, at))
                    w.row("visits", key, {**empty, "code": f"c{at}", "attrs": {"x": at}}, ts)
            if patient % 2 == 0:
                sess.execute(set_clinic, (5000 + patient, f"C{patient}", region, patient))
                w.static("visits", {"region": region, "patient": patient},
                         {"clinic": f"C{patient}"}, 5000 + patient)
    for patient in range(5):  # partitions with static cells and no row
        sess.execute(set_clinic, (6000 + patient, f"W{patient}", "w", patient))
        w.static("visits", {"region": "w", "patient": patient}, {"clinic": f"W{patient}"},
                 6000 + patient)


def write_patients(w: Workload, rows: int = 150) -> None:
    ks, sess = w.ks, w.sess
    sess.execute(f"CREATE TABLE {ks}.patients (id int PRIMARY KEY, label text, notes list<text>) "
                 "WITH cdc = true")
    insert = sess.prepare(f"INSERT INTO {ks}.patients (id, label) VALUES (?, ?) "
                          "USING TIMESTAMP ?")
    append = sess.prepare(f"UPDATE {ks}.patients USING TIMESTAMP ? SET notes = notes + ? "
                          "WHERE id = ?")
    for i in range(rows):
        sess.execute(insert, (i, f"p{i}", 2_000_000 + i))
        if i % 3 == 0:
            sess.execute(append, (2_000_000 + i + 5, [f"n{i}"], i))
            w.row("patients", {"id": i}, {"label": f"p{i}", "notes": [f"n{i}"]},
                  2_000_000 + i + 5)
        else:
            w.row("patients", {"id": i}, {"label": f"p{i}", "notes": None}, 2_000_000 + i)


def _source(sess, ks: str, **kwargs) -> SnapshotSource:
    registry = SchemaRegistry.from_session(sess, [ks.strip('"')])
    return SnapshotSource(lambda: sess, registry.tables, consistency=ConsistencyLevel.ONE,
                          **kwargs)


def test_token_ranges_cover_the_token_space_contiguously():
    for splits in (1, 3, 16, 1000):
        ranges = token_ranges(splits)
        assert len(ranges) == splits
        assert ranges[0][0] == MIN_TOKEN and ranges[-1][1] == MAX_TOKEN
        assert all(low <= high for low, high in ranges)
        assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    with pytest.raises(ValueError):
        token_ranges(0)


@pytest.mark.parametrize("workers", [1, 2])
def test_loads_every_row_exactly_once_with_its_version(cassandra_keyspace, workers):
    sess, ks = cassandra_keyspace(7)
    w = Workload(sess, ks)
    write_visits(w)
    write_patients(w)
    sess.execute(f"CREATE TABLE {ks}.not_captured (id int PRIMARY KEY, v int)")
    sess.execute(f"INSERT INTO {ks}.not_captured (id, v) VALUES (1, 1)")
    source = _source(sess, ks, splits=5, page_size=16)
    bare = ks.strip('"')
    ids = {t.name: t.id for t in SchemaRegistry.from_session(sess, [bare]).tables()}
    assert source.list_parts() == [f"{bare}.{t}@{ids[t]}:{i}/5" for t in ("patients", "visits")
                                   for i in range(5)]

    flow = Dataflow("load_test")
    out: list = []
    op.output("out", op.input("load", flow, source), TestingSink(out))
    if workers == 1:
        run_main(flow)
    else:  # the ranges spread over two workers of one process
        cluster_main(flow, [], 0, worker_count_per_proc=workers)

    assert all(isinstance(o, RowUpsert) and o.keyspace == bare for o in out)
    counts = Counter(_canonical(o) for o in out)
    assert [item for item, n in counts.items() if n > 1] == []
    assert sorted(counts, key=repr) == sorted(w.expected, key=repr)
    assert len(out) > 300


def test_resumes_after_the_last_whole_token_at_every_batch(cassandra_keyspace):
    """A new partition from each snapshot, batch after batch: pages of 7 rows end inside
    partitions of up to 6 rows, yet the union is every row once, no gap, no duplicate."""
    sess, ks = cassandra_keyspace(7)
    w = Workload(sess, ks)
    write_patients(w, rows=40)
    sess.execute(f"CREATE TABLE {ks}.visits (region text, patient int, at int, code text, "
                 "clinic text static, PRIMARY KEY ((region, patient), at)) WITH cdc = true")
    insert = sess.prepare(f"INSERT INTO {ks}.visits (region, patient, at, code, clinic) "
                          "VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?")
    for patient in range(30):
        for at in range(patient % 6 + 1):
            ts = 3_000_000 + patient * 10 + at
            sess.execute(insert, ("r", patient, at, f"c{at}", f"C{patient}", ts))
            w.row("visits", {"region": "r", "patient": patient, "at": at}, {"code": f"c{at}"},
                  ts)
        w.static("visits", {"region": "r", "patient": patient}, {"clinic": f"C{patient}"},
                 3_000_000 + patient * 10 + patient % 6)
    source = _source(sess, ks, splits=2, page_size=7)

    emitted: list[RowUpsert] = []
    resumes = 0
    for part in source.list_parts():
        state = None
        while True:
            partition = source.build_part("load", part, state)
            try:
                batch = partition.next_batch()
            except StopIteration:
                break
            emitted.extend(batch)
            state = partition.snapshot()
            resumes += 1
        assert state is not None and partition.done
        # Done stays done after a resume.
        with pytest.raises(StopIteration):
            source.build_part("load", part, state).next_batch()
    counts = Counter(_canonical(o) for o in emitted)
    assert [item for item, n in counts.items() if n > 1] == []
    assert sorted(counts, key=repr) == sorted(w.expected, key=repr)
    assert resumes > 20


def test_a_wide_partition_is_sent_by_pages_and_completes(cassandra_keyspace):
    """One partition of 3 pages: it goes out while being read (bounded memory), exactly once
    in one run, and the state only moves past its token when it is complete."""
    sess, ks = cassandra_keyspace(7)
    sess.execute(f"CREATE TABLE {ks}.wide (k int, c int, v int, PRIMARY KEY (k, c)) "
                 "WITH cdc = true")
    insert = sess.prepare(f"INSERT INTO {ks}.wide (k, c, v) VALUES (?, ?, ?)")
    for c in range(30):
        sess.execute(insert, (1, c, c))
    (part,) = _source(sess, ks, splits=1, page_size=10).list_parts()
    partition = _source(sess, ks, splits=1, page_size=10).build_part("load", part, None)
    sizes, states, emitted = [], [], []
    while True:
        try:
            batch = partition.next_batch()
        except StopIteration:
            break
        sizes.append(len(batch))
        states.append(partition.snapshot())
        emitted.extend(batch)
    assert sorted(o.key["c"] for o in emitted) == list(range(30))
    assert max(sizes) <= 20  # a page plus the rows held back from the page before
    assert states[:-1] == [None] * (len(states) - 1) and states[-1] == MAX_TOKEN


def test_a_finished_load_stays_finished_after_a_restart(cassandra_keyspace, tmp_path):
    """Through Bytewax's recovery store: a second run of the same flow emits nothing."""
    sess, ks = cassandra_keyspace(7)
    w = Workload(sess, ks)
    write_patients(w, rows=60)
    init_db_dir(tmp_path, 1)
    runs = []
    for _ in range(2):
        flow = Dataflow("load_recovery")
        out: list = []
        source = _source(sess, ks, splits=3, page_size=10)
        op.output("out", op.input("load", flow, source), TestingSink(out))
        run_main(flow, epoch_interval=timedelta(milliseconds=50),
                 recovery_config=RecoveryConfig(str(tmp_path)))
        runs.append(out)
    assert sorted(map(_canonical, runs[0]), key=repr) == sorted(w.expected, key=repr)
    assert runs[1] == []


def test_a_table_created_again_or_a_new_generation_is_loaded_again(cassandra_keyspace,
                                                                    tmp_path):
    """A finished range stays finished, but only for the table it read: the same name created
    again is another table (its rows were loaded as the old one's). Raising the generation
    loads every table again: the way to bring rows written while CDC was off (switched off
    and on while the pipeline was stopped leaves no trace it could see). Another split count
    starts over. And the ranges that are no more (of a table dropped, of the old generation or
    split count, named as an older version named them) stay listed: Bytewax refused to start
    with state for a partition no worker listed, which the old names of a dropped table
    were."""
    import subprocess
    import sys

    sess, ks = cassandra_keyspace(7)
    write_patients(Workload(sess, ks), rows=20)
    store = tmp_path / "recovery"
    store.mkdir()
    init_db_dir(store, 1)

    def loaded(generation: int = 0, splits: int = 2) -> list[int]:
        flow = Dataflow("load_again")
        out: list = []
        source = _source(sess, ks, splits=splits, page_size=10, generation=generation,
                         recovery_directory=store, step_id="load_again.load")
        op.output("out", op.input("load", flow, source), TestingSink(out))
        run_main(flow, epoch_interval=timedelta(milliseconds=50),
                 recovery_config=RecoveryConfig(str(store)))
        return sorted(o.key["id"] for o in out if not o.static)

    assert loaded() == list(range(20))
    assert loaded() == []
    sess.execute(f"DROP TABLE {ks}.patients")
    sess.execute(f"CREATE TABLE {ks}.patients (id int PRIMARY KEY, name text) WITH cdc = true")
    sess.execute(f"INSERT INTO {ks}.patients (id, name) VALUES (7, 'again')")
    assert loaded() == [7]
    assert loaded() == []
    sess.execute(f"INSERT INTO {ks}.patients (id, name) VALUES (8, 'while off')")
    assert loaded(generation=1) == [7, 8]
    assert loaded(generation=1) == []
    assert loaded(generation=1, splits=3) == [7, 8]
    assert loaded(generation=1, splits=2) == []  # back to 2 splits: their states were kept
    # A store an older version wrote: its ranges were named "ks.table:i/n". Listed from the
    # store, they start; the table is loaded again under today's names.
    (part,) = store.glob("part-*.sqlite3")
    # In a process of its own: two SQLite libraries in one process (Python's and the one
    # Bytewax bundles) release each other's POSIX locks on close, and the store's next reader
    # here then met "disk I/O error".
    rename = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.execute("
              "\"UPDATE snaps SET state_key = substr(state_key, 1, instr(state_key, '@') - 1)"
              " || substr(state_key, instr(state_key, ':'))"
              " WHERE state_key LIKE '%#1:%/3'\"); db.commit(); db.close()")  # the last run's
    subprocess.run([sys.executable, "-c", rename, str(part)], check=True, timeout=60)
    assert loaded(generation=1, splits=3) == [7, 8]
    sess.execute(f"DROP TABLE {ks}.patients")
    assert loaded(generation=1, splits=3) == []
    with pytest.raises(ValueError, match="generation must be >= 0"):
        _source(sess, ks, generation=-1)


def test_loaded_rows_and_static_rows_say_when_they_expire(cassandra_keyspace):
    """Rows the load reads carry their TTLs like changes do (TTL expiry schedules them), the
    static row its own."""
    import time

    sess, ks = cassandra_keyspace(7)
    sess.execute(f"CREATE TABLE {ks}.visits (patient int, at int, code text, "
                 "clinic text static, PRIMARY KEY (patient, at)) WITH cdc = true")
    written = [time.time()]
    sess.execute(f"INSERT INTO {ks}.visits (patient, at, code) VALUES (1, 1, 'A') USING TTL 600")
    sess.execute(f"INSERT INTO {ks}.visits (patient, at, code) VALUES (1, 2, 'B')")
    sess.execute(f"UPDATE {ks}.visits USING TTL 300 SET clinic = 'North' WHERE patient = 1")
    written.append(time.time())
    flow = Dataflow("load_ttl")
    out: list = []
    op.output("out", op.input("load", flow, _source(sess, ks, splits=1)), TestingSink(out))
    run_main(flow)
    # When each expires, by the clock of the writes (TTL() counts down from the write, whole
    # seconds; a second late), however long the load took to read them.
    ends = {(o.static, o.key.get("at")): None if o.expires is None else
            o.expires / 1_000_000 for o in out}
    assert set(ends) == {(True, None), (False, 1), (False, 2)}
    assert written[0] + 599 <= ends[(False, 1)] <= written[1] + 602
    assert ends[(False, 2)] is None
    assert written[0] + 299 <= ends[(True, None)] <= written[1] + 302


class _Failing:
    """A session whose first FAILURES reads raise ReadTimeout (as a node under load answers),
    then read through the real one."""

    def __init__(self, session, failures: int) -> None:
        self._session, self.failures = session, failures

    def execute(self, *args, **kwargs):
        from cassandra import ReadTimeout

        if self.failures:
            self.failures -= 1
            raise ReadTimeout("timed out", consistency=1, required_responses=1,
                              received_responses=0, data_retrieved=False)
        return self._session.execute(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


def _partition(sess, ks, session, **kwargs):
    from connectors.cassandra.snapshot import SnapshotPartition

    (table,) = SchemaRegistry.from_session(sess, [ks.strip('"')]).tables()
    return SnapshotPartition("load", session, table, MIN_TOKEN, MAX_TOKEN, None, page_size=10,
                             consistency=ConsistencyLevel.ONE, **kwargs)


def _drain(partition) -> list:
    out = []
    while True:
        try:
            out.extend(partition.next_batch())
        except StopIteration:
            return out


def test_a_read_that_times_out_is_asked_again_with_backoff(cassandra_keyspace):
    """A timeout stopped the flow (capture included) at once; now it is asked again, waiting
    longer each time, and the range loads whole. Past the attempts it still stops."""
    from cassandra import ReadTimeout

    sess, ks = cassandra_keyspace(7)
    write_patients(Workload(sess, ks), rows=25)
    waits: list[float] = []
    partition = _partition(sess, ks, _Failing(sess, 2), sleep=waits.append)
    assert sorted(o.key["id"] for o in _drain(partition)) == list(range(25))
    assert waits == [1.0, 2.0]
    waits.clear()
    with pytest.raises(ReadTimeout):
        _drain(_partition(sess, ks, _Failing(sess, 3), attempts=3, backoff_s=0.5,
                          sleep=waits.append))
    assert waits == [0.5, 1.0]


def test_a_write_time_in_the_future_is_versioned_as_of_the_read(cassandra_keyspace):
    """A client clock ahead (or USING TIMESTAMP in the future) gave the loaded image a version
    above every change captured after the load read it: that older state then stayed over
    them. A version is at most when the read started."""
    import time

    sess, ks = cassandra_keyspace(7)
    sess.execute(f"CREATE TABLE {ks}.patients (id int PRIMARY KEY, label text, "
                 "notes list<text>) WITH cdc = true")
    ahead = (time.time_ns() // 1000) + 3_600_000_000  # an hour ahead
    sess.execute(f"INSERT INTO {ks}.patients (id, label) VALUES (1, 'ahead') "
                 f"USING TIMESTAMP {ahead}")
    sess.execute(f"INSERT INTO {ks}.patients (id, label) VALUES (2, 'past') "
                 "USING TIMESTAMP 1000")
    before = time.time_ns() // 1000
    loaded = {o.key["id"]: o.version for o in _drain(_partition(sess, ks, sess))}
    after = time.time_ns() // 1000
    assert before <= loaded[1] <= after
    assert loaded[2] == 1000


def test_a_row_held_back_keeps_the_time_of_its_own_read(cassandra_keyspace):
    """A page ending inside a partition holds its rows back to the next page: their versions
    are capped at when their own read started, not the next page's."""
    sess, ks = cassandra_keyspace(7)
    sess.execute(f"CREATE TABLE {ks}.wide (k int, c int, v int, PRIMARY KEY (k, c)) "
                 "WITH cdc = true")
    future = 10**18  # microseconds: far ahead of every read
    for c in range(3):
        sess.execute(f"INSERT INTO {ks}.wide (k, c, v) VALUES (1, {c}, {c}) "
                     f"USING TIMESTAMP {future}")
    reads = iter(range(1, 100))
    from connectors.cassandra.snapshot import SnapshotPartition

    (table,) = SchemaRegistry.from_session(sess, [ks.strip('"')]).tables()
    partition = SnapshotPartition("load", sess, table, MIN_TOKEN, MAX_TOKEN, None, page_size=2,
                                  consistency=ConsistencyLevel.ONE,
                                  clock=lambda: next(reads) * 10**12)  # read n at n * 1e9 us
    versions = {o.key["c"]: o.version for o in _drain(partition)}
    assert versions == {0: 10**9, 1: 10**9, 2: 2 * 10**9}
