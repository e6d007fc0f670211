"""CQL type strings (as system_schema stores them), value decoders, schema building, registry."""

from __future__ import annotations

import datetime
import decimal
import ipaddress
import math
import uuid
from uuid import UUID

import pytest
from cassandra import cqltypes, util
from hypothesis import given
from hypothesis import strategies as st

from connectors.cassandra.schema import (
    ClusteringOrder,
    ColumnKind,
    IgnoredTable,
    SchemaRegistry,
    SchemaRows,
    TableSchema,
    build_schemas,
)
from connectors.cassandra.values import (
    CqlTypeError,
    UdtDefinition,
    parse_cql_type,
    value_decoder,
)
from tests.manual_clock import ManualClock

UDTS = {
    "address": UdtDefinition("shop", "address", ("street", "zip", "tags"),
                             ("text", "int", "frozen<set<text>>")),
    "Person": UdtDefinition("shop", "Person", ("name", "home", "phones"),
                            ("text", "frozen<address>", "frozen<list<text>>")),
}


@pytest.mark.parametrize(("text", "kind", "fixed", "driver"), [
    ("ascii", "ascii", -1, cqltypes.AsciiType),
    ("bigint", "bigint", 8, cqltypes.LongType),
    ("blob", "blob", -1, cqltypes.BytesType),
    ("boolean", "boolean", 1, cqltypes.BooleanType),
    ("counter", "counter", -1, cqltypes.CounterColumnType),
    ("date", "date", -1, cqltypes.SimpleDateType),
    ("decimal", "decimal", -1, cqltypes.DecimalType),
    ("double", "double", 8, cqltypes.DoubleType),
    ("duration", "duration", -1, cqltypes.DurationType),
    ("float", "float", 4, cqltypes.FloatType),
    ("inet", "inet", -1, cqltypes.InetAddressType),
    ("int", "int", 4, cqltypes.Int32Type),
    ("smallint", "smallint", -1, cqltypes.ShortType),
    ("text", "text", -1, cqltypes.UTF8Type),
    ("time", "time", -1, cqltypes.TimeType),
    ("timestamp", "timestamp", 8, cqltypes.TimestampType),
    ("timeuuid", "timeuuid", 16, cqltypes.TimeUUIDType),
    ("tinyint", "tinyint", -1, cqltypes.ByteType),
    ("uuid", "uuid", 16, cqltypes.UUIDType),
    ("varchar", "varchar", -1, cqltypes.VarcharType),
    ("varint", "varint", -1, cqltypes.IntegerType),
    ("empty", "empty", 0, cqltypes.BytesType),
])
def test_native_types_and_java_fixed_widths(text: str, kind: str, fixed: int, driver: type) -> None:
    t = parse_cql_type(text)
    assert (t.kind, t.fixed_length, t.driver, t.is_complex) == (kind, fixed, driver, False)
    assert t.cql == text


@pytest.mark.parametrize(("text", "canonical", "complex_", "fixed"), [
    ("list<int>", "list<int>", True, -1),
    ("set<text>", "set<text>", True, -1),
    ("map<text, int>", "map<text, int>", True, -1),
    ("MAP< text ,int >", "map<text, int>", True, -1),
    ("frozen<list<int>>", "frozen<list<int>>", False, -1),
    ("frozen<map<text, frozen<list<int>>>>", "frozen<map<text, frozen<list<int>>>>", False, -1),
    ("map<frozen<tuple<int, text>>, frozen<set<uuid>>>",
     "map<frozen<tuple<int, text>>, frozen<set<uuid>>>", True, -1),
    ("frozen<tuple<int, text, frozen<list<duration>>>>",
     "frozen<tuple<int, text, frozen<list<duration>>>>", False, -1),
    ("tuple<int, bigint>", "frozen<tuple<int, bigint>>", False, -1),
    ("vector<float, 3>", "vector<float, 3>", False, 12),
    ("vector<bigint, 2>", "vector<bigint, 2>", False, 16),
    ("vector<text, 2>", "vector<text, 2>", False, -1),
    ("vector<frozen<list<int>>, 2>", "vector<frozen<list<int>>, 2>", False, -1),
    ("vector<vector<int, 2>, 3>", "vector<vector<int, 2>, 3>", False, 24),
    ("address", "address", True, -1),
    ("frozen<address>", "frozen<address>", False, -1),
    ('frozen<"Person">', 'frozen<"Person">', False, -1),
    ('"Person"', '"Person"', True, -1),
    ("list<frozen<address>>", "list<frozen<address>>", True, -1),
    ("'org.apache.cassandra.db.marshal.DateType'", "'org.apache.cassandra.db.marshal.DateType'",
     False, 8),
    ("'org.apache.cassandra.db.marshal.LexicalUUIDType'",
     "'org.apache.cassandra.db.marshal.LexicalUUIDType'", False, 16),
    ("'org.apache.cassandra.db.marshal.DynamicCompositeType(s=>org.apache.cassandra.db.marshal"
     ".UTF8Type)'", None, False, -1),
])
def test_composite_type_strings(text: str, canonical: str | None, complex_: bool,
                                fixed: int) -> None:
    t = parse_cql_type(text, "shop", UDTS)
    if canonical is not None:
        assert t.cql == canonical
        assert parse_cql_type(t.cql, "shop", UDTS) == t  # canonical form parses to itself
    assert t.is_complex is complex_
    assert t.fixed_length == fixed


