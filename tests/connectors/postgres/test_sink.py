"""PostgresSink against the stack's PostgreSQL: layout, version guards, range deletes in
Cassandra's order, transactions with progress, a Bytewax run."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import ipaddress
import uuid

import pytest
from cassandra import util as cutil
from psycopg import sql

from connectors.cassandra.events import Position
from connectors.postgres import (
    LayoutError,
    PostgresSink,
    PostgresSinkSettings,
    RejectedValueError,
    UnsupportedRange,
    shorten,
    stable_partition,
    table_names,
)
from operators.masking import MaskingPolicy, masked_column_types
from operators.row_ops import (
    INITIAL_LOAD,
    ClusteringBound,
    RangeDelete,
    RowDelete,
    RowUpsert,
    Source,
)
from tests.connectors.postgres.conftest import KS, column, make_sink, rows, schemas

NODE = "10.0.0.1"
A_HASH, KEY_HASH = 4681665781835383343, 13934631275447708254
_offset = iter(range(1, 10**9))


def src(node: str = NODE) -> Source:
    return Source(node, Position(1700000000000, next(_offset)))


def up(table: str, key: dict, values: dict, version: int, static: bool = False,
       source: Source | None = None) -> RowUpsert:
    return RowUpsert(KS, table, key, values, version, source or src(), static)


def delete(table: str, key: dict, version: int, static: bool = False) -> RowDelete:
    return RowDelete(KS, table, key, version, src(), static)


def rng(table: str, pk: dict, start: dict, start_incl: bool, end: dict, end_incl: bool,
        version: int, include_static: bool = False) -> RangeDelete:
    return RangeDelete(KS, table, pk, ClusteringBound(start, start_incl),
                       ClusteringBound(end, end_incl), version, src(), include_static)


def live(conn, schema, table, columns="*", order="1"):
    return rows(conn, schema, f"{KS}__{table}__current", columns, order)


# --- settings, names, routing (no I/O) --------------------------------------------------------

BASE = dict(host="127.0.0.1", dbname="cdc", user="u", password_ref="env:PW",
            sslrootcert="/ca.crt")


@pytest.mark.parametrize(("change", "word"), [
    ({"port": 0}, "port"), ({"password_ref": "hunter2"}, "password_ref"),
    ({"partitions": 0}, "partitions"), ({"schema": "x" * 64}, "schema"),
    ({"pool_min_size": 3, "pool_max_size": 2}, "pool_min_size"), ({"host": ""}, "host"),
    ({"fillfactor": 9}, "fillfactor"), ({"fillfactor": 101}, "fillfactor"),
    ({"fillfactor": 50.0}, "fillfactor"), ({"fillfactor": "50"}, "not '50'"),
])
def test_settings_are_validated(change: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        PostgresSinkSettings(**{**BASE, **change})


@pytest.mark.parametrize("option", ["merge", "direct_copy"])
def test_sink_switches_are_booleans(option: str) -> None:
    with pytest.raises(ValueError, match=rf"{option} must be True or False, not 1"):
        PostgresSink(PostgresSinkSettings(**BASE), lambda ks, t: None, **{option: 1})


def test_settings_require_verified_tls13_and_hide_no_password() -> None:
    s = PostgresSinkSettings(**BASE)
    kw = s.connection_kwargs("secret")
    assert (kw["sslmode"], kw["ssl_min_protocol_version"]) == ("verify-full", "TLSv1.3")
    assert "secret" not in repr(s)
    with pytest.raises(TypeError):
        PostgresSinkSettings("127.0.0.1")  # type: ignore[misc]  # keyword-only


def test_long_names_are_shortened_stably_and_distinctly() -> None:
    ks, t = "k" * 48, "t" * 48
    names = table_names(ks, t)
    assert all(len(n.encode()) <= 63 for n in names)
    assert len(set(names)) == 3
    assert names == table_names(ks, t)
    assert shorten("é" * 40) != shorten("é" * 41) and len(shorten("é" * 40).encode()) <= 63
    assert table_names("shop", "orders") == ("shop__orders", "shop__orders__static",
                                             "shop__orders__current")


def test_part_fn_is_a_stable_hash() -> None:
    # Fixed values: a change here would re-route every key of a running deployment.
    assert (stable_partition("a"), stable_partition("shop.orders:1")) == (A_HASH, KEY_HASH)
    sink = PostgresSink(PostgresSinkSettings(**BASE, partitions=4), lambda ks, t: None)
    assert sink.list_parts() == ["0", "1", "2", "3"]
    spread = {sink.part_fn(f"k{i}") % 4 for i in range(100)}
    assert spread == {0, 1, 2, 3}


# --- layout --------------------------------------------------------------------------------------

def test_tables_view_and_types_from_schema(settings, conn) -> None:
    part = make_sink(settings).build_part("pg_out", "0", None)
    part.write_batch([up("asc_t", {"p": "x", "a": 1, "b": "q"}, {"v": "hi", "n": 5}, 10)])
    part.close()
    cols = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (settings.schema, "shop__asc_t")).fetchall()
    assert cols == [
        ("p", "text", "NO"), ("a", "integer", "NO"), ("b", "text", "NO"),
        ("n", "bigint", "YES"), ("v", "text", "YES"),
        ("_cdc_version", "bigint", "NO"), ("_cdc_deleted", "boolean", "NO"),
        ("_cdc_source_node", "text", "YES"), ("_cdc_source_segment", "bigint", "YES"),
        ("_cdc_source_offset", "integer", "YES"),
        ("_cdc_updated_at", "timestamp with time zone", "NO")]
    pk = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
        " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary"
        " ORDER BY array_position(i.indkey, a.attnum)",
        (f'"{settings.schema}"."shop__asc_t"',)).fetchall()
    assert [r[0] for r in pk] == ["p", "a", "b"]
    static_cols = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
        " AND table_name = %s ORDER BY ordinal_position",
        (settings.schema, "shop__asc_t__static")).fetchall()
    assert [r[0] for r in static_cols][:2] == ["p", "s"]
    assert live(conn, settings.schema, "asc_t") == [("x", 1, "q", None, 5, "hi", 10)]
    # No static columns: no companion table.
    assert conn.execute("SELECT to_regclass(%s)",
                        (f'"{settings.schema}"."shop__kv__static"',)).fetchone() == (None,)


def _fillfactors(conn, schema: str) -> dict[str, str | None]:
    """Per table of SCHEMA, its fillfactor storage parameter (None: not set)."""
    found = conn.execute(
        "SELECT c.relname, (SELECT o FROM unnest(c.reloptions) o WHERE o LIKE 'fillfactor=%%')"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname LIKE 'shop\\_\\_%%'",
        (schema,)).fetchall()
    return dict(found)


def test_fillfactor_is_set_on_new_tables_and_follows_the_setting(settings, conn) -> None:
    def write(fillfactor: int | None, version: int) -> None:
        part = make_sink(dataclasses.replace(settings, fillfactor=fillfactor)).build_part(
            "pg_out", "0", None)
        part.write_batch([up("asc_t", {"p": "x", "a": 1, "b": "q"}, {"v": "hi"}, version),
                          up("asc_t", {"p": "x"}, {"s": "st"}, version, static=True)])
        part.close()

    write(None, 9)  # not set: PostgreSQL's default, nothing stored
    assert _fillfactors(conn, settings.schema) == {
        "shop__asc_t": None, "shop__asc_t__static": None}
    write(50, 10)  # set: the rows table and its static companion
    assert _fillfactors(conn, settings.schema) == {
        "shop__asc_t": "fillfactor=50", "shop__asc_t__static": "fillfactor=50"}
    write(80, 11)  # a later run with another setting: the existing tables follow
    assert _fillfactors(conn, settings.schema) == {
        "shop__asc_t": "fillfactor=80", "shop__asc_t__static": "fillfactor=80"}
    write(100, 12)  # back to PostgreSQL's default
    assert _fillfactors(conn, settings.schema) == {
        "shop__asc_t": "fillfactor=100", "shop__asc_t__static": "fillfactor=100"}
    # Not set: a fillfactor set by hand stays.
    conn.execute(sql.SQL("ALTER TABLE {} SET (fillfactor = 60)").format(
        sql.Identifier(settings.schema, "shop__asc_t")))
    write(None, 13)
    assert _fillfactors(conn, settings.schema) == {
        "shop__asc_t": "fillfactor=60", "shop__asc_t__static": "fillfactor=100"}
    assert live(conn, settings.schema, "asc_t", "p, a, b, s, v") == [("x", 1, "q", "st", "hi")]


def test_a_fillfactor_the_role_may_not_set_is_named(settings, conn) -> None:
    """A destination table someone else owns: the sink cannot ALTER it and says which option
    asked for it; unset, the table is written as it is."""
    from devstack import postgres

    table = sql.Identifier(settings.schema, "shop__kv")
    with postgres.connect(role="admin", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE TABLE {} (k integer PRIMARY KEY, v text, addr inet,"
                              " _cdc_version bigint NOT NULL, _cdc_deleted boolean NOT NULL,"
                              " _cdc_source_node text, _cdc_source_segment bigint,"
                              " _cdc_source_offset integer, _cdc_updated_at timestamptz NOT NULL"
                              " DEFAULT now())").format(table))
        admin.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON {} TO {}").format(
            table, sql.Identifier(settings.user)))
        part = make_sink(dataclasses.replace(settings, fillfactor=50)).build_part(
            "pg_out", "0", None)
        try:
            with pytest.raises(LayoutError, match=r"shop__kv: cannot set its fillfactor to 50 "
                                                  r"\(options.fillfactor\).*does not own"):
                part.write_batch([up("kv", {"k": 1}, {"v": "a"}, 10)])
        finally:
            part.close()
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone() == (0,)
        admin.execute(sql.SQL("DROP TABLE {}").format(table))


ALL_TYPES = [
    ("c_ascii", "ascii", "text"), ("c_text", "text", "text"), ("c_varchar", "varchar", "text"),
    ("c_int", "int", "integer"), ("c_bigint", "bigint", "bigint"),
    ("c_smallint", "smallint", "smallint"), ("c_tinyint", "tinyint", "smallint"),
    ("c_boolean", "boolean", "boolean"), ("c_float", "float", "real"),
    ("c_double", "double", "double precision"), ("c_decimal", "decimal", "numeric"),
    ("c_varint", "varint", "numeric"), ("c_uuid", "uuid", "uuid"),
    ("c_timeuuid", "timeuuid", "uuid"), ("c_timestamp", "timestamp", "timestamp with time zone"),
    ("c_date", "date", "date"), ("c_time", "time", "time without time zone"),
    ("c_blob", "blob", "bytea"), ("c_inet", "inet", "inet"), ("c_duration", "duration", "text"),
    ("c_list", "list<int>", "jsonb"), ("c_set", "set<text>", "jsonb"),
    ("c_map", "map<int, text>", "jsonb"), ("c_tuple", "frozen<tuple<int, text>>", "jsonb"),
    ("c_udt", "frozen<addr>", "jsonb"), ("c_vec", "vector<float, 3>", "ARRAY"),
]


def test_every_type_maps_and_round_trips(settings, conn) -> None:
    cols = [column("types", "id", "partition_key", "int", 0)] + [
        column("types", name, "regular", cql) for name, cql, _ in ALL_TYPES]
    tables = schemas(cols, types=[{"keyspace_name": KS, "type_name": "addr",
                                   "field_names": ["street", "zip"],
                                   "field_types": ["text", "int"]}])
    udt = collections.namedtuple("addr", ["street", "zip"])  # what the driver decodes to
    values = {
        "c_ascii": "a", "c_text": "ünï", "c_varchar": "v", "c_int": -5, "c_bigint": 2**40,
        "c_smallint": 7, "c_tinyint": -3, "c_boolean": True, "c_float": 1.5,
        "c_double": 2.25, "c_decimal": decimal.Decimal("1.50"), "c_varint": 10**30,
        "c_uuid": uuid.UUID(int=5),
        "c_timeuuid": uuid.UUID("e3e70682-c209-11ee-8000-000000000001"),
        "c_timestamp": datetime.datetime(2024, 1, 2, 3, 4, 5, 678000),
        "c_date": cutil.Date(19000), "c_time": cutil.Time(3723000001999),
        "c_blob": b"\x00\xff", "c_inet": ipaddress.ip_address("10.1.2.3"),
        "c_duration": cutil.Duration(1, 2, 3), "c_list": [3, 1, 3],
        "c_set": cutil.SortedSet(["b", "a"]),
        "c_map": cutil.OrderedMap([(2, "x"), (1, None)]),
        "c_tuple": (1, "t"), "c_udt": udt("Main", 12345), "c_vec": [1.0, 2.5, -3.0],
    }
    part = make_sink(settings, tables).build_part("pg_out", "0", None)
    part.write_batch([up("types", {"id": 1}, values, 10)])
    part.close()
    found = dict(conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s"
        " AND table_name = 'shop__types'", (settings.schema,)).fetchall())
    assert {n: found[n] for n, _, _ in ALL_TYPES} == {n: pg for n, _, pg in ALL_TYPES}
    cur = conn.execute(sql.SQL("SELECT * FROM {}.shop__types").format(
        sql.Identifier(settings.schema)))
    got = dict(zip([d.name for d in cur.description], cur.fetchone(), strict=True))
    utc = datetime.UTC
    assert got["c_timestamp"] == datetime.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=utc)
    assert got["c_date"] == datetime.date(2022, 1, 8)
    assert got["c_time"] == datetime.time(1, 2, 3, 1)  # ns truncated to us
    assert (got["c_varint"], got["c_decimal"]) == (10**30, decimal.Decimal("1.50"))
    assert got["c_duration"] == "1mo2d3ns"
    assert got["c_inet"] == ipaddress.ip_address("10.1.2.3")
    assert bytes(got["c_blob"]) == b"\x00\xff"
    assert got["c_list"] == [3, 1, 3] and got["c_set"] == ["a", "b"]
    assert got["c_map"] == {"2": "x", "1": None}
    assert got["c_tuple"] == [1, "t"] and got["c_udt"] == {"street": "Main", "zip": 12345}
    assert got["c_vec"] == [1.0, 2.5, -3.0] and got["c_text"] == "ünï"
    assert got["c_timeuuid"] == values["c_timeuuid"]


def test_masked_columns_become_text(settings, conn) -> None:
    cols = [column("people", "id", "partition_key", "int", 0),
            column("people", "ssn", "regular", "int"),
            column("people", "phones", "regular", "list<int>"),
            column("people", "age", "regular", "int")]
    tables = schemas(cols)
    schema = tables[(KS, "people")]
    policy = MaskingPolicy.from_mapping({
        "version": 1, "hmac": {"key": "env:UNUSED"}, "unclassified_strategy": "hmac",
        "tables": {KS: {"people": {"columns": {
            "ssn": {"class": "ssn", "strategy": "hmac"},
            "phones": {"class": "phone", "strategy": "hmac"}}}}}})
    masked = masked_column_types(policy, KS, "people",
                                 {n: s.type for n, s in schema.columns.items()}, ["id"])
    assert masked == {"ssn": "text", "phones": "list<text>"}
    part = make_sink(settings, tables, {(KS, "people"): masked}).build_part("pg_out", "0", None)
    part.write_batch([up("people", {"id": 1}, {"ssn": "ab" * 32, "phones": ["cd"], "age": 4},
                        10)])
    part.close()
    found = dict(conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s"
        " AND table_name = 'shop__people'", (settings.schema,)).fetchall())
    assert (found["ssn"], found["phones"], found["age"]) == ("text", "jsonb", "integer")


# --- version guards --------------------------------------------------------------------------

def test_older_ignored_newer_applied_equal_later_wins(part, settings, conn) -> None:
    k = {"k": 1}
    part.write_batch([up("kv", k, {"v": "v10"}, 10)])
    part.write_batch([up("kv", k, {"v": "v5"}, 5)])
    assert live(conn, settings.schema, "kv", "v, _cdc_version") == [("v10", 10)]
    part.write_batch([up("kv", k, {"v": "v20"}, 20)])
    assert live(conn, settings.schema, "kv", "v, _cdc_version") == [("v20", 20)]
    part.write_batch([up("kv", k, {"v": "v20-later"}, 20)])
    assert live(conn, settings.schema, "kv", "v") == [("v20-later",)]
    # Within one batch: highest version, ties to the later operation.
    part.write_batch([up("kv", k, {"v": "a"}, 30), up("kv", k, {"v": "b"}, 29),
                      up("kv", k, {"v": "c"}, 30)])
    assert live(conn, settings.schema, "kv", "v, _cdc_version") == [("c", 30)]


def test_tombstone_cannot_be_resurrected_by_older_image(part, settings, conn) -> None:
    k = {"k": 2}
    part.write_batch([up("kv", k, {"v": "x"}, 10), delete("kv", k, 30)])
    part.write_batch([up("kv", k, {"v": "late"}, 25)])
    assert live(conn, settings.schema, "kv") == []
    stored = rows(conn, settings.schema, "shop__kv", "k, v, _cdc_version, _cdc_deleted")
    assert stored == [(2, None, 30, True)]
    part.write_batch([up("kv", k, {"v": "back"}, 31)])
    assert live(conn, settings.schema, "kv", "k, v") == [(2, "back")]
    # A delete of a row never seen is stored too, and blocks older images.
    part.write_batch([delete("kv", {"k": 3}, 50), up("kv", {"k": 3}, {"v": "old"}, 40)])
    assert live(conn, settings.schema, "kv", "k") == [(2,)]


# --- range deletes --------------------------------------------------------------------------

ASC_KEYS = [(a, b) for a in range(1, 6) for b in ("x", "y", "é", "Z")]


def _seed_asc(part, pk="p1", version=10):
    part.write_batch([up("asc_t", {"p": pk, "a": a, "b": b}, {"v": f"{a}{b}"}, version)
                      for a, b in ASC_KEYS])


def _utf8_key(key):
    a, b = key
    return (a, b.encode())


@pytest.mark.parametrize(("start", "si", "end", "ei"), [
    ({"a": 2}, True, {"a": 4}, True),
    ({"a": 2}, False, {"a": 4}, False),
    ({"a": 2, "b": "y"}, True, {"a": 4, "b": "Z"}, False),
    ({"a": 2, "b": "y"}, False, {}, True),
    ({}, True, {"a": 3, "b": "é"}, True),
    ({"a": 1, "b": "Z"}, True, {"a": 1, "b": "y"}, True),
])
def test_range_delete_ascending(part, settings, conn, start, si, end, ei) -> None:
    _seed_asc(part)
    _seed_asc(part, pk="other")

    def cmp(key, prefix):
        k = _utf8_key(key)[: len(prefix)]
        p = _utf8_key((prefix.get("a"), prefix.get("b", "")))[: len(prefix)]
        return (k > p) - (k < p)

    def inside(key):
        if start and (cmp(key, start) < 0 or (cmp(key, start) == 0 and not si)):
            return False
        return not (end and (cmp(key, end) > 0 or (cmp(key, end) == 0 and not ei)))

    part.write_batch([rng("asc_t", {"p": "p1"}, start, si, end, ei, 20)])
    survivors = {k for k in ASC_KEYS if not inside(k)}
    assert 0 < len(survivors) < len(ASC_KEYS) or not (start or end)  # the case is meaningful
    got = live(conn, settings.schema, "asc_t", "p, a, b")
    assert {(a, b) for p, a, b in got if p == "p1"} == survivors
    assert {(a, b) for p, a, b in got if p == "other"} == set(ASC_KEYS)  # untouched


def test_range_delete_keeps_newer_rows_and_blocks_older_images(part, settings, conn) -> None:
    _seed_asc(part)
    part.write_batch([up("asc_t", {"p": "p1", "a": 3, "b": "x"}, {"v": "newer"}, 30)])
    part.write_batch([rng("asc_t", {"p": "p1"}, {"a": 2}, True, {"a": 4}, True, 20),
                      up("asc_t", {"p": "p1", "a": 2, "b": "x"}, {"v": "stale"}, 15)])
    got = live(conn, settings.schema, "asc_t", "a, b, v", "a, b")
    assert (3, "x", "newer") in got
    assert [r for r in got if r[0] in (2, 4)] == []
    assert {r[0] for r in got} == {1, 3, 5}


def test_range_delete_then_following_upserts_in_batch_order(part, settings, conn) -> None:
    _seed_asc(part)
    part.write_batch([up("asc_t", {"p": "p1", "a": 9, "b": "x"}, {"v": "in batch"}, 15),
                      rng("asc_t", {"p": "p1"}, {}, True, {}, True, 20),
                      up("asc_t", {"p": "p1", "a": 1, "b": "x"}, {"v": "after"}, 25)])
    assert live(conn, settings.schema, "asc_t", "a, b, v") == [(1, "x", "after")]


def test_a_loaded_row_that_arrives_after_the_deletion_of_its_partition_stays_deleted(
        part, settings, conn) -> None:
    """The initial load read the row before the deletion; the deletion came first (the sink
    had no row to delete then). The image must not bring the row back; a write after the
    deletion does."""
    part.write_batch([rng("asc_t", {"p": "late"}, {}, True, {}, True, 20)])
    part.write_batch([up("asc_t", {"p": "late", "a": 1, "b": "x"}, {"v": "read before"}, 15,
                         source=INITIAL_LOAD),
                      up("asc_t", {"p": "late", "a": 2, "b": "x"}, {"v": "written after"}, 25,
                         source=INITIAL_LOAD)])
    assert live(conn, settings.schema, "asc_t", "p, a, b, v") == [
        ("late", 2, "x", "written after")]


def test_loaded_rows_inside_a_deleted_range_stay_deleted_and_others_land(
        part, settings, conn) -> None:
    """A clustering range and a partition deletion with its static row, each ahead of loaded
    images read before them: inside the range (and the static row) they stay deleted, the
    rest of the partition lands."""
    part.write_batch([rng("asc_t", {"p": "r"}, {"a": 2}, True, {"a": 3}, True, 20),
                      rng("asc_t", {"p": "s"}, {}, True, {}, True, 20, include_static=True)])
    part.write_batch(
        [up("asc_t", {"p": "r", "a": a, "b": "x"}, {"v": "loaded"}, 10, source=INITIAL_LOAD)
         for a in (1, 2, 3, 4)]
        + [up("asc_t", {"p": "s"}, {"s": "loaded"}, 10, static=True, source=INITIAL_LOAD),
           up("asc_t", {"p": "t"}, {"s": "loaded"}, 10, static=True, source=INITIAL_LOAD)])
    assert live(conn, settings.schema, "asc_t", "p, a, b", "p, a") == [
        ("r", 1, "x"), ("r", 4, "x"), ("t", None, None)]


def _timeuuid(count_100ns: int, seq: int = 0) -> uuid.UUID:
    return uuid.UUID(fields=(count_100ns & 0xFFFFFFFF, (count_100ns >> 32) & 0xFFFF,
                             0x1000 | ((count_100ns >> 48) & 0x0FFF), 0x80 | (seq >> 8),
                             seq & 0xFF, 0x0A0B0C0D0E0F))


def test_range_delete_descending_with_timeuuid_order(part, settings, conn) -> None:
    # t1 < t2 < t3 in time, but t1's bytes sort after t2's: PostgreSQL's uuid order is wrong.
    base = 1 << 56
    t1, t2, t3 = (_timeuuid(base + 0xFFFFFFF0), _timeuuid(base + (1 << 32) + 0x10),
                  _timeuuid(base + (2 << 32)))
    assert t1.bytes > t2.bytes
    keys = [(a, t) for a in (1, 2, 3, 4) for t in (t1, t2, t3)]
    part.write_batch([up("desc_t", {"p": "p", "a": a, "t": t}, {"v": "x"}, 10)
                      for a, t in keys])
    # Clustering order: a DESC, then t ASC. [ (3, t2) inclusive .. (2, t2) exclusive ]
    part.write_batch([rng("desc_t", {"p": "p"}, {"a": 3, "t": t2}, True,
                          {"a": 2, "t": t2}, False, 20)])
    gone = {(3, t2), (3, t3), (2, t1)}
    got = {(a, t) for a, t in live(conn, settings.schema, "desc_t", "a, t")}
    assert got == set(keys) - gone
    # A prefix bound on the DESC column alone: a from 4 down to 3 (exclusive of 4).
    part.write_batch([rng("desc_t", {"p": "p"}, {"a": 4}, False, {"a": 3}, True, 30)])
    got = {(a, t) for a, t in live(conn, settings.schema, "desc_t", "a, t")}
    assert got == {(4, t1), (4, t2), (4, t3), (2, t2), (2, t3), (1, t1), (1, t2), (1, t3)}


def test_partition_delete_with_static_and_view(part, settings, conn) -> None:
    part.write_batch([
        up("asc_t", {"p": "p1"}, {"s": "static-1"}, 10, static=True),
        up("asc_t", {"p": "p1", "a": 1, "b": "x"}, {"v": "r"}, 10),
        up("asc_t", {"p": "p2"}, {"s": "static-2"}, 10, static=True),  # static only
    ])
    got = live(conn, settings.schema, "asc_t", "p, a, b, s, v", "p")
    assert got == [("p1", 1, "x", "static-1", "r"), ("p2", None, None, "static-2", None)]
    part.write_batch([rng("asc_t", {"p": "p1"}, {}, True, {}, True, 20, include_static=True)])
    assert live(conn, settings.schema, "asc_t", "p, s", "p") == [("p2", "static-2")]
    # An older static image cannot come back.
    part.write_batch([up("asc_t", {"p": "p1"}, {"s": "stale"}, 15, static=True)])
    assert live(conn, settings.schema, "asc_t", "p", "p") == [("p2",)]


def test_range_on_masked_clustering_column_is_refused(settings) -> None:
    sink = make_sink(settings, masked={(KS, "asc_t"): {"a": "text"}})
    part = sink.build_part("pg_out", "0", None)
    try:
        with pytest.raises(UnsupportedRange, match="masked"):
            part.write_batch([rng("asc_t", {"p": "p"}, {"a": "h"}, True, {}, True, 5)])
        part.write_batch([rng("asc_t", {"p": "p"}, {}, True, {}, True, 5)])  # whole: fine
    finally:
        part.close()


# --- replays, transactions, progress ---------------------------------------------------------

def test_replaying_a_batch_gives_the_same_table(part, settings, conn) -> None:
    batch = [up("asc_t", {"p": "p", "a": a, "b": "x"}, {"v": str(a)}, 10 + a)
             for a in range(5)] + [
        rng("asc_t", {"p": "p"}, {"a": 1}, True, {"a": 2}, True, 12),
        delete("asc_t", {"p": "p", "a": 4, "b": "x"}, 40),
        up("asc_t", {"p": "p"}, {"s": "s"}, 9, static=True)]
    columns = "p, a, b, v, n, _cdc_version, _cdc_deleted, _cdc_source_offset"
    part.write_batch(batch)
    first = rows(conn, settings.schema, "shop__asc_t", columns, "a")
    part.write_batch(batch)
    assert rows(conn, settings.schema, "shop__asc_t", columns, "a") == first
    assert [r[0] for r in live(conn, settings.schema, "asc_t", "a", "a")] == [0, 3]


def test_failing_batch_leaves_neither_data_nor_progress(part, settings, conn) -> None:
    batch = [up("kv", {"k": 1}, {"v": "good"}, 10, source=Source("n9", Position(5, 100))),
             rng("kv", {"k": 77}, {}, True, {}, True, 10),  # forces the good row's write
             up("kv", {"k": 2}, {"addr": "not-an-address-SECRET"}, 10)]
    with pytest.raises(RejectedValueError) as caught:
        part.write_batch(batch)
    message = str(caught.value)
    assert "shop__kv" in message and "addr" in message and "SECRET" not in message
    assert caught.value.key_fingerprint is not None
    assert rows(conn, settings.schema, "shop__kv") == []
    assert rows(conn, settings.schema, "_cdc_progress") == []
    with pytest.raises(RejectedValueError, match="U\\+0000"):
        part.write_batch([up("kv", {"k": 3}, {"v": "a\x00b"}, 10)])


def test_progress_keeps_the_highest_position_per_node(part, settings, conn) -> None:
    def at(node, seg, off):
        return Source(node, Position(seg, off))

    part.write_batch([up("kv", {"k": 1}, {"v": "a"}, 1, source=at("n1", 7, 500)),
                      up("kv", {"k": 2}, {"v": "b"}, 1, source=at("n1", 8, 20)),
                      up("kv", {"k": 3}, {"v": "c"}, 1, source=at("n2", 3, 9))])
    part.write_batch([up("kv", {"k": 1}, {"v": "a"}, 1, source=at("n1", 7, 900))])  # replay
    got = rows(conn, settings.schema, "_cdc_progress",
               "step_id, sink_partition, node, segment_id, \"offset\"", "node")
    assert got == [("pg_out", 0, "n1", 8, 20), ("pg_out", 0, "n2", 3, 9)]


def test_progress_counts_operations_that_left_no_row_of_their_own(part, settings,
                                                                  conn) -> None:
    """The batch's positions come from the rows it wrote only where those hold every
    operation: a kept image below the position of the image it beat, a range delete that
    covers no row, and a batch streamed in chunks whose highest position is in its middle
    all count."""
    import dataclasses
    import random

    def at(node, seg, off):
        return Source(node, Position(seg, off))

    def progress():
        return rows(conn, settings.schema, "_cdc_progress", "node, segment_id, \"offset\"",
                    "node")

    part.write_batch([up("kv", {"k": 1}, {"v": "new"}, 9, source=at("n1", 5, 10)),
                      up("kv", {"k": 1}, {"v": "old"}, 5, source=at("n1", 5, 99))])
    part.write_batch([dataclasses.replace(rng("asc_t", {"p": "none"}, {"a": 1}, True,
                                              {"a": 2}, True, 12), source=at("n2", 6, 7))])
    assert live(conn, settings.schema, "kv", "k, v") == [(1, "new")]
    assert progress() == [("n1", 5, 99), ("n2", 6, 7)]
    offsets = list(range(100, 4100))
    random.Random(5).shuffle(offsets)  # the highest somewhere in the middle
    part.write_batch([up("kv", {"k": 10 + i}, {"v": "x"}, 1, source=at("n2", 6, offset))
                      for i, offset in enumerate(offsets)])
    assert progress() == [("n1", 5, 99), ("n2", 6, 4099)]


def test_transient_error_is_retried(settings, conn, monkeypatch) -> None:
    """The server ends the sink's connection in the middle of its transaction (terminated
    from inside it, for real): the batch is retried on a new connection and lands. Killing
    an idle pooled connection did not reach the retry: the pool's check on checkout replaced
    it first."""
    import connectors.postgres._sink as sink_module

    real, calls, pauses = sink_module.apply_batch, [], []

    def cut_first(conn, *args, **kwargs):
        calls.append(conn.info.backend_pid)
        if len(calls) == 1:
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return real(conn, *args, **kwargs)

    part = make_sink(settings).build_part("pg_out", "1", None)
    try:
        part.write_batch([up("kv", {"k": 1}, {"v": "a"}, 1)])
        monkeypatch.setattr(sink_module, "apply_batch", cut_first)
        part._sleep = pauses.append
        part.write_batch([up("kv", {"k": 1}, {"v": "b"}, 2)])
        assert live(conn, settings.schema, "kv", "v") == [("b",)]
    finally:
        part.close()
    assert len(calls) == 2 and calls[0] != calls[1], calls  # retried, on another backend
    assert pauses == [settings.retry_backoff]


# --- the property: any order and batching converges to the version order ---------------------

def test_random_order_and_batches_converge(settings, conn) -> None:
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings
    from hypothesis import strategies as st

    part = make_sink(settings).build_part("pg_out", "0", None)
    keys = [{"p": "p", "a": a, "b": "x"} for a in range(3)]

    op = st.tuples(st.sampled_from(range(len(keys) + 1)), st.booleans(),
                   st.text(alphabet="abc", max_size=3))

    def make(index: int, is_delete: bool, text: str, version: int):
        if index == len(keys):  # the static row
            return delete("asc_t", {"p": "p"}, version, static=True) if is_delete else \
                up("asc_t", {"p": "p"}, {"s": text}, version, static=True)
        return delete("asc_t", keys[index], version) if is_delete else \
            up("asc_t", keys[index], {"v": text, "n": version}, version)

    def state():
        return (rows(conn, settings.schema, "shop__asc_t",
                     "p, a, b, v, n, _cdc_version, _cdc_deleted", "a"),
                rows(conn, settings.schema, "shop__asc_t__static",
                     "p, s, _cdc_version, _cdc_deleted"))

    def reset():
        for t in ("shop__asc_t", "shop__asc_t__static"):
            conn.execute(sql.SQL("TRUNCATE {}.{}").format(sql.Identifier(settings.schema),
                                                          sql.Identifier(t)))

    @hsettings(max_examples=40, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(op, min_size=1, max_size=12), st.randoms(use_true_random=False),
           st.lists(st.integers(1, 4), max_size=12))
    def check(spec, rnd, cuts):
        ops = [make(i, d, t, version) for version, (i, d, t) in enumerate(spec, start=1)]
        reset()
        part.write_batch(ops)
        expected = state()
        reset()
        shuffled = ops[:]
        rnd.shuffle(shuffled)
        i = 0
        for cut in cuts + [len(shuffled)]:
            if i >= len(shuffled):
                break
            part.write_batch(shuffled[i:i + cut])
            i += cut
        assert state() == expected

    # Create the tables (a first write), so that every example can start from empty ones.
    part.write_batch([make(0, False, "", 1), make(len(keys), False, "", 1)])
    try:
        check()
    finally:
        part.close()


# --- through Bytewax ---------------------------------------------------------------------------

def test_bytewax_flow_with_two_partitions(settings, conn) -> None:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSource, run_main

    sink = make_sink(settings)
    items = []
    for k in range(40):
        items.append((f"shop.kv:{k}", up("kv", {"k": k}, {"v": f"v{k}"}, 10,
                                         source=Source("n1", Position(1, k + 1)))))
    items.append(("shop.kv:3", delete("kv", {"k": 3}, 20)))
    items.append(("shop.kv:4", up("kv", {"k": 4}, {"v": "old"}, 5)))
    flow = Dataflow("postgres_sink_test")
    stream = op.input("in", flow, TestingSource(items, batch_size=7))
    op.output("out", stream, sink)
    run_main(flow)
    got = dict(live(conn, settings.schema, "kv", "k, v"))
    assert len(got) == 39 and 3 not in got and got[4] == "v4"
    parts = {r[0] for r in rows(conn, settings.schema, "_cdc_progress", "sink_partition")}
    assert parts == {0, 1}
    expected = {p: max(k + 1 for k in range(40) if sink.part_fn(f"shop.kv:{k}") % 2 == p)
                for p in (0, 1)}
    got_progress = dict(conn.execute(sql.SQL(
        "SELECT sink_partition, \"offset\" FROM {}._cdc_progress WHERE node = 'n1'").format(
        sql.Identifier(settings.schema))).fetchall())
    assert got_progress == expected


def test_a_pool_that_lost_its_server_is_replaced_at_the_next_try(settings, conn, pg_password):
    """The first pool reaches no server (as after an outage, with psycopg_pool's reconnect
    back-off running): the retry goes through a new pool, at once, and the old one is closed.
    A transaction the server refused keeps the pool."""
    import socket

    import psycopg.errors
    from psycopg_pool import ConnectionPool, PoolTimeout

    from connectors.postgres._sink import _connection_lost, _PostgresPartition

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    pools: list[ConnectionPool] = []

    def new_pool() -> ConnectionPool:
        port = dead if not pools else settings.port
        pools.append(ConnectionPool(
            kwargs={**settings.connection_kwargs(pg_password), "port": port}, min_size=1,
            max_size=1, timeout=1.0, check=ConnectionPool.check_connection, open=True))
        return pools[-1]

    part = _PostgresPartition(settings, new_pool, "pg_renew", 0,
                              make_sink(settings)._layouts())  # noqa: SLF001
    try:
        part.write_batch([up("kv", {"k": 1}, {"v": "a"}, 1)])
        assert live(conn, settings.schema, "kv", "v") == [("a",)]
        assert len(pools) == 2 and pools[0].closed and not pools[1].closed
    finally:
        part.close()
    assert _connection_lost(PoolTimeout()) and _connection_lost(psycopg.OperationalError())
    assert _connection_lost(psycopg.errors.AdminShutdown())
    assert not _connection_lost(psycopg.errors.SerializationFailure())
    assert not _connection_lost(psycopg.errors.DeadlockDetected())


def test_a_limit_the_same_batch_meets_again_is_not_transient(conn) -> None:
    """psycopg files a limit under OperationalError, as it does a lost connection: the spool
    retried such a batch for ever, logging the destination as unavailable. A text key longer
    than a btree entry may be (Cassandra keys go to 64 KiB) meets it again at every attempt;
    so does TimescaleDB's cap on rows decompressed per statement (53400)."""
    import os

    import psycopg

    from connectors.postgres._sink import _transient

    conn.execute("CREATE TEMP TABLE wide_key (k text PRIMARY KEY)")
    with pytest.raises(psycopg.OperationalError) as refused:
        conn.execute("INSERT INTO wide_key VALUES (%s)", (os.urandom(6000).hex(),))
    assert refused.value.sqlstate == "54000"  # program_limit_exceeded, from the server
    assert not _transient(refused.value)
    assert not _transient(psycopg.errors.ConfigurationLimitExceeded())
    # What another attempt can get past stays transient.
    for passing in (psycopg.errors.SerializationFailure(), psycopg.errors.DeadlockDetected(),
                    psycopg.errors.QueryCanceled(), psycopg.errors.AdminShutdown(),
                    psycopg.OperationalError("connection lost")):
        assert _transient(passing), passing
