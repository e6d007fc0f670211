"""The PostgreSQL sink's fast paths keep its guarantees: a batch of new keys goes by plain COPY
into the table, a batch meeting stored keys falls back to the staged, version-guarded upsert
(in the same transaction, nothing of the failed attempt kept), the upsert by MERGE gives way to
INSERT ... ON CONFLICT when another transaction takes a key under it, and a value the binary
COPY cannot write is redone as text COPY, whose refusal names the column."""

from __future__ import annotations

import dataclasses
import datetime
import threading

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import sql

from connectors.cassandra.events import Position
from connectors.postgres import RejectedValueError
from connectors.postgres._apply import DirectCopy, _binary_types
from connectors.row_batch import highest_positions
from tests.connectors.postgres.conftest import KS, column, make_sink, rows, schemas
from tests.connectors.postgres.test_sink import delete, up
from tests.waiting import wait_for

# Only types with a binary COPY form: the binary path is taken.
TABLES = schemas([
    column("bin", "k", "partition_key", "int", 0),
    column("bin", "n", "regular", "int"),
    column("bin", "v", "regular", "text"),
])


@pytest.fixture
def bin_part(settings):
    built = make_sink(settings, TABLES).build_part("pg_bulk", "0", None)
    yield built
    built.close()


def stored(conn, schema) -> list[tuple]:
    return rows(conn, schema, f"{KS}__bin", "k, n, v, _cdc_version, _cdc_deleted")


def test_new_keys_by_copy_then_stored_keys_by_guarded_upsert(bin_part, settings, conn) -> None:
    bin_part.write_batch([up("bin", {"k": k}, {"n": k, "v": f"v{k}"}, 10) for k in range(300)])
    assert len(stored(conn, settings.schema)) == 300
    # Stored keys (older, newer, a tombstone) mixed with new ones: the direct COPY fails on
    # the first stored key and the whole batch takes the upsert, guard included.
    bin_part.write_batch(
        [up("bin", {"k": k}, {"n": -1, "v": "older"}, 5) for k in range(0, 100)]
        + [up("bin", {"k": k}, {"n": -2, "v": "newer"}, 20) for k in range(100, 200)]
        + [delete("bin", {"k": k}, 30) for k in range(200, 250)]
        + [up("bin", {"k": k}, {"n": k, "v": "new"}, 10) for k in range(300, 400)])
    got = {r[0]: r[1:] for r in stored(conn, settings.schema)}
    assert len(got) == 400
    assert all(got[k] == (k, f"v{k}", 10, False) for k in range(0, 100))
    assert all(got[k] == (-2, "newer", 20, False) for k in range(100, 200))
    assert all(got[k] == (None, None, 30, True) for k in range(200, 250))
    assert all(got[k] == (k, f"v{k}", 10, False) for k in range(250, 300))
    assert all(got[k] == (k, "new", 10, False) for k in range(300, 400))
    # Replaying both batches changes nothing.
    before = stored(conn, settings.schema)
    bin_part.write_batch([up("bin", {"k": k}, {"n": k, "v": f"v{k}"}, 10) for k in range(300)])
    assert stored(conn, settings.schema) == before


def _redone(reason: str, sink: str = "pg_bulk") -> float:
    return REGISTRY.get_sample_value("cdc_postgres_batches_redone_total",
                                     {"sink": sink, "reason": reason}) or 0.0


@pytest.fixture
def staged_part(settings):
    """A partition that always stages and upserts (no plain COPY first)."""
    built = make_sink(settings, TABLES, direct_copy=False).build_part(
        "pg_bulk", "0", None)
    yield built
    built.close()