def test_udt_fields_resolve_nested_udts() -> None:
    person = parse_cql_type('frozen<"Person">', "shop", UDTS)
    assert person.field_names == ("name", "home", "phones")
    home = person.params[1]
    assert home.kind == "udt" and home.udt_name == "address" and not home.is_complex
    assert issubclass(person.driver, cqltypes.UserType)


@pytest.mark.parametrize("text", [
    "map<int>", "list<int", "vector<float>", "vector<float, 0>", "frozen<>", "nosuchtype",
    "list<int>>", "tuple<>", "'unterminated", "int!",
])
def test_bad_type_strings(text: str) -> None:
    with pytest.raises(CqlTypeError):
        parse_cql_type(text, "shop", UDTS)


def test_self_referencing_udt_is_rejected() -> None:
    udts = {"loop": UdtDefinition("ks", "loop", ("x",), ("frozen<loop>",))}
    with pytest.raises(CqlTypeError):
        parse_cql_type("frozen<loop>", "ks", udts)


# --- value decoders agree with the driver -------------------------------------------------------

VALUES = {
    "int": st.integers(-(1 << 31), (1 << 31) - 1),
    "bigint": st.integers(-(1 << 63), (1 << 63) - 1),
    "smallint": st.integers(-(1 << 15), (1 << 15) - 1),
    "tinyint": st.integers(-128, 127),
    "varint": st.integers(-(1 << 100), 1 << 100),
    "boolean": st.booleans(),
    "double": st.floats(allow_nan=False),
    "float": st.floats(width=32, allow_nan=False),
    "text": st.text(),
    "varchar": st.text(),
    "ascii": st.text(alphabet=st.characters(max_codepoint=127)),
    "blob": st.binary(),
    "uuid": st.uuids(),
    "timeuuid": st.uuids(version=1),
    "decimal": st.decimals(allow_nan=False, allow_infinity=False, places=4),
    "inet": st.ip_addresses().map(str),
    "date": st.integers(-10000, 10000).map(util.Date),
    "time": st.integers(0, 86399999999999).map(util.Time),
    "timestamp": st.datetimes(min_value=datetime.datetime(1900, 1, 1),
                              max_value=datetime.datetime(2200, 1, 1)),
    "duration": st.builds(util.Duration, st.integers(-1000, 1000), st.integers(-1000, 1000),
                          st.integers(-(1 << 40), 1 << 40)),
}


@pytest.mark.parametrize("type_name", sorted(VALUES))
@given(data=st.data())
def test_value_decoder_matches_driver(type_name: str, data: st.DataObject) -> None:
    t = parse_cql_type(type_name)
    value = data.draw(VALUES[type_name])
    raw = t.driver.serialize(value, 5)
    got = value_decoder(t)(raw)
    expected = t.driver.from_binary(raw, 5)
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == expected
        assert type(got) is type(expected)


@pytest.mark.parametrize("type_name", sorted(VALUES))
def test_empty_value_decodes_like_the_driver(type_name: str) -> None:
    t = parse_cql_type(type_name)
    assert value_decoder(t)(b"") == t.driver.from_binary(b"", 5)


