"""ClickHouseSink against the stack's ClickHouse 18.16 (pipeline user, database `cdc`): layout,
types, version rules through ReplacingMergeTree + FINAL, range deletes in Cassandra's order,
replays, progress, a Bytewax run."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import ipaddress
import json
import threading
import uuid

import pytest
from cassandra import util as cutil

from connectors.cassandra.events import Position
from connectors.clickhouse import (
    ClickHouseSink,
    ClickHouseSinkSettings,
    RejectedValueError,
    UnsupportedRange,
    stable_partition,
)
from operators.masking import MaskingPolicy, masked_column_types
from operators.row_ops import INITIAL_LOAD, Source
from tests.connectors.clickhouse.conftest import Env
from tests.connectors.postgres.conftest import column, schemas
from tests.waiting import wait_for

# --- settings, routing (no I/O) ---------------------------------------------------------------

BASE = dict(host="127.0.0.1", user="u", password_ref="env:PW", ca_cert="/ca.crt")


@pytest.mark.parametrize(("change", "word"), [
    ({"port": 0}, "port"), ({"password_ref": "hunter2"}, "password_ref"),
    ({"partitions": 0}, "partitions"), ({"database": ""}, "database"), ({"host": ""}, "host"),
    ({"retry_backoff": 1.0, "retry_max_backoff": 0.5}, "retry_max_backoff"),
    ({"progress_interval": -1}, "progress_interval"),
    ({"progress_interval": float("inf")}, "progress_interval"),
    ({"progress_interval": float("nan")}, "progress_interval"),
    ({"progress_interval": True}, "progress_interval"),
    ({"progress_interval": 3601}, "progress_interval"),
    ({"progress_interval": 0.05}, "progress_interval"),
    ({"progress_interval": "1"}, "progress_interval"),
])
def test_settings_are_validated(change: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        ClickHouseSinkSettings(**{**BASE, **change})


def test_settings_verify_tls13_without_compression() -> None:
    s = ClickHouseSinkSettings(**BASE)
    kw = s.client_kwargs("secret")
    assert (kw["interface"], kw["verify"], kw["compress"], kw["database"]) == \
        ("https", True, False, "cdc")
    assert kw["pool_mgr"].connection_pool_kw["ssl_minimum_version"].name == "TLSv1_3"
    assert "secret" not in repr(s)


def test_part_fn_is_the_postgres_sinks_stable_hash() -> None:
    sink = ClickHouseSink(ClickHouseSinkSettings(**BASE, partitions=4), lambda ks, t: None)
    assert sink.list_parts() == ["0", "1", "2", "3"]
    assert sink.part_fn("shop.orders:1") == stable_partition("shop.orders:1") == \
        13934631275447708254


# --- layout and types -------------------------------------------------------------------------

def _columns(env: Env, table: str) -> dict[str, str]:
    return dict(env.select("SELECT name, type FROM system.columns WHERE database = %(db)s AND"
                           " table = %(t)s", {"db": env.settings.database,
                                              "t": f"{env.ks}__{table}"}))


def test_tables_with_statics_view_and_engine(env: Env) -> None:
    part = env.part()
    part.write_batch([env.up("asc_t", {"p": "x", "a": 1, "b": "q"}, {"v": "hi", "n": 5}, 10),
                      env.up("asc_t", {"p": "x"}, {"s": "st"}, 10, static=True)])
    part.close()
    assert list(_columns(env, "asc_t").items()) == [
        ("p", "String"), ("a", "Int32"), ("b", "String"),
        ("n", "Nullable(Int64)"), ("v", "Nullable(String)"),
        ("_cdc_version", "Int64"), ("_cdc_deleted", "UInt8"), ("_cdc_source_node", "String"),
        ("_cdc_source_segment", "Int64"), ("_cdc_source_offset", "Int32"),
        ("_cdc_updated_at", "DateTime")]
    assert list(_columns(env, "asc_t__static"))[:2] == ["p", "s"]
    create = env.select(f"SHOW CREATE TABLE {env.name('asc_t')}")[0][0]
    assert "ReplacingMergeTree(_cdc_version)" in create and "ORDER BY (p, a, b)" in create
    assert env.live("asc_t", "p, a, b, s, n, v, _cdc_version") == [
        ("x", 1, "q", "st", 5, "hi", 10)]
    updated = env.final("asc_t", "_cdc_updated_at")[0][0]
    assert abs((updated - datetime.datetime.now()).total_seconds()) < 300  # DEFAULT now()
    assert _columns(env, "kv__static") == {}  # no statics: no companion


ALL_TYPES = [
    ("c_ascii", "ascii", "String"), ("c_text", "text", "String"),
    ("c_varchar", "varchar", "String"), ("c_int", "int", "Int32"),
    ("c_bigint", "bigint", "Int64"), ("c_smallint", "smallint", "Int16"),
    ("c_tinyint", "tinyint", "Int8"), ("c_boolean", "boolean", "UInt8"),
    ("c_float", "float", "Float32"), ("c_double", "double", "Float64"),
    ("c_decimal", "decimal", "String"), ("c_varint", "varint", "String"),
    ("c_uuid", "uuid", "UUID"), ("c_timeuuid", "timeuuid", "UUID"),
    ("c_timestamp", "timestamp", "Int64"), ("c_date", "date", "Int32"),
    ("c_time", "time", "Int64"), ("c_blob", "blob", "String"), ("c_inet", "inet", "String"),
    ("c_duration", "duration", "String"), ("c_list", "list<int>", "String"),
    ("c_set", "set<text>", "String"), ("c_map", "map<int, text>", "String"),
    ("c_tuple", "frozen<tuple<int, text>>", "String"), ("c_udt", "frozen<addr>", "String"),
    ("c_vec", "vector<float, 3>", "String"),
]


def test_every_type_maps_and_round_trips_exactly(env: Env) -> None:
    cols = [column("types", "id", "partition_key", "int", 0, keyspace=env.ks)] + [
        column("types", name, "regular", cql, keyspace=env.ks) for name, cql, _ in ALL_TYPES]
    tables = schemas(cols, types=[{"keyspace_name": env.ks, "type_name": "addr",
                                   "field_names": ["street", "zip"],
                                   "field_types": ["text", "int"]}])
    udt = collections.namedtuple("addr", ["street", "zip"])
    values = {
        "c_ascii": "a", "c_text": "ünï\x00", "c_varchar": "v", "c_int": -5, "c_bigint": 2**40,
        "c_smallint": 7, "c_tinyint": -3, "c_boolean": True, "c_float": 1.5,
        "c_double": 2.25, "c_decimal": decimal.Decimal("1.50E-30"), "c_varint": 10**50,
        "c_uuid": uuid.UUID(int=5),
        "c_timeuuid": uuid.UUID("e3e70682-c209-11ee-8000-000000000001"),
        "c_timestamp": datetime.datetime(1900, 1, 2, 3, 4, 5, 678000),
        "c_date": cutil.Date(-800000), "c_time": cutil.Time(3723000001999),
        "c_blob": b"\x00\xff", "c_inet": ipaddress.ip_address("::1"),
        "c_duration": cutil.Duration(1, 2, 3), "c_list": [3, 1, 3],
        "c_set": cutil.SortedSet(["b", "a"]), "c_map": cutil.OrderedMap([(2, "x"), (1, None)]),
        "c_tuple": (1, "t"), "c_udt": udt("Main", 12345), "c_vec": [1.0, 2.5, -3.0],
    }
    part = env.part(tables)
    part.write_batch([env.up("types", {"id": 1}, values, 10)])
    part.close()
    found = _columns(env, "types")
    assert {n: found[n] for n, _, _ in ALL_TYPES} == {n: f"Nullable({ch})"
                                                     for n, _, ch in ALL_TYPES}
    result = env.client.query(f"SELECT * FROM {env.name('types')} FINAL",
                              column_formats={"c_blob": "bytes"})
    got = dict(zip(result.column_names, result.result_rows[0], strict=True))
    assert got["c_text"] == "ünï\x00" and got["c_boolean"] == 1
    assert got["c_timestamp"] == -2208891354322  # epoch ms, exact before 1970
    assert got["c_date"] == -800000 and got["c_time"] == 3723000001999  # ns kept
    assert (got["c_decimal"], got["c_varint"]) == ("1.50E-30", str(10**50))
    assert got["c_blob"] == b"\x00\xff" and got["c_inet"] == "::1"
    assert got["c_duration"] == "1mo2d3ns" and got["c_timeuuid"] == values["c_timeuuid"]
    assert json.loads(got["c_map"]) == {"2": "x", "1": None}
    assert json.loads(got["c_set"]) == ["a", "b"] and json.loads(got["c_vec"]) == [1, 2.5, -3]
    assert json.loads(got["c_udt"]) == {"street": "Main", "zip": 12345}
    assert json.loads(got["c_tuple"]) == [1, "t"] and json.loads(got["c_list"]) == [3, 1, 3]


def test_masked_columns_change_type(env: Env) -> None:
    cols = [column("people", "id", "partition_key", "int", 0, keyspace=env.ks),
            column("people", "ssn", "regular", "int", keyspace=env.ks),
            column("people", "phones", "regular", "list<int>", keyspace=env.ks),
            column("people", "age", "regular", "int", keyspace=env.ks)]
    tables = schemas(cols)
    schema = tables[(env.ks, "people")]
    policy = MaskingPolicy.from_mapping({
        "version": 1, "hmac": {"key": "env:UNUSED"}, "unclassified_strategy": "hmac",
        "tables": {env.ks: {"people": {"columns": {
            "ssn": {"class": "ssn", "strategy": "hmac"},
            "phones": {"class": "phone", "strategy": "hmac"}}}}}})
    masked = masked_column_types(policy, env.ks, "people",
                                 {n: s.type for n, s in schema.columns.items()}, ["id"])
    assert masked == {"ssn": "text", "phones": "list<text>"}
    part = env.part(tables, {(env.ks, "people"): masked})
    part.write_batch([env.up("people", {"id": 1}, {"ssn": "ab" * 32, "phones": ["cd"],
                                                   "age": 4}, 10)])
    part.close()
    found = _columns(env, "people")
    assert (found["ssn"], found["phones"], found["age"]) == \
        ("Nullable(String)", "Nullable(String)", "Nullable(Int32)")
    assert env.live("people", "ssn, phones, age") == [("ab" * 32, '["cd"]', 4)]


def test_refused_value_names_no_value(env: Env) -> None:
    part = env.part()
    try:
        with pytest.raises(RejectedValueError, match="column v") as caught:
            part.write_batch([env.up("kv", {"k": 1}, {"v": 12345}, 1)])
        assert "12345" not in str(caught.value)
    finally:
        part.close()


# --- version rules ----------------------------------------------------------------------------

@pytest.fixture
def part(env: Env):
    built = env.part()
    yield built
    built.close()


def test_older_ignored_newer_applied_equal_later_wins(env: Env, part) -> None:
    k = {"k": 1}
    part.write_batch([env.up("kv", k, {"v": "v10"}, 10)])
    part.write_batch([env.up("kv", k, {"v": "v5"}, 5)])
    assert env.live("kv", "v, _cdc_version") == [("v10", 10)]
    part.write_batch([env.up("kv", k, {"v": "v20"}, 20)])
    assert env.live("kv", "v, _cdc_version") == [("v20", 20)]
    part.write_batch([env.up("kv", k, {"v": "v20-later"}, 20)])
    assert env.live("kv", "v") == [("v20-later",)]
    # Within one batch: highest version, ties to the later operation.
    part.write_batch([env.up("kv", k, {"v": "a"}, 30), env.up("kv", k, {"v": "b"}, 29),
                      env.up("kv", k, {"v": "c"}, 30)])
    assert env.live("kv", "v, _cdc_version") == [("c", 30)]
    # The same after the parts are merged for good.
    env.client.command(f"OPTIMIZE TABLE {env.name('kv')} FINAL")
    assert env.select(f"SELECT v, _cdc_version FROM {env.name('kv')}") == [("c", 30)]


def test_tombstone_cannot_be_resurrected_by_older_image(env: Env, part) -> None:
    k = {"k": 2}
    part.write_batch([env.up("kv", k, {"v": "x"}, 10), env.delete("kv", k, 30)])
    part.write_batch([env.up("kv", k, {"v": "late"}, 25)])
    assert env.live("kv") == []
    assert env.final("kv", "k, v, _cdc_version, _cdc_deleted") == [(2, None, 30, 1)]
    part.write_batch([env.up("kv", k, {"v": "back"}, 31)])
    assert env.live("kv", "k, v") == [(2, "back")]
    # A delete of a row never seen is stored too, and blocks older images.
    part.write_batch([env.delete("kv", {"k": 3}, 50), env.up("kv", {"k": 3}, {"v": "old"}, 40)])
    part.write_batch([env.up("kv", {"k": 3}, {"v": "old"}, 45)])
    assert env.live("kv", "k") == [(2,)]


def test_clustering_decimals_equal_in_value_are_one_row(env: Env) -> None:
    """Cassandra matches clustering decimals by value (1.0 and 1.00 are one row; a partition
    key's decimal is matched by its bytes). The sort key holds the value's text, so a write or
    a delete of the same row in another scale meets it; the partition key keeps its exact
    text."""
    tables = schemas([
        column("dec", "p", "partition_key", "decimal", 0, keyspace=env.ks),
        column("dec", "c", "clustering", "decimal", 0, "asc", keyspace=env.ks),
        column("dec", "v", "regular", "text", keyspace=env.ks),
    ])
    part = env.part(tables)
    try:
        d = decimal.Decimal
        part.write_batch([env.up("dec", {"p": d("1.0"), "c": d("1.0")}, {"v": "a"}, 10),
                          env.up("dec", {"p": d("1.0"), "c": d("2.50")}, {"v": "b"}, 10)])
        part.write_batch([env.up("dec", {"p": d("1.0"), "c": d("2.5")}, {"v": "b2"}, 11),
                          env.delete("dec", {"p": d("1.0"), "c": d("1.00")}, 12)])
        assert env.live("dec", "p, c, v") == [("1.0", "2.5", "b2")]
        # Another partition (1.00 is not 1.0 there): its own rows.
        part.write_batch([env.up("dec", {"p": d("1.00"), "c": d("100")}, {"v": "c"}, 13)])
        assert env.live("dec", "p, c, v") == [("1.0", "2.5", "b2"),
                                              ("1.00", "1E+2", "c")]
    finally:
        part.close()


# --- range deletes ----------------------------------------------------------------------------

def test_a_partition_delete_of_a_nan_key_covers_its_rows(env: Env) -> None:
    """Cassandra's NaN partition key is one partition (Double.compare): its deletion covers the
    rows stored under it and the ones gathered earlier in the same batch. ClickHouse's
    `k = nan` is never true, and Python's nan != nan: both were missed."""
    tables = schemas([
        column("fk", "k", "partition_key", "double", 0, keyspace=env.ks),
        column("fk", "c", "clustering", "int", 0, "asc", keyspace=env.ks),
        column("fk", "v", "regular", "text", keyspace=env.ks),
    ])
    nan = float("nan")
    part = env.part(tables)
    try:
        part.write_batch([env.up("fk", {"k": nan, "c": c}, {"v": "x"}, 10) for c in (1, 2)]
                         + [env.up("fk", {"k": 1.5, "c": 1}, {"v": "other"}, 10)])
        part.write_batch([env.up("fk", {"k": float("nan"), "c": 3}, {"v": "in batch"}, 15),
                          env.rng("fk", {"k": float("nan")}, {}, True, {}, True, 20)])
        assert env.live("fk", "k, c, v") == [(1.5, 1, "other")]
    finally:
        part.close()


ASC_KEYS = [(a, b) for a in range(1, 6) for b in ("x", "y", "é", "Z")]


def _seed_asc(env: Env, part, pk="p1", version=10):
    part.write_batch([env.up("asc_t", {"p": pk, "a": a, "b": b}, {"v": f"{a}{b}"}, version)
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
])
def test_range_delete_ascending(env: Env, part, start, si, end, ei) -> None:
    _seed_asc(env, part)
    _seed_asc(env, part, pk="other")

    def cmp(key, prefix):
        k = _utf8_key(key)[: len(prefix)]
        p = _utf8_key((prefix.get("a"), prefix.get("b", "")))[: len(prefix)]
        return (k > p) - (k < p)

    def inside(key):
        if start and (cmp(key, start) < 0 or (cmp(key, start) == 0 and not si)):
            return False
        return not (end and (cmp(key, end) > 0 or (cmp(key, end) == 0 and not ei)))

    part.write_batch([env.rng("asc_t", {"p": "p1"}, start, si, end, ei, 20)])
    survivors = {k for k in ASC_KEYS if not inside(k)}
    assert 0 < len(survivors) < len(ASC_KEYS)
    got = env.live("asc_t", "p, a, b")
    assert {(a, b) for p, a, b in got if p == "p1"} == survivors
    assert {(a, b) for p, a, b in got if p == "other"} == set(ASC_KEYS)  # untouched


def test_range_delete_keeps_newer_rows_and_blocks_older_images(env: Env, part) -> None:
    _seed_asc(env, part)
    part.write_batch([env.up("asc_t", {"p": "p1", "a": 3, "b": "x"}, {"v": "newer"}, 30)])
    part.write_batch([env.rng("asc_t", {"p": "p1"}, {"a": 2}, True, {"a": 4}, True, 20),
                      env.up("asc_t", {"p": "p1", "a": 2, "b": "x"}, {"v": "stale"}, 15)])
    got = env.live("asc_t", "a, b, v", "a, b")
    assert (3, "x", "newer") in got
    assert [r for r in got if r[0] in (2, 4)] == []
    assert {r[0] for r in got} == {1, 3, 5}
    # Tombstones were written only for covered keys whose stored version was <= 20.
    tombstones = env.final("asc_t", "a, b, _cdc_version", "a, b")
    assert (3, "x", 30) in tombstones
    assert env.select(f"SELECT count() FROM {env.name('asc_t')} FINAL WHERE"
                      " _cdc_deleted = 1")[0][0] == 2 * 4 + 3


def test_range_delete_covers_rows_gathered_in_the_same_batch(env: Env, part) -> None:
    _seed_asc(env, part)
    part.write_batch([env.up("asc_t", {"p": "p1", "a": 9, "b": "x"}, {"v": "in batch"}, 15),
                      env.up("asc_t", {"p": "p1", "a": 8, "b": "x"}, {"v": "newer"}, 25),
                      env.rng("asc_t", {"p": "p1"}, {}, True, {}, True, 20),
                      env.up("asc_t", {"p": "p1", "a": 1, "b": "x"}, {"v": "after"}, 25)])
    assert env.live("asc_t", "a, b, v") == [(1, "x", "after"), (8, "x", "newer")]


def test_a_loaded_row_that_arrives_after_the_deletion_of_its_partition_stays_deleted(
        env: Env, part) -> None:
    """As for PostgreSQL: the deletion reached the sink before the image the load read
    before it; the image must not bring the row back, a write after the deletion does."""
    part.write_batch([env.rng("asc_t", {"p": "late"}, {}, True, {}, True, 20)])
    part.write_batch([env.up("asc_t", {"p": "late", "a": 1, "b": "x"}, {"v": "read before"}, 15,
                             source=INITIAL_LOAD),
                      env.up("asc_t", {"p": "late", "a": 2, "b": "x"}, {"v": "written after"},
                             25, source=INITIAL_LOAD)])
    assert env.live("asc_t", "p, a, b, v") == [("late", 2, "x", "written after")]


def _timeuuid(count_100ns: int, seq: int = 0) -> uuid.UUID:
    return uuid.UUID(fields=(count_100ns & 0xFFFFFFFF, (count_100ns >> 32) & 0xFFFF,
                             0x1000 | ((count_100ns >> 48) & 0x0FFF), 0x80 | (seq >> 8),
                             seq & 0xFF, 0x0A0B0C0D0E0F))


def test_range_delete_descending_with_timeuuid_order(env: Env, part) -> None:
    # t1 < t2 < t3 in time, but t1's bytes sort after t2's: ClickHouse's UUID order is wrong.
    base = 1 << 56
    t1, t2, t3 = (_timeuuid(base + 0xFFFFFFF0), _timeuuid(base + (1 << 32) + 0x10),
                  _timeuuid(base + (2 << 32)))
    assert t1.bytes > t2.bytes
    keys = [(a, t) for a in (1, 2, 3, 4) for t in (t1, t2, t3)]
    part.write_batch([env.up("desc_t", {"p": "p", "a": a, "t": t}, {"v": "x"}, 10)
                      for a, t in keys])
    # Clustering order: a DESC, then t ASC. [ (3, t2) inclusive .. (2, t2) exclusive ]
    part.write_batch([env.rng("desc_t", {"p": "p"}, {"a": 3, "t": t2}, True,
                              {"a": 2, "t": t2}, False, 20)])
    gone = {(3, t2), (3, t3), (2, t1)}
    assert set(env.live("desc_t", "a, t")) == set(keys) - gone
    # A prefix bound on the DESC column alone: a from 4 down to 3 (exclusive of 4).
    part.write_batch([env.rng("desc_t", {"p": "p"}, {"a": 4}, False, {"a": 3}, True, 30)])
    assert set(env.live("desc_t", "a, t")) == {(4, t1), (4, t2), (4, t3), (2, t2), (2, t3),
                                               (1, t1), (1, t2), (1, t3)}


def test_partition_delete_with_static_and_view(env: Env, part) -> None:
    part.write_batch([
        env.up("asc_t", {"p": "p1"}, {"s": "static-1"}, 10, static=True),
        env.up("asc_t", {"p": "p1", "a": 1, "b": "x"}, {"v": "r"}, 10),
        env.up("asc_t", {"p": "p2", "a": 1, "b": "x"}, {"v": "no static"}, 10),
    ])
    assert env.live("asc_t", "p, a, b, s, v", "p") == [
        ("p1", 1, "x", "static-1", "r"), ("p2", 1, "x", None, "no static")]
    part.write_batch([env.rng("asc_t", {"p": "p1"}, {}, True, {}, True, 20,
                              include_static=True)])
    assert env.live("asc_t", "p", "p") == [("p2",)]
    part.write_batch([env.up("asc_t", {"p": "p1"}, {"s": "stale"}, 15, static=True)])
    assert env.final("asc_t__static", "p, s, _cdc_deleted") == [("p1", None, 1)]


def test_range_on_masked_clustering_column_is_refused(env: Env) -> None:
    part = env.part(masked={(env.ks, "asc_t"): {"a": "text"}})
    try:
        with pytest.raises(UnsupportedRange, match="masked"):
            part.write_batch([env.rng("asc_t", {"p": "p"}, {"a": "h"}, True, {}, True, 5)])
        part.write_batch([env.rng("asc_t", {"p": "p"}, {}, True, {}, True, 5)])  # whole: fine
    finally:
        part.close()


# --- replays, progress ------------------------------------------------------------------------

def test_replaying_a_batch_gives_the_same_final_result(env: Env, part) -> None:
    batch = [env.up("asc_t", {"p": "p", "a": a, "b": "x"}, {"v": str(a)}, 10 + a)
             for a in range(5)] + [
        env.rng("asc_t", {"p": "p"}, {"a": 1}, True, {"a": 2}, True, 12),
        env.delete("asc_t", {"p": "p", "a": 4, "b": "x"}, 40),
        env.up("asc_t", {"p": "p"}, {"s": "s"}, 9, static=True)]
    columns = "p, a, b, v, n, _cdc_version, _cdc_deleted, _cdc_source_offset"
    part.write_batch(batch)
    first = (env.final("asc_t", columns, "a"), env.final("asc_t__static", "p, s"),
             env.live("asc_t", order="a"))
    part.write_batch(batch)
    part.write_batch(batch[::-1][:3])  # a partial replay, out of order
    part.write_batch(batch)
    again = (env.final("asc_t", columns, "a"), env.final("asc_t__static", "p, s"),
             env.live("asc_t", order="a"))
    assert again == first
    assert [r[1] for r in first[2]] == [0, 3]


def test_progress_keeps_the_highest_position_per_node(env: Env, part) -> None:
    def at(node, seg, off, k):
        return env.up("kv", {"k": k}, {"v": "x"}, 1, source=Source(node, Position(seg, off)))

    big = 1_700_000_000_000  # segment ids are milliseconds: * 2^32 would overflow Int64
    part.write_batch([at("n1", big, 5, 1), at("n1", big + 1, 2, 2), at("n2", big, 9, 3)])
    part.write_batch([at("n1", big, 100, 1)])  # a replay of an older position
    part.write_batch([at("n2", big, 10, 3)])
    part.close()  # writes what the interval has not written yet
    got = env.select(
        "SELECT node, segment_id, offset FROM cdc._cdc_progress FINAL WHERE step_id = %(s)s"
        " AND sink_partition = 0 ORDER BY segment_id DESC, offset DESC LIMIT 1 BY node",
        {"s": env.step})
    assert sorted(got) == [("n1", big + 1, 2), ("n2", big, 10)]
    # Each row carries where its image came from (equal versions: the last inserted wins).
    assert env.final("kv", "k, _cdc_source_node, _cdc_source_segment, _cdc_source_offset",
                     "k") == [(1, "n1", big, 100), (2, "n1", big + 1, 2), (3, "n2", big, 10)]


def _progress(env: Env) -> list[tuple]:
    return sorted(env.select(
        "SELECT node, segment_id, offset FROM cdc._cdc_progress FINAL WHERE step_id = %(s)s"
        " ORDER BY segment_id DESC, offset DESC LIMIT 1 BY node", {"s": env.step}))


def _part_with(env: Env, **settings):
    return dataclasses.replace(env, settings=dataclasses.replace(env.settings, **settings)).part()


def test_progress_is_written_off_the_data_path_and_at_close(env: Env) -> None:
    part = _part_with(env, progress_interval=60)
    try:
        part.write_batch([env.up("kv", {"k": 1}, {"v": "x"}, 1,
                                 source=Source("n1", Position(7, 70)))])
        assert env.live("kv", "k, v") == [(1, "x")]  # the data is in at once,
        assert _progress(env) == []  # its progress waits for the interval
    finally:
        part.close()
    assert _progress(env) == [("n1", 7, 70)]


def test_progress_counts_operations_that_left_no_row_of_their_own(env: Env, part) -> None:
    # Key 1's kept image (version 9) comes from an earlier position than the image it beat;
    # the range delete covers no row. Both positions are applied all the same.
    part.write_batch([
        env.up("kv", {"k": 1}, {"v": "new"}, 9, source=Source("n1", Position(5, 10))),
        env.up("kv", {"k": 1}, {"v": "old"}, 5, source=Source("n1", Position(5, 99)))])
    part.write_batch([dataclasses.replace(
        env.rng("asc_t", {"p": "none"}, {"a": 1}, True, {"a": 2}, True, 12),
        source=Source("n2", Position(6, 7)))])
    part.close()
    assert env.live("kv", "k, v") == [(1, "new")]
    assert _progress(env) == [("n1", 5, 99), ("n2", 6, 7)]


def test_progress_is_written_within_the_interval_while_the_flow_runs(env: Env) -> None:
    part = _part_with(env, progress_interval=0.2)
    try:
        part.write_batch([env.up("kv", {"k": 1}, {"v": "x"}, 1,
                                 source=Source("n1", Position(7, 70)))])
        wait_for(lambda: _progress(env) == [("n1", 7, 70)], "progress written", 20)  # no close
    finally:
        part.close()


def test_progress_interval_zero_writes_after_every_batch(env: Env) -> None:
    part = _part_with(env, progress_interval=0)
    try:
        part.write_batch([env.up("kv", {"k": 1}, {"v": "x"}, 1,
                                 source=Source("n1", Position(7, 70)))])
        assert _progress(env) == [("n1", 7, 70)]
    finally:
        part.close()


def test_a_failed_progress_write_keeps_its_positions_for_the_next(env: Env) -> None:
    from clickhouse_connect.driver.exceptions import OperationalError

    from connectors.clickhouse._progress import PROGRESS_WRITE_ERRORS

    part = _part_with(env, progress_interval=0.1)
    writer = part._progress  # noqa: SLF001 - the partition's own writer
    real, up = writer._connect, threading.Event()  # noqa: SLF001

    def connect():
        if not up.is_set():
            raise OperationalError("connection refused")
        return real()

    writer._connect = connect  # noqa: SLF001
    errors = PROGRESS_WRITE_ERRORS.labels(env.step, "0")
    before = errors._value.get()  # noqa: SLF001 - prometheus_client's counter value
    try:
        part.write_batch([env.up("kv", {"k": 1}, {"v": "x"}, 1,
                                 source=Source("n1", Position(7, 70)))])
        wait_for(lambda: errors._value.get() > before, "a failed write", 20)  # noqa: SLF001
        part.write_batch([env.up("kv", {"k": 2}, {"v": "y"}, 1,
                                 source=Source("n2", Position(8, 80))),
                          env.up("kv", {"k": 3}, {"v": "z"}, 1,
                                 source=Source("n1", Position(7, 60)))])  # behind n1's 70
        up.set()
        wait_for(lambda: _progress(env) == [("n1", 7, 70), ("n2", 8, 80)], "both nodes", 20)
    finally:
        part.close()
    assert _progress(env) == [("n1", 7, 70), ("n2", 8, 80)]


def test_a_progress_write_retries_cannot_fix_stops_the_next_batch(env: Env) -> None:
    """_cdc_progress dropped under a running sink: the thread's write fails for good, and the
    next batch raises it (the flow stops, as on a failed data insert) instead of progress
    silently standing still. Once the table is back, the kept positions are written."""
    from clickhouse_connect.driver.exceptions import DatabaseError

    from connectors.clickhouse import ensure_progress_table

    part = _part_with(env, progress_interval=0.1)
    progress_table = f"{env.settings.database}._cdc_progress"
    try:
        part.write_batch([env.up("kv", {"k": 1}, {"v": "x"}, 1,
                                 source=Source("n1", Position(7, 70)))])
        wait_for(lambda: _progress(env) == [("n1", 7, 70)], "the first progress", 20)
        env.client.command(f"DROP TABLE {progress_table}")
        part.write_batch([env.up("kv", {"k": 2}, {"v": "y"}, 1,
                                 source=Source("n1", Position(7, 80)))])

        def refused() -> bool:
            try:
                part.write_batch([env.up("kv", {"k": 3}, {"v": "z"}, 1,
                                         source=Source("n1", Position(7, 90)))])
            except DatabaseError:
                return True
            return False

        wait_for(refused, "the next batch refused", 20)
        assert env.live("kv", "k") == [(1,), (2,), (3,)]  # the data is in all the same
    finally:
        ensure_progress_table(env.client, env.settings.database)  # for the other tests
        part.close()
    assert _progress(env) == [("n1", 7, 90)]


# --- through Bytewax --------------------------------------------------------------------------

def test_bytewax_flow_with_two_partitions(env: Env) -> None:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSource, run_main

    sink = env.sink()
    items = []
    for k in range(40):
        items.append((f"{env.ks}.kv:{k}", env.up("kv", {"k": k}, {"v": f"v{k}"}, 10,
                                                 source=Source("n1", Position(1, k + 1)))))
    items.append((f"{env.ks}.kv:3", env.delete("kv", {"k": 3}, 20)))
    items.append((f"{env.ks}.kv:4", env.up("kv", {"k": 4}, {"v": "old"}, 5)))
    flow = Dataflow("clickhouse_sink_test")
    stream = op.input("in", flow, TestingSource(items, batch_size=7))
    op.output(env.step, stream, sink)
    run_main(flow)
    got = dict(env.live("kv", "k, v"))
    assert len(got) == 39 and 3 not in got and got[4] == "v4"
    expected = {p: max(k + 1 for k in range(40) if sink.part_fn(f"{env.ks}.kv:{k}") % 2 == p)
                for p in (0, 1)}
    progress = env.select(
        "SELECT sink_partition, offset FROM cdc._cdc_progress FINAL WHERE node = 'n1' AND"
        " step_id LIKE %(s)s ORDER BY segment_id DESC, offset DESC LIMIT 1 BY sink_partition",
        {"s": f"%{env.step}%"})
    assert dict(progress) == expected


def test_transient_error_is_retried_on_a_new_client(env: Env) -> None:
    from clickhouse_connect.driver.exceptions import OperationalError

    part = env.part()
    real, calls, pauses = part._connect, [], []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("connection refused")
        return real()

    part._connect, part._sleep = flaky, pauses.append
    try:
        part.write_batch([env.up("kv", {"k": 1}, {"v": "x"}, 1)])
    finally:
        part.close()
    assert len(calls) == 2 and pauses == [env.settings.retry_backoff]
    assert env.live("kv", "k, v") == [(1, "x")]


def test_where_on_deleted_applies_after_final_on_this_server(env: Env, part) -> None:
    # The view's WHERE _cdc_deleted = 0 must see merged rows: a tombstone in one part must
    # hide the live row of the same key in another part (18.16 does not move it to PREWHERE).
    part.write_batch([env.up("kv", {"k": k}, {"v": "live"}, 10) for k in range(1000)])
    part.write_batch([env.delete("kv", {"k": k}, 30) for k in range(0, 1000, 2)])
    part.write_batch([env.up("kv", {"k": k}, {"v": "stale"}, 20) for k in range(0, 1000, 4)])
    assert env.select(f"SELECT count(), countIf(v = 'live') FROM {env.name('kv', '__current')}"
                      ) == [(500, 500)]