def test_merge_gives_way_to_on_conflict_when_a_key_is_inserted_meanwhile(
        staged_part, settings, conn, pg_password) -> None:
    # MERGE (PostgreSQL 15+) does not insert speculatively: a key another transaction inserts
    # after MERGE looked for it raises a unique violation instead of meeting the version guard.
    # The sink then redoes the whole batch by INSERT ... ON CONFLICT.
    assert conn.info.server_version >= 150000  # the stack's server: the sink MERGEs
    bin_part = staged_part
    redone = _redone("merge_raced")
    bin_part.write_batch([up("bin", {"k": 1}, {"n": 1, "v": "a"}, 10)])
    other = psycopg.connect(**settings.connection_kwargs(pg_password))
    failed: list[BaseException] = []

    def write() -> None:
        try:
            bin_part.write_batch([up("bin", {"k": 1}, {"n": 2, "v": "b"}, 20),
                                  up("bin", {"k": 2}, {"n": 2, "v": "sink"}, 5)])
        except BaseException as error:  # noqa: BLE001 - asserted below
            failed.append(error)

    writer = threading.Thread(target=write, daemon=True)
    try:
        # Newer than the sink's image of key 2: the guard must keep it, fallback or not.
        other.execute(sql.SQL("INSERT INTO {} (k, n, v, _cdc_version, _cdc_deleted) VALUES "
                              "(2, -1, 'other', 100, false)").format(
            sql.Identifier(settings.schema, f"{KS}__bin")))  # not committed yet
        writer.start()
        wait_for(lambda: conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND"
            " wait_event_type = 'Lock' AND wait_event = 'transactionid' AND pid <> %s",
            (other.info.backend_pid,)).fetchone(),
            "the sink's write waiting for the other transaction's key", 10, interval=0.05)
        assert writer.is_alive(), "the sink's write did not wait for the other transaction"
        other.commit()
    finally:
        other.rollback()
        other.close()
    writer.join(10)
    assert not writer.is_alive() and not failed, failed
    got = {r[0]: r[1:] for r in stored(conn, settings.schema)}
    assert got == {1: (2, "b", 20, False), 2: (-1, "other", 100, False)}
    assert _redone("merge_raced") == redone + 1


def test_a_table_refusing_merge_is_upserted_by_on_conflict(settings, conn, caplog,
                                                           monkeypatch) -> None:
    # PostgreSQL refuses MERGE on a relation with rules (ON CONFLICT only minds INSERT and
    # UPDATE rules): the batch goes by ON CONFLICT, and so does every later one of that table,
    # with one warning; another table keeps MERGE.
    from connectors.postgres import _apply

    tables = schemas([column(t, "k", "partition_key", "int", 0) for t in ("ruled", "plain")]
                     + [column(t, "n", "regular", "int") for t in ("ruled", "plain")])
    statements: list[tuple[str, bool]] = []
    real = _apply.upsert_statement

    def recorded(table, stage, keys, values, *, merge):
        statements.append((table.as_string(conn).split(".")[-1].strip('"'), merge))
        return real(table, stage, keys, values, merge=merge)

    monkeypatch.setattr(_apply, "upsert_statement", recorded)
    part = make_sink(settings, tables, direct_copy=False).build_part(
        "pg_rules", "0", None)

    def both(k: int, version: int) -> list:
        return [up(t, {"k": k}, {"n": version}, version) for t in ("ruled", "plain")]

    try:
        part.write_batch(both(1, 10))
        conn.execute(sql.SQL("CREATE RULE keep_rows AS ON DELETE TO {} DO INSTEAD NOTHING"
                             ).format(sql.Identifier(settings.schema, f"{KS}__ruled")))
        redone = _redone("merge_refused", "pg_rules")
        statements.clear()
        with caplog.at_level("WARNING", logger="connectors.postgres._sink"):
            part.write_batch(both(1, 20) + both(2, 20))
            part.write_batch(both(1, 15) + both(3, 30))
    finally:
        part.close()
    for table in ("ruled", "plain"):
        got = rows(conn, settings.schema, f"{KS}__{table}", "k, n, _cdc_version")
        assert got == [(1, 20, 20), (2, 20, 20), (3, 30, 30)]
    refusals = [r for r in caplog.records if "refuses MERGE" in r.getMessage()]
    assert len(refusals) == 1 and "shop__ruled" in refusals[0].getMessage()
    assert _redone("merge_refused", "pg_rules") == redone + 1
    # Refused, then the batch redone by ON CONFLICT; the next batch: MERGE for plain only.
    assert statements == [("shop__ruled", True), ("shop__ruled", False),
                          ("shop__plain", False), ("shop__ruled", False), ("shop__plain", True)]