def test_collection_tuple_udt_vector_values() -> None:
    cases = [
        ("frozen<map<text, frozen<list<int>>>>", {"a": [1, 2], "b": []}),
        ("frozen<set<inet>>", {"127.0.0.1", "::1"}),
        ("frozen<tuple<int, text, boolean>>", (1, "x", None)),
        ("vector<float, 3>", [1.0, 2.5, -3.0]),
        ("vector<text, 2>", ["a", "bcd"]),
        ("frozen<address>", ("Main St", 12345, {"a", "b"})),
        ("decimal", decimal.Decimal("-12.345")),
        ("varint", -(10 ** 30)),
        ("inet", str(ipaddress.ip_address("2001:db8::1"))),
        ("uuid", uuid.uuid4()),
    ]
    for text, value in cases:
        t = parse_cql_type(text, "shop", UDTS)
        raw = t.driver.serialize(value, 5)
        decoded = value_decoder(t)(raw)
        if isinstance(value, (set, dict, tuple, list)):
            assert decoded == t.driver.deserialize(raw, 5)
            if isinstance(value, tuple):
                assert tuple(decoded) == value
            elif isinstance(value, set):
                assert set(decoded) == value
            else:
                assert (dict(decoded) if isinstance(value, dict) else list(decoded)) == value
        else:
            assert decoded == value


# --- building from system_schema rows -----------------------------------------------------------

T1 = UUID("9a0a8c60-b41f-11ef-a0e1-6d2c86545d91")
T2 = UUID("9a0a8c61-b41f-11ef-a0e1-6d2c86545d91")
OTHER = UUID("9a0a8c62-b41f-11ef-a0e1-6d2c86545d91")


def col(table: str, name: str, kind: str, type_: str, position: int = -1,
        order: str = "none") -> dict:
    return {"keyspace_name": "shop", "table_name": table, "column_name": name, "kind": kind,
            "position": position, "clustering_order": order, "type": type_}


def rows(extra_columns: list[dict] | None = None, dropped: list[dict] | None = None,
         cdc: bool = True) -> SchemaRows:
    columns = [
        col("orders", "customer", "partition_key", "uuid", 0),
        col("orders", "region", "partition_key", "text", 1),
        col("orders", "day", "clustering", "date", 0, "desc"),
        col("orders", "seq", "clustering", "int", 1, "asc"),
        col("orders", "total", "regular", "decimal"),
        col("orders", "tags", "regular", "set<text>"),
        col("orders", "ship_to", "regular", "address"),
        col("orders", "note", "static", "text"),
        col("hits", "page", "partition_key", "text", 0),
        col("hits", "n", "regular", "counter"),
    ] + (extra_columns or [])
    return SchemaRows(
        all_tables=[{"keyspace_name": "shop", "table_name": "orders", "id": T1},
                    {"keyspace_name": "shop", "table_name": "hits", "id": T2},
                    {"keyspace_name": "other", "table_name": "x", "id": OTHER}],
        tables=[{"keyspace_name": "shop", "table_name": "orders", "id": T1, "cdc": cdc,
                 "flags": {"compound"}},
                {"keyspace_name": "shop", "table_name": "hits", "id": T2, "cdc": None,
                 "flags": {"compound", "counter"}}],
        views=[],
        columns=columns,
        types=[{"keyspace_name": "shop", "type_name": "address",
                "field_names": ["street", "zip", "tags"],
                "field_types": ["text", "int", "frozen<set<text>>"]}],
        dropped_columns=dropped or [],
    )


def test_build_schemas_from_rows() -> None:
    tables, ignored = build_schemas(rows(dropped=[{
        "keyspace_name": "shop", "table_name": "orders", "column_name": "old",
        "dropped_time": datetime.datetime(2024, 1, 2, 3, 4, 5, 678000), "kind": "regular",
        "type": "frozen<tuple<text, int>>"}]))
    orders = tables[T1]
    assert (orders.keyspace, orders.name, orders.cdc, orders.is_counter) == \
        ("shop", "orders", True, False)
    assert [c.name for c in orders.partition_key] == ["customer", "region"]
    assert [(c.name, c.order) for c in orders.clustering] == \
        [("day", ClusteringOrder.DESC), ("seq", ClusteringOrder.ASC)]
    assert orders.columns["note"].kind is ColumnKind.STATIC
    assert orders.columns["ship_to"].is_complex and orders.columns["tags"].is_complex
    assert not orders.columns["total"].is_complex
    old = orders.column("old")
    assert old.dropped_time == 1704164645678000 and old.type.kind == "tuple"
    assert orders.column("missing") is None
    assert tables[T2].is_counter and not tables[T2].cdc
    assert ignored == {OTHER: IgnoredTable("other", "x", OTHER)}


def test_a_table_with_a_broken_type_is_left_out_not_the_keyspace() -> None:
    tables, _ = build_schemas(rows([col("hits", "bad", "regular", "frozen<nosuch>")]))
    assert T1 in tables and T2 not in tables


