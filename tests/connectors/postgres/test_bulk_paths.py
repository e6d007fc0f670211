"""The PostgreSQL sink's fast paths keep its guarantees: a batch of new keys goes by plain COPY
into the table, a batch meeting stored keys falls back to the staged, version-guarded upsert
(in the same transaction, nothing of the failed attempt kept), the upsert by MERGE gives way to
INSERT ... ON CONFLICT when another transaction takes a key under it, and a value the binary
COPY cannot write is redone as text COPY, whose refusal names the column."""

from __future__ import annotations

import datetime
import threading

import psycopg
import pytest
from psycopg import sql

from connectors.postgres import RejectedValueError
from connectors.postgres._apply import DirectCopy, _binary_types
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


def test_merge_gives_way_to_on_conflict_when_a_key_is_inserted_meanwhile(
        bin_part, settings, conn, pg_password) -> None:
    # MERGE (PostgreSQL 15+) does not insert speculatively: a key another transaction inserts
    # after MERGE looked for it raises a unique violation instead of meeting the version guard.
    # The sink then redoes the whole batch by INSERT ... ON CONFLICT.
    assert conn.info.server_version >= 150000  # the stack's server: the sink MERGEs
    bin_part._direct = None  # noqa: SLF001 - straight to the staged upsert (no plain COPY try)
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


def test_a_table_refusing_merge_is_upserted_by_on_conflict(bin_part, settings, conn,
                                                           caplog) -> None:
    # PostgreSQL refuses MERGE on a relation with rules (ON CONFLICT only minds INSERT and
    # UPDATE rules): the batch goes by ON CONFLICT, and so does every later one, with one
    # warning.
    bin_part._direct = None  # noqa: SLF001 - straight to the staged upsert (no plain COPY try)
    bin_part.write_batch([up("bin", {"k": 1}, {"n": 1, "v": "a"}, 10)])
    conn.execute(sql.SQL("CREATE RULE keep_rows AS ON DELETE TO {} DO INSTEAD NOTHING").format(
        sql.Identifier(settings.schema, f"{KS}__bin")))
    with caplog.at_level("WARNING", logger="connectors.postgres._sink"):
        bin_part.write_batch([up("bin", {"k": 1}, {"n": 2, "v": "b"}, 20),
                              up("bin", {"k": 2}, {"n": 2, "v": "c"}, 20)])
        bin_part.write_batch([up("bin", {"k": 1}, {"n": 3, "v": "old"}, 15),
                              up("bin", {"k": 3}, {"n": 3, "v": "d"}, 30)])
    got = {r[0]: r[1:] for r in stored(conn, settings.schema)}
    assert got == {1: (2, "b", 20, False), 2: (2, "c", 20, False), 3: (3, "d", 30, False)}
    refusals = [r for r in caplog.records if "refuses MERGE" in r.getMessage()]
    assert len(refusals) == 1


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