@pytest.mark.parametrize("first", [2449, 49])  # streamed, or in one piece
def test_a_table_refusing_copy_is_staged_from_then_on(bin_part, settings, conn, monkeypatch,
                                                      first) -> None:
    # COPY FROM into a table whose row-level security applies to the sink's role is refused
    # (FeatureNotSupported); MERGE and ON CONFLICT are not: such a table is staged, and no
    # COPY into it is tried again.
    from connectors.postgres import _apply

    table = sql.Identifier(settings.schema, f"{KS}__bin")
    into_table: list[str] = []
    real_copy, real_stream = _apply._Batch._copy, _apply._Batch._stream  # noqa: SLF001

    def note(into) -> None:
        if "_cdc_stage_" not in into.as_string(conn):
            into_table.append(into.as_string(conn))

    def copy(batch, into, *args):
        note(into)
        return real_copy(batch, into, *args)

    def stream(batch, into, *args):
        note(into)
        return real_stream(batch, into, *args)

    monkeypatch.setattr(_apply._Batch, "_copy", copy)  # noqa: SLF001
    monkeypatch.setattr(_apply._Batch, "_stream", stream)  # noqa: SLF001
    bin_part.write_batch([up("bin", {"k": 0}, {"n": 0, "v": "a"}, 1)])  # the table
    conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(table))
    conn.execute(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(table))
    conn.execute(sql.SQL("CREATE POLICY every_row ON {} USING (true) WITH CHECK (true)"
                         ).format(table))
    into_table.clear()
    bin_part.write_batch([up("bin", {"k": k}, {"n": k, "v": "b"}, 10)
                          for k in range(1, 1 + first)])
    assert len(into_table) == 1  # tried once, refused
    for start in range(1 + first, 5000, 1000):
        bin_part.write_batch([up("bin", {"k": k}, {"n": k, "v": "c"}, 10)
                              for k in range(start, min(start + 1000, 5000))])
    assert len(into_table) == 1  # never again, however new the keys
    assert [r[0] for r in stored(conn, settings.schema)] == list(range(5000))


def test_value_binary_copy_refuses_is_named_by_text_copy(bin_part, settings, conn) -> None:
    batch = [up("bin", {"k": k}, {"n": k, "v": "x"}, 10) for k in range(50)]
    batch[30] = up("bin", {"k": 30}, {"n": 2**40, "v": "x"}, 10)  # no int4 holds it
    with pytest.raises(RejectedValueError) as caught:
        bin_part.write_batch(batch)
    assert caught.value.column == "n" and caught.value.key_fingerprint is not None
    assert stored(conn, settings.schema) == []
    assert rows(conn, settings.schema, "_cdc_progress") == []


def test_direct_copy_backs_off_after_conflicts() -> None:
    direct = DirectCopy(max_skip=4)
    assert direct.should_try("t") and not direct.probe("t")
    direct.conflicted("t")  # skip 1
    assert not direct.should_try("t") and direct.should_try("t") and direct.probe("t")
    direct.conflicted("t")  # skip 2
    assert [direct.should_try("t") for _ in range(3)] == [False, False, True]
    direct.conflicted("t")
    direct.conflicted("t")  # capped at 4
    assert [direct.should_try("t") for _ in range(5)] == [False] * 4 + [True]
    direct.succeeded("t")  # backoff halves (4 -> 2), still probing
    assert direct.should_try("t") and direct.probe("t")
    direct.succeeded("t")
    direct.conflicted("t")  # 1 -> 2
    assert [direct.should_try("t") for _ in range(3)] == [False, False, True]
    direct.succeeded("u")
    assert not direct.probe("u")  # never met a stored key