class FakeFetch:
    def __init__(self, *versions: SchemaRows):
        self.versions = list(versions)
        self.calls = 0

    def __call__(self) -> SchemaRows:
        self.calls += 1
        return self.versions[min(self.calls, len(self.versions)) - 1]


def test_registry_loads_lazily_and_throttles_refreshes() -> None:
    fetch, clock = FakeFetch(rows()), ManualClock()
    registry = SchemaRegistry(fetch, min_refresh_interval=5, clock=clock)
    assert fetch.calls == 0  # no I/O at construction
    assert isinstance(registry.table(T1), TableSchema)
    assert isinstance(registry.table(OTHER), IgnoredTable)
    assert registry.table(uuid.uuid1()) is None
    assert fetch.calls == 1
    assert registry.refresh() is False  # too soon
    clock.now = 6
    assert registry.refresh() is True
    assert fetch.calls == 2


def test_a_throttled_refresh_still_reads_a_schema_that_moved() -> None:
    """Schema evolution: a table created or altered just after the last read must not wait
    out the throttle (its changes would be undecodable); a dropped table's id, found missing
    once, is not probed for again within the interval."""
    fetch, clock = FakeFetch(rows(), rows(cdc=False)), ManualClock()
    version = {"v": 1, "probes": 0}

    def probe() -> int:
        version["probes"] += 1
        return version["v"]

    registry = SchemaRegistry(fetch, min_refresh_interval=5, clock=clock, schema_version=probe)
    registry.load()
    gone = uuid.uuid1()
    assert registry.refresh(gone) is False  # same version: nothing to read
    probes = version["probes"]
    assert registry.refresh(gone) is False and version["probes"] == probes  # not probed again
    version["v"] = 2
    assert registry.refresh(T1) is True and fetch.calls == 2  # moved: read at once
    assert registry.table(T1).cdc is False


def test_refresh_if_changed_probes_at_most_once_per_max_age() -> None:
    fetch, clock = FakeFetch(rows(cdc=False), rows()), ManualClock()
    version = {"v": 1, "probes": 0}

    def probe() -> int:
        version["probes"] += 1
        return version["v"]

    registry = SchemaRegistry(fetch, min_refresh_interval=5, clock=clock, schema_version=probe)
    assert registry.refresh_if_changed(max_age=1) is True  # first use loads
    first = registry.table(T1)
    version["v"] = 2  # e.g. ALTER TABLE ... WITH cdc = true
    clock.now = 0.5
    assert registry.refresh_if_changed(max_age=1) is False  # probed too recently
    clock.now = 1.5
    assert registry.refresh_if_changed(max_age=1) is True
    assert registry.table(T1).cdc and registry.history(T1) == (first, registry.table(T1))
    clock.now = 3
    assert registry.refresh_if_changed(max_age=1) is False and fetch.calls == 2


def test_registry_keeps_history_of_dropped_columns_and_tables() -> None:
    v1 = rows([col("orders", "legacy", "regular", "map<text, int>")])
    v2 = rows(dropped=[{"keyspace_name": "shop", "table_name": "orders", "column_name": "legacy",
                        "dropped_time": 1_700_000_000_000, "kind": "regular",
                        "type": "map<text, int>"}])
    v3 = SchemaRows(all_tables=[], tables=[], views=[], columns=[], types=[], dropped_columns=[])
    fetch, clock = FakeFetch(v1, v2, v3), ManualClock()
    registry = SchemaRegistry(fetch, min_refresh_interval=0, clock=clock)
    first = registry.table(T1)
    gen1 = registry.generation
    assert registry.refresh()
    second = registry.table(T1)
    assert second is not first and registry.generation > gen1
    assert "legacy" not in second.columns and second.column("legacy").dropped_time == \
        1_700_000_000_000_000
    assert registry.column_history(T1, "legacy").type.cql == "map<text, int>"
    assert registry.history(T1) == (first, second)
    gen2 = registry.generation
    assert registry.refresh()  # unchanged content would not bump; a dropped table does
    assert registry.table(T1) is second  # the dropped table keeps its last version
    assert registry.generation > gen2


def test_unchanged_refresh_keeps_generation() -> None:
    registry = SchemaRegistry(FakeFetch(rows()), min_refresh_interval=0)
    registry.load()
    gen = registry.generation
    schema = registry.table(T1)
    registry.refresh()
    assert registry.generation == gen and registry.table(T1) is schema