@pytest.mark.parametrize(("pg_type", "values", "binary"), [
    ("integer", [1, None, -2**31, 2**31 - 1], True),
    ("integer", [2**31], False),  # psycopg's binary int4 would write 0x80000000
    ("smallint", [70000], False),
    ("bigint", [2**63], False),
    ("integer", [True], False),
    # NULLs beside: the other values are still checked (types and ranges), NULLs alone pass
    ("integer", [None, True], False),
    ("bigint", [None, "1"], False),
    ("integer", [None, 2**31], False),
    ("timestamptz", [None, datetime.datetime(2020, 1, 1)], False),
    ("bigint", [None, None], True),
    ("real", [0.5, float(1 << 24)], True),
    ("real", [1e300], False),  # binary: infinity; text: refused by the server
    ("real", [0.1], False),  # not exact in 32 bits: the server rounds its text
    ("double precision", [0.1, 1], False),
    ("text", ["a", None], True),
    ("text", [b"a"], True),  # psycopg refuses it: text COPY redoes it
    ("timestamptz", [datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)], True),
    ("timestamptz", [datetime.datetime(2020, 1, 1)], False),
    ("date", [datetime.datetime(2020, 1, 1)], False),
    ("jsonb", ["{}"], False),
    ("inet", ["127.0.0.1"], False),
])
def test_binary_copy_only_for_values_it_writes_exactly(pg_type, values, binary) -> None:
    assert (_binary_types([pg_type], [values]) is not None) is binary


def _row_rule(stored: dict[int, tuple], ops: list) -> dict[int, tuple]:
    """What the table holds after OPS, applied one by one with the version guard (a stored
    version <= the operation's is replaced; a delete leaves a tombstone)."""
    state = dict(stored)
    for op in ops:
        key = op.key["k"]
        if key in state and state[key][2] > op.version:
            continue
        values = (op.values["n"], op.values["v"]) if hasattr(op, "values") else (None, None)
        state[key] = (*values, op.version, not hasattr(op, "values"))
    return state


@pytest.mark.parametrize("merge", [True, False])
def test_large_batches_streamed_in_chunks_give_the_row_rule(settings, conn, merge,
                                                            monkeypatch) -> None:
    """Batches of thousands of operations are converted chunk by chunk as their COPY streams
    (connectors/postgres/_apply.py, `_Chunks`): new keys straight into the table, stored ones
    staged and upserted, and a batch with keys repeated across chunks (lower, equal and higher
    versions, deletes) or a later chunk without an exact binary form restarts in one piece.
    Every way ends as the operations applied one by one do."""
    import random

    from connectors.postgres import PostgresSink, _apply

    streams = []
    real_stream = _apply._Batch._stream  # noqa: SLF001

    def recorded(batch, into, *args):
        try:
            real_stream(batch, into, *args)
        except _apply._Restart:  # noqa: SLF001
            streams.append("restart")
            raise
        except psycopg.errors.UniqueViolation:
            streams.append("conflict")
            raise
        streams.append("stage" if "_cdc_stage_" in into.as_string(conn) else "direct")

    monkeypatch.setattr(_apply._Batch, "_stream", recorded)  # noqa: SLF001
    rnd = random.Random(7)
    part = PostgresSink(settings, lambda ks, t: TABLES.get((ks, t)), merge=merge).build_part(
        "pg_chunks", "0", None)

    written: list = []

    def progress() -> dict:
        return {node: Position(segment, offset) for node, segment, offset in conn.execute(
            sql.SQL("SELECT node, segment_id, \"offset\" FROM {} WHERE step_id = 'pg_chunks'"
                    ).format(sql.Identifier(settings.schema, "_cdc_progress"))).fetchall()}

    shuffle = random.Random(11).shuffle

    def write(ops: list, expected_streams: list[str]) -> None:
        # The batch's positions in no order: its highest is in any chunk, not the last one.
        sources = [op.source for op in ops]
        shuffle(sources)
        ops = [dataclasses.replace(op, source=source)
               for op, source in zip(ops, sources, strict=True)]
        before = {r[0]: r[1:] for r in stored(conn, settings.schema)}
        streams.clear()
        part.write_batch(ops)
        assert streams == expected_streams
        expected = _row_rule(before, ops)
        assert {r[0]: r[1:] for r in stored(conn, settings.schema)} == expected
        written.extend(ops)  # every way records the positions of all its operations
        assert progress() == highest_positions(written)
        part.write_batch(ops)  # a replay
        assert {r[0]: r[1:] for r in stored(conn, settings.schema)} == expected

    def upsert(k: int, version: int, text: str = "w"):
        return up("bin", {"k": k}, {"n": k * version, "v": f"{text}{k}"}, version)

    try:
        part.write_batch([upsert(1, 1)])  # the table
        # New keys, distinct: one COPY into the table, streamed.
        write([upsert(k, 10, "seed") for k in range(0, 6000, 2)], ["direct"])
        # (Its replay met stored keys: the next batch skips the direct COPY.) Stored and new
        # keys, distinct, some older than the stored rows, some deletes: the stage streams.
        keys = list(range(7000))
        rnd.shuffle(keys)
        write([delete("bin", {"k": k}, 15) if k % 10 == 0 else upsert(k, rnd.choice([5, 10, 20]))
               for k in keys], ["stage"])
        # Keys repeated across chunks: the stream restarts, the batch goes in one piece.
        write([delete("bin", {"k": k}, v) if rnd.random() < 0.1 else upsert(k, v)
               for i in range(7000)
               for k, v in [(rnd.randrange(8000), rnd.choice([5, 10, 10, 15, 20 + i]))]],
              ["restart"])
    finally:
        part.close()


def test_a_later_chunk_without_an_exact_binary_form_restarts_in_one_piece(settings, conn
                                                                          ) -> None:
    """The first chunk's floats have an exact binary form (binary COPY), a later one holds
    1e300, which binary COPY would write as infinity where the text form is refused: the
    stream stops and the batch goes in one piece by text COPY, whose refusal names the
    column; nothing of the batch is written."""
    tables = schemas([column("flt", "k", "partition_key", "int", 0),
                      column("flt", "f", "regular", "float")])
    part = make_sink(settings, tables).build_part("pg_flt", "0", None)
    try:
        part.write_batch([up("flt", {"k": -1}, {"f": 1.0}, 1)])  # the table
        ops = [up("flt", {"k": k}, {"f": k / 2}, 10) for k in range(3000)]
        ops[2500] = up("flt", {"k": 2500}, {"f": 1e300}, 10)
        with pytest.raises(RejectedValueError, match=r"column f\b"):
            part.write_batch(ops)
        assert rows(conn, settings.schema, f"{KS}__flt", "k, f") == [(-1, 1.0)]
        del ops[2500]
        part.write_batch(ops)  # the rest: streamed, binary
        assert len(rows(conn, settings.schema, f"{KS}__flt", "k, f")) == 3000
    finally:
        part.close()


def test_a_later_chunk_failing_to_convert_otherwise_fails_the_batch_whole(settings, conn,
                                                                          monkeypatch) -> None:
    """A chunk's conversion failing with anything but a refusal (a converter's own bug) is no
    reason for the COPY paths to try another way: the chunk's operations have left its
    pending list, so another way would write the batch without them. It raises
    ChunkConversionError naming the error's class, and nothing of the batch is written."""
    from connectors import row_batch
    from connectors.postgres._apply import ChunkConversionError

    tables = schemas([column("cc", "k", "partition_key", "int", 0),
                      column("cc", "v", "regular", "text")])
    part = make_sink(settings, tables).build_part("pg_cc", "0", None)
    real, calls = row_batch.Gatherer._columns, []  # noqa: SLF001

    def second_chunk_fails(gatherer, target, ops):
        calls.append(len(ops))
        if len(calls) == 2:
            raise KeyError("a converter's bug")
        return real(gatherer, target, ops)

    try:
        part.write_batch([up("cc", {"k": -1}, {"v": "seed"}, 1)])  # the table
        monkeypatch.setattr(row_batch.Gatherer, "_columns", second_chunk_fails)
        with pytest.raises(ChunkConversionError, match="KeyError"):
            part.write_batch([up("cc", {"k": k}, {"v": "x"}, 10) for k in range(3000)])
        assert len(calls) >= 2  # streamed in chunks, the second one failing
        assert rows(conn, settings.schema, f"{KS}__cc", "k, v") == [(-1, "seed")]
    finally:
        part.close()


def test_nan_keys_of_a_large_batch_are_one_row(settings, conn) -> None:
    """A float key column can hold NaN, and NaN != NaN in Python: a large batch of such a table
    is not streamed in chunks (the check across chunks compares keys as Python does) but
    gathered whole, NaN as one key, stored rows or new."""
    import math

    tables = schemas([column("fk", "x", "partition_key", "double", 0),
                      column("fk", "v", "regular", "text")])
    part = make_sink(settings, tables).build_part("pg_nan", "0", None)

    def batch(version: int) -> list:
        ops = [up("fk", {"x": float(i)}, {"v": f"{version}"}, version) for i in range(2500)]
        # Two NaN objects, as decoding gives (one object would be found by identity).
        ops[0] = up("fk", {"x": float("nan")}, {"v": f"first {version}"}, version)
        ops[2400] = up("fk", {"x": float("nan")}, {"v": f"last {version}"}, version)
        return ops

    try:
        part.write_batch(batch(10))  # new rows
        part.write_batch(batch(20))  # stored rows
    finally:
        part.close()
    got = rows(conn, settings.schema, f"{KS}__fk", "x, v, _cdc_version")
    assert len(got) == 2499
    nan = [r for r in got if math.isnan(r[0])]
    assert [r[1:] for r in nan] == [("last 20", 20)]  # ties: the later operation


def test_an_upsert_error_after_the_whole_binary_copy_is_raised_as_it_is(staged_part, settings,
                                                                       conn) -> None:
    """A batch that goes in one piece (a key repeated across its chunks) is staged by binary
    COPY and upserted; an error of the upsert itself (here a trigger's) is the batch's error.
    It is not a failed binary COPY, so it must not send the rows to the text COPY, which ran
    in the aborted transaction and raised InFailedSqlTransaction in its place."""
    staged_part.write_batch([up("bin", {"k": 0}, {"n": 0, "v": "first"}, 1)])
    table = sql.Identifier(settings.schema, f"{KS}__bin")
    conn.execute(sql.SQL("""CREATE OR REPLACE FUNCTION {}.cdc_test_refuse() RETURNS trigger
                         LANGUAGE plpgsql AS $$ BEGIN
                           IF NEW.n = -7 THEN RAISE EXCEPTION 'refused by a trigger'
                             USING ERRCODE = '22023'; END IF;
                           RETURN NEW; END $$""").format(sql.Identifier(settings.schema)))
    conn.execute(sql.SQL("CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON {} FOR EACH ROW"
                         " EXECUTE FUNCTION {}.cdc_test_refuse()").format(
        table, sql.Identifier(settings.schema)))
    try:
        batch = [up("bin", {"k": k}, {"n": k, "v": "x"}, 2) for k in range(2500)]
        batch += [up("bin", {"k": 7}, {"n": -7, "v": "refused"}, 3)]  # key 7 again, chunk 3
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="refused by a trigger"):
            staged_part.write_batch(batch)
        assert stored(conn, settings.schema) == [(0, 0, "first", 1, False)]  # all or nothing
    finally:
        conn.execute(sql.SQL("DROP TRIGGER refuse ON {}").format(table))


def test_a_range_deletes_tombstones_skip_the_plain_copy(bin_part, settings, conn) -> None:
    """A range delete's tombstones are of stored keys: a plain COPY of them could only meet
    those keys and make the table back off from plain COPY for the inserts after it."""
    from tests.connectors.postgres.test_sink import rng

    bin_part.write_batch([up("bin", {"k": k}, {"n": k, "v": "x"}, 10) for k in (1, 2)])
    bin_part.write_batch([rng("bin", {"k": 1}, {}, True, {}, True, 20)])
    assert stored(conn, settings.schema) == [(1, None, None, 20, True), (2, 2, "x", 10, False)]
    direct = bin_part._direct  # noqa: SLF001 - the back-off is what is tested
    assert not direct.probe(f"{KS}__bin") and direct.should_try(f"{KS}__bin")
