"""Every CQL type through every destination, edge values included (docs/type-mapping.md).

One Cassandra table per case, created once for the module: ``id int`` and ``at timestamp`` (the
TimescaleDB time column) in the key, the case's type as a regular column ``v`` and, for types a
key may hold, also as a partition-key column ``k`` and a clustering column ``c``. The rows are
read back with the pipeline's RowImages/RowReader (operators/readback.py) into RowUpsert
operations, exactly as the flow does for a change event, and each case is written by
PostgresSink, ClickHouseSink and TimescaleSink (on plain PostgreSQL: ``when_missing="plain"``)
in a batch of its own, then read back from the destination's "__current" view and compared to
the Cassandra value through the documented mapping: exact where docs/type-mapping.md says
exact, the stated transformation where it says lossy, a RejectedValueError naming the column
where it says refused.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import ipaddress
import json
import random
import struct
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from cassandra import ConsistencyLevel
from cassandra import util as cutil
from cassandra.metadata import protect_name
from clickhouse_connect.driver.binding import quote_identifier as q
from psycopg import sql

from connectors.cassandra.events import ChangeEvent, ChangeKind, Liveness, Position
from connectors.cassandra.schema import SchemaRegistry, TableSchema
from connectors.clickhouse import ClickHouseSinkSettings
from connectors.clickhouse import LayoutError as ClickHouseLayoutError
from connectors.clickhouse import build_layout as clickhouse_layout
from connectors.postgres import LayoutError as PostgresLayoutError
from connectors.postgres import PostgresSinkSettings
from connectors.postgres import build_layout as postgres_layout
from connectors.row_sink import RejectedValueError
from connectors.timescale import TimescaleSettings, TimescaleSink
from operators.readback import RowImages, RowReader
from operators.row_ops import RowUpsert
from tests.connectors.clickhouse.conftest import Env
from tests.connectors.postgres.conftest import make_sink, rows

UTC = datetime.UTC
AT = datetime.datetime(2024, 1, 1)  # the time column's base value (the driver's naive UTC)
EPOCH = datetime.datetime(1970, 1, 1)
NAN, INF = float("nan"), float("inf")
F32_MAX = struct.unpack("<f", struct.pack("<I", 0x7F7FFFFF))[0]
F32_TINY = struct.unpack("<f", struct.pack("<I", 1))[0]  # the smallest subnormal
F32_TENTH = struct.unpack("<f", struct.pack("<f", 0.1))[0]
# The largest blob one CQL request can carry on the local stack: Cassandra 5's default
# native_transport_max_message_size is 512 KiB, so a 1 MiB value cannot be inserted at all.
BIG_BLOB = random.Random(20240101).randbytes(500 * 1024)
DESTINATIONS = ("postgres", "clickhouse", "timescale")
ANY_V4 = str(ipaddress.IPv4Address(0))


class Refused:
    """Expected outcome: the sink raises RejectedValueError naming COLUMN; nothing is written."""

    def __init__(self, column: str = "v") -> None:
        self.column = column


@dataclasses.dataclass(frozen=True)
class Case:
    """One CQL type: VALUES for the regular column (None = null), KEYS (None: the type may not
    be in a primary key) for the key columns, and per destination a function from the
    Cassandra value (as the driver read it) to the value read back, or a Refused."""

    name: str
    cql: str
    values: tuple
    keys: tuple | None = None
    pg: Callable[[Any], Any] | None = None
    ch: Callable[[Any], Any] | None = None
    refused: tuple[str, ...] = ()  # destinations that refuse the case (RejectedValueError)
    udts: tuple[str, ...] = ()  # CREATE TYPE statements, {ks} for the keyspace
    ch_clustering: Callable[[Any], Any] | None = None  # ClickHouse's clustering column, if
    # not `ch` (a value Cassandra's clustering order matches by value, not by its form)

    @property
    def table(self) -> str:
        return f"t_{self.name}"

    def rows(self) -> list[tuple[int, Any, Any]]:
        """(id, key value, regular value); every value and every key appears."""
        n = max(len(self.values), len(self.keys or ()))
        return [(i, self.keys[i % len(self.keys)] if self.keys else None,
                 self.values[i % len(self.values)]) for i in range(n)]


# --- the documented mapping, value by value (docs/type-mapping.md) ---------------------------

def same(value: Any) -> Any:
    return value


def f32(value: float) -> float:
    """PostgreSQL real prints the shortest text that reads back as the same float32."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def text_bytes(value: Any) -> bytes:
    return str(value).encode("utf-8")


def decimal_by_value(value: decimal.Decimal) -> bytes:
    """The shortest text of VALUE's value: Python's own Decimal.normalize with enough precision
    for every case (a different way to the sink's, which strips zeros from the digits)."""
    context = decimal.Context(prec=1000, Emin=-999999, Emax=999999)
    return str(context.plus(value).normalize(context)).encode()


def decimal_pg(value: decimal.Decimal) -> tuple:
    # numeric keeps digits and a non-negative scale; a negative scale is written out as zeros.
    return decimal.Decimal(format(value, "f")).as_tuple()


def timestamp_pg(value: datetime.datetime) -> datetime.datetime:
    return value.replace(tzinfo=UTC)


def timestamp_ch(value: datetime.datetime) -> int:
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def time_pg(value: cutil.Time) -> datetime.time:  # nanoseconds truncated to microseconds
    return datetime.time(value.hour, value.minute, value.second, value.nanosecond // 1000)


def json_case(name: str, cql: str, pairs: list[tuple[Any, Any]], keyable: bool = False,
              udts: tuple[str, ...] = (), pg: Callable | None = None) -> Case:
    """A composite type: PAIRS of (value as written, expected JSON); the driver's read value
    is looked up by the repr of what it returns for the written one (see _json_expectations)."""
    values = tuple(v for v, _ in pairs) + (None,)
    keys = tuple(v for v, _ in pairs) if keyable else None
    expected = _by_written(pairs)
    return Case(name, cql, values, keys, pg=pg or expected, ch=expected, udts=udts)


def _by_written(pairs: list[tuple[Any, Any]]) -> Callable[[Any], Any]:
    def expected(read: Any) -> Any:
        for written, json_value in pairs:
            if _canonical(_plain(read)) == _canonical(_plain(written)):
                return json_value
        raise AssertionError(f"no expectation for {read!r}")
    return expected


def _plain(value: Any) -> Any:
    """Driver values (SortedSet, OrderedMap, UDT named tuples) as plain Python structures."""
    if value is None or isinstance(value, str | bytes | int | float | decimal.Decimal):
        return value
    if hasattr(value, "_fields"):
        return {f: _plain(getattr(value, f)) for f in value._fields}
    if hasattr(value, "items"):
        return sorted(((_plain(k), _plain(v)) for k, v in value.items()), key=repr)
    if isinstance(value, set | frozenset | cutil.SortedSet):
        return sorted((_plain(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _canonical(value: Any) -> Any:
    """Comparable form: floats by repr (NaN equals NaN, -0.0 differs from 0.0), containers
    recursively, a set (list of sorted reprs) independent of order."""
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, dict):
        return ("dict", sorted((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("list", [_canonical(v) for v in value])
    if isinstance(value, set | frozenset | cutil.SortedSet):
        return ("set", sorted(repr(_canonical(v)) for v in value))
    return value


# UDTs of the UDT case (field order matters: it is the JSON object's key order).
ADDR = "CREATE TYPE {ks}.addr (street text, zip int)"
PERSON = "CREATE TYPE {ks}.person (name text, home frozen<addr>, tags frozen<list<text>>)"


class Person:
    """A UDT value as the driver binds it (attributes by field name)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)
        self._fields = tuple(fields)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__!r})"


class Addr(Person):
    pass


DURATIONS = {(1, 2, 3): "1mo2d3ns", (-1, -2, -3): "-1mo2d3ns", (0, 0, 0): "0mo0d0ns",
             (2**31 - 1, 2**31 - 1, 2**63 - 1): "2147483647mo2147483647d9223372036854775807ns"}
FLOATS = (NAN, INF, -INF, -0.0, 0.0, F32_MAX, -F32_MAX, F32_TINY, F32_TENTH)
DOUBLES = (NAN, INF, -INF, -0.0, 0.0, 1.7976931348623157e308, 5e-324, 0.1, 2.0**53 + 2)
TIMESTAMPS = (datetime.datetime(1900, 1, 1), datetime.datetime(1969, 12, 31, 23, 59, 59, 999000),
              datetime.datetime(2038, 1, 19, 3, 14, 8),
              datetime.datetime(9999, 12, 31, 23, 59, 59, 999000), EPOCH)
DECIMALS = tuple(decimal.Decimal(d) for d in (
    "0", "-123.4500", "1.000000000000000000000000000000000000001", "1E+50", "-7E-3",
    "123456789012345678901234567890.123456789012345678901234567890", "1E-400"))
VARINTS = (0, 2**100, -(2**100), 2**63, -(2**63) - 1, 2**64)
UNICODE = ("", "plain ascii", "héllo wörld", "日本語のテキスト、中文、한국어",
           "emoji 😀👍🏽 family 👨\u200d👩\u200d👧", " leading and trailing ", "tab\tnew\nline")

CASES: tuple[Case, ...] = (
    Case("ascii", "ascii", ("", "ascii ~!", "\x7f", None), ("", "a", "\x7f"),
         pg=same, ch=text_bytes),
    Case("text", "text", (*UNICODE, None), UNICODE, pg=same, ch=text_bytes),
    Case("varchar", "varchar", (*UNICODE, None), UNICODE, pg=same, ch=text_bytes),
    # U+0000 is valid CQL text; PostgreSQL text cannot hold it: refused, the flow stops.
    Case("text_nul", "text", ("a\x00b",), None, pg=Refused(), ch=text_bytes,
         refused=("postgres", "timescale")),
    Case("tinyint", "tinyint", (-128, 127, 0, None), (-128, 0, 127), pg=same, ch=same),
    Case("smallint", "smallint", (-32768, 32767, 0, None), (-32768, 0, 32767), pg=same, ch=same),
    Case("int", "int", (-2**31, 2**31 - 1, 0, None), (-2**31, 0, 2**31 - 1), pg=same, ch=same),
    Case("bigint", "bigint", (-2**63, 2**63 - 1, 0, None), (-2**63, 0, 2**63 - 1),
         pg=same, ch=same),
    Case("varint", "varint", (*VARINTS, None), VARINTS, pg=decimal.Decimal, ch=text_bytes),
    # Past Python's int-to-text limit (4300 digits): still exact. (Not a key: PostgreSQL's
    # btree entries hold about 2.7 kB.)
    Case("varint_huge", "varint", (10**5000 + 7, -(10**5000) - 7, None),
         pg=decimal.Decimal, ch=lambda v: str(decimal.Decimal(v)).encode()),
    Case("decimal", "decimal", (*DECIMALS, None), DECIMALS,
         pg=decimal_pg, ch=text_bytes, ch_clustering=decimal_by_value),
    # PostgreSQL numeric input accepts exponents within +-1000 only: beyond, refused.
    Case("decimal_beyond_numeric", "decimal", (decimal.Decimal("1E-20000"),), None,
         pg=Refused(), ch=text_bytes, refused=("postgres", "timescale")),
    Case("float", "float", (*FLOATS, None), FLOATS, pg=f32, ch=same),
    Case("double", "double", (*DOUBLES, None), DOUBLES, pg=same, ch=same),
    Case("boolean", "boolean", (True, False, None), (True, False), pg=same,
         ch=lambda v: int(v)),
    Case("uuid", "uuid", (uuid.UUID(int=0), uuid.UUID(int=2**128 - 1),
                          uuid.UUID("0f3b5c8e-7d1a-4b2c-9e4f-123456789abc"), None),
         (uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)), pg=same, ch=same),
    Case("timeuuid", "timeuuid", (cutil.uuid_from_time(0), cutil.uuid_from_time(2**31),
                                  uuid.UUID("d2177dd0-eaa2-11de-a572-001b779c76e3"), None),
         (cutil.uuid_from_time(0), uuid.UUID("d2177dd0-eaa2-11de-a572-001b779c76e3")),
         pg=same, ch=same),
    Case("timestamp", "timestamp", (*TIMESTAMPS, None), TIMESTAMPS,
         pg=timestamp_pg, ch=timestamp_ch),
    Case("date", "date", (cutil.Date(0), cutil.Date(-1), cutil.Date(datetime.date(1, 1, 1)),
                          cutil.Date(datetime.date(9999, 12, 31)), None),
         (cutil.Date(0), cutil.Date(-1), cutil.Date(datetime.date(1, 1, 1)),
          cutil.Date(datetime.date(9999, 12, 31))),
         pg=lambda v: v.date(), ch=lambda v: v.days_from_epoch),
    # Cassandra's date range (about 5.9 million years either side of 1970) exceeds Python's
    # years 1..9999, which the PostgreSQL sink converts through: refused there.
    Case("date_extremes", "date", (cutil.Date(-2**31), cutil.Date(2**31 - 1)), None,
         pg=Refused(), ch=lambda v: v.days_from_epoch, refused=("postgres", "timescale")),
    Case("time", "time", (cutil.Time(0), cutil.Time(86_399_999_999_999), cutil.Time(1),
                          cutil.Time(43_200_000_001_999), None),
         (cutil.Time(0), cutil.Time(1), cutil.Time(86_399_999_999_999)),
         pg=time_pg, ch=lambda v: v.nanosecond_time),
    Case("duration", "duration", (*(cutil.Duration(*k) for k in DURATIONS), None), None,
         pg=lambda v: DURATIONS[(v.months, v.days, v.nanoseconds)],
         ch=lambda v: DURATIONS[(v.months, v.days, v.nanoseconds)].encode()),
    Case("blob", "blob", (b"", b"\x00", bytes(range(256)), BIG_BLOB, None),
         (b"", b"\x00", b"\xff\x00", bytes(range(256))), pg=same, ch=same),
    Case("inet", "inet", ("192.168.0.1", ANY_V4, "255.255.255.255", "::1", "::",
                          "2001:db8::ff00:42:8329", "::ffff:192.0.2.1", None),
         (ANY_V4, "::1", "2001:db8::ff00:42:8329"),
         pg=ipaddress.ip_address, ch=text_bytes),
    json_case("list", "list<int>", [([1, -2**31, 2**31 - 1], [1, -2**31, 2**31 - 1]),
                                    ([0], [0])]),
    json_case("set", "set<text>", [({"b", "a", "日本", ""}, ["", "a", "b", "日本"])]),
    json_case("map", "map<text, double>",
              [({"nan": NAN, "inf": INF, "x": 1.5, "nz": -0.0},
                {"inf": "Infinity", "nan": "NaN", "x": 1.5, "nz": -0.0})],
              # jsonb numbers are numeric, which has no negative zero: -0.0 becomes 0.
              pg=lambda v: {"inf": "Infinity", "nan": "NaN", "x": 1.5, "nz": 0.0}),
    json_case("frozen_list", "frozen<list<text>>", [([], []), (["", "😀", ""], ["", "😀", ""])],
              keyable=True),
    json_case("frozen_set", "frozen<set<bigint>>",
              [(set(), []), ({2**63 - 1, -2**63, 0}, [-2**63, 0, 2**63 - 1])], keyable=True),
    json_case("frozen_map", "frozen<map<int, blob>>",
              [({}, {}), ({2: b"\x00\xff", -1: b""}, {"-1": "\\x", "2": "\\x00ff"})],
              keyable=True),
    json_case("map_uuid_timestamp", "map<uuid, timestamp>",
              [({uuid.UUID(int=1): datetime.datetime(1900, 1, 1)},
                {"00000000-0000-0000-0000-000000000001": "1900-01-01T00:00:00+00:00"})]),
    json_case("nested", "list<frozen<map<text, frozen<set<int>>>>>",
              [([{"a": {3, 1, 2}, "b": set()}, {}], [{"a": [1, 2, 3], "b": []}, {}])]),
    json_case("tuple", "frozen<tuple<int, text, double, varint>>",
              [((1, "x", 0.5, 2**100), [1, "x", 0.5, 2**100]),
               ((None, None, None, None), [None, None, None, None]),
               ((0, "", NAN, -1), [0, "", "NaN", -1])], keyable=True),
    json_case("tuple_decimal_time", "tuple<decimal, time, date, duration>",
              [((decimal.Decimal("1E+50"), cutil.Time(1), cutil.Date(0),
                 cutil.Duration(1, 2, 3)),
                ["1E+50", "00:00:00.000000001", "1970-01-01", "1mo2d3ns"])]),
    json_case("udt", "person",
              [(Person(name="Ana", home=Addr(street="Main 1", zip=12345), tags=["x", "y"]),
                {"name": "Ana", "home": {"street": "Main 1", "zip": 12345}, "tags": ["x", "y"]}),
               (Person(name=None, home=None, tags=None),
                {"name": None, "home": None, "tags": None})],
              udts=(ADDR, PERSON)),
    json_case("frozen_udt", "frozen<person>",
              [(Person(name="", home=Addr(street=None, zip=0), tags=[]),
                {"name": "", "home": {"street": None, "zip": 0}, "tags": []})],
              keyable=True, udts=(ADDR, PERSON)),
    # vector<float>: real[] in PostgreSQL (float32, exact), JSON text in ClickHouse.
    json_case("vector_float", "vector<float, 3>",
              [([F32_TENTH, -0.0, INF], [F32_TENTH, -0.0, "Infinity"]),
               ([NAN, F32_MAX, F32_TINY], ["NaN", F32_MAX, F32_TINY])],
              keyable=True, pg=lambda v: [f32(x) for x in v]),
    json_case("vector_int", "vector<int, 2>", [([-2**31, 2**31 - 1], [-2**31, 2**31 - 1])],
              keyable=True),
)
CASE_BY_NAME = {c.name: c for c in CASES}
assert len(CASE_BY_NAME) == len(CASES)


def _float_key_ops(written: dict[str, Written], keys: list[tuple[float, float]]
                   ) -> list[RowUpsert]:
    """Upserts into the float case's table (id 1000, outside the case's rows) with these
    (k, c) keys, versions increasing, v = 1.0, 2.0, ..."""
    template = written["float"].ops[0]
    return [dataclasses.replace(template, key={"id": 1000, "k": k, "at": AT, "c": c},
                                values={"v": float(n)}, version=2**62 + n)
            for n, (k, c) in enumerate(keys, start=1)]


# Batches beyond the cases (run by every destination after them): name -> ops.
EXTRA_BATCHES: dict[str, Callable[[dict[str, Written]], list[RowUpsert]]] = {
    # The same row (a NaN in its key) changed twice in one batch: two distinct NaN objects.
    "nan_key_twice": lambda w: _float_key_ops(w, [(float("nan"), float("nan")),
                                                  (float("nan"), float("nan"))]),
    # Two Cassandra rows (Float.compare tells -0.0 from 0.0) that the destinations merge.
    "signed_zero_keys": lambda w: _float_key_ops(w, [(0.0, -0.0), (0.0, 0.0)]),
}


# --- Cassandra: tables, rows, and the pipeline's read-back -----------------------------------

@dataclasses.dataclass
class Written:
    """What the pipeline would hand the sinks for one case: its schema and operations."""

    case: Case
    schema: TableSchema
    ops: list[RowUpsert]
    read: dict[int, tuple[Any, Any]]  # id -> (key value, regular value) as the driver read them


def _ddl(case: Case, ks: str) -> str:
    if case.keys is None:
        return (f"CREATE TABLE {ks}.{case.table} (id int, at timestamp, v {case.cql},"
                " PRIMARY KEY (id, at))")
    return (f"CREATE TABLE {ks}.{case.table} (id int, at timestamp, k {case.cql}, c {case.cql},"
            f" v {case.cql}, PRIMARY KEY ((id, k), at, c))")


@pytest.fixture(scope="module")
def cassandra_written(cassandra_clusters, creds) -> Iterator[dict[str, Written]]:
    """Every case's table created, filled and read back once for the module. (The shared
    cassandra_keyspace fixture is per test: it would re-create ~40 tables per value.)"""
    from devstack.cassandra import connect

    cluster, sess = connect(7, "admin", password=creds("cassandra", "admin").password)
    ks = f"types_{uuid.uuid4().hex[:12]}"
    sess.execute(f"CREATE KEYSPACE {protect_name(ks)} WITH replication = "
                 f"{{'class': 'NetworkTopologyStrategy', 'datacenter1': "
                 f"{len(cassandra_clusters[7].contact_points)}}}")
    try:
        for ddl in dict.fromkeys(u for c in CASES for u in c.udts):
            sess.execute(ddl.format(ks=ks))
        for case in CASES:
            sess.execute(_ddl(case, ks))
        for case in CASES:
            columns = "id, at, v" if case.keys is None else "id, at, k, c, v"
            marks = ", ".join("?" * len(columns.split(", ")))
            insert = sess.prepare(f"INSERT INTO {ks}.{case.table} ({columns}) VALUES ({marks})")
            for i, key, value in case.rows():
                at = AT + datetime.timedelta(seconds=i)
                sess.execute(insert, [i, at, value] if case.keys is None
                             else [i, at, key, key, value])
        registry = SchemaRegistry.from_session(sess, [ks])
        tables = {t.name: t for t in registry.tables() if t.keyspace == ks}
        images = RowImages(RowReader(sess, consistency=ConsistencyLevel.ONE),
                           lambda event: tables[event.table])
        written = {}
        for seq, case in enumerate(CASES):
            ops, read = [], {}
            for i, key, _ in case.rows():
                at = AT + datetime.timedelta(seconds=i)
                pk = {"id": i} if case.keys is None else {"id": i, "k": key}
                ck = {"at": at} if case.keys is None else {"at": at, "c": key}
                event = ChangeEvent("127.0.0.1", Position(1, 100 * seq + i), 0, ks, case.table,
                                    tables[case.table].id, ChangeKind.UPSERT, pk, ck, {},
                                    Liveness(1), None, False, None, None, b"")
                (op,) = images.operations(event)
                assert isinstance(op, RowUpsert), (case.name, op)
                ops.append(op)
                read[i] = (op.key.get("k"), op.values["v"])
            written[case.name] = Written(case, tables[case.table], ops, read)
        yield written
    finally:
        sess.execute(f"DROP KEYSPACE IF EXISTS {protect_name(ks)}")
        cluster.shutdown()


# --- destinations ----------------------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    """One case in one destination: the error the write raised, or what was read back by id
    as (k, c, v)."""

    error: Exception | None
    rows: dict[int, tuple[Any, Any, Any]]
    extra: list[tuple] = dataclasses.field(default_factory=list)  # EXTRA_BATCHES: rows found


def _schema_of(written: dict[str, Written]) -> Callable[[str, str], TableSchema | None]:
    by_name = {(w.schema.keyspace, w.schema.name): w.schema for w in written.values()}
    return lambda ks, t: by_name.get((ks, t))


@pytest.fixture(scope="module")
def pg_admin_schema(postgres_service, creds) -> Iterator[str]:
    from devstack import postgres

    name = f"types_{uuid.uuid4().hex[:12]}"
    with postgres.connect(role="admin", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
            sql.Identifier(name), sql.Identifier(creds("postgres", "pipeline").username)))
    yield name
    with postgres.connect(role="admin", autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _pg_settings(schema: str, creds) -> PostgresSinkSettings:
    from devstack import postgres
    from devstack.certs import ensure_certificates

    return PostgresSinkSettings(
        host=postgres.HOST, port=postgres.PORT, dbname=postgres.DATABASE,
        user=creds("postgres", "pipeline").username,
        password_ref="openbao:cdc/postgres/pipeline#password",
        sslrootcert=str(ensure_certificates().ca_cert), schema=schema, partitions=1,
        retry_backoff=0.05, retry_attempts=2)


def _pg_outcomes(sink, settings: PostgresSinkSettings, written: dict[str, Written],
                 password: str) -> dict[str, Outcome]:
    part = sink.build_part("types_out", "0", None)
    outcomes = {}
    try:
        with psycopg.connect(**settings.connection_kwargs(password), autocommit=True) as conn:
            for name, w in written.items():
                try:
                    part.write_batch(w.ops)
                except RejectedValueError as error:
                    outcomes[name] = Outcome(error, {})
                    continue
                view = f"{w.schema.keyspace}__{w.case.table}__current"
                columns = "id, NULL, NULL, v" if w.case.keys is None else "id, k, c, v"
                found = rows(conn, settings.schema, view, columns, "id")
                outcomes[name] = Outcome(None, {r[0]: tuple(r[1:]) for r in found})
            view = f"{next(iter(written.values())).schema.keyspace}__t_float__current"
            for name, make_ops in EXTRA_BATCHES.items():
                try:
                    part.write_batch(make_ops(written))
                except Exception as error:  # noqa: BLE001 - the outcome under test
                    outcomes[name] = Outcome(error, {})
                    continue
                found = rows(conn, settings.schema, view, "id, k, c, v", "id")
                outcomes[name] = Outcome(None, {}, [r for r in found if r[0] == 1000])
                conn.execute(sql.SQL("DELETE FROM {}.{} WHERE id = 1000").format(
                    sql.Identifier(settings.schema), sql.Identifier(view[:-len("__current")])))
    finally:
        part.close()
    return outcomes


@pytest.fixture(scope="module")
def postgres_outcomes(cassandra_written, pg_admin_schema, creds) -> dict[str, Outcome]:
    settings = _pg_settings(pg_admin_schema, creds)
    sink = make_sink(settings, {(w.schema.keyspace, w.schema.name): w.schema
                                for w in cassandra_written.values()})
    return _pg_outcomes(sink, settings, cassandra_written,
                        creds("postgres", "pipeline").password)


@pytest.fixture(scope="module")
def timescale_outcomes(cassandra_written, postgres_service, creds) -> Iterator[dict]:
    """TimescaleSink in its own schema; CI's PostgreSQL has no extension: plain tables."""
    from devstack import postgres

    name = f"types_ts_{uuid.uuid4().hex[:12]}"
    with postgres.connect(role="admin", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
            sql.Identifier(name), sql.Identifier(creds("postgres", "pipeline").username)))
    try:
        settings = _pg_settings(name, creds)
        times = {f"{w.schema.keyspace}.{w.schema.name}": "at" for w in cassandra_written.values()}
        sink = TimescaleSink(settings, TimescaleSettings(time_columns=times, when_missing="plain"),
                             _schema_of(cassandra_written))
        yield _pg_outcomes(sink, settings, cassandra_written,
                           creds("postgres", "pipeline").password)
    finally:
        with postgres.connect(role="admin", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(name)))


@pytest.fixture(scope="module")
def clickhouse_outcomes(cassandra_written, clickhouse_service, creds) -> Iterator[dict]:
    from devstack import clickhouse
    from devstack.certs import ensure_certificates

    pipeline = creds("clickhouse", "pipeline")
    settings = ClickHouseSinkSettings(
        host=clickhouse.HOST, port=clickhouse.HTTPS_PORT, database=clickhouse.DATABASE,
        user=pipeline.username, password_ref="openbao:cdc/clickhouse/pipeline#password",
        ca_cert=str(ensure_certificates().ca_cert), partitions=1, retry_backoff=0.05,
        retry_attempts=2)
    ks = next(iter(cassandra_written.values())).schema.keyspace
    env = Env(ks, f"types_out_{ks}", settings,
              clickhouse.connect("pipeline", password=pipeline.password))
    tables = {(w.schema.keyspace, w.schema.name): w.schema for w in cassandra_written.values()}
    part = env.part(tables)
    outcomes = {}
    try:
        for name, w in cassandra_written.items():
            try:
                part.write_batch(w.ops)
            except RejectedValueError as error:
                outcomes[name] = Outcome(error, {})
                continue
            columns = "id, NULL, NULL, v" if w.case.keys is None else "id, k, c, v"
            result = env.client.query(
                f"SELECT {columns} FROM {env.name(w.case.table, '__current')} ORDER BY id",  # noqa: S608
                query_formats={"String": "bytes"})
            outcomes[name] = Outcome(None, {r[0]: tuple(r[1:]) for r in result.result_rows})
        for name, make_ops in EXTRA_BATCHES.items():
            table = env.name("t_float")
            env.client.command(f"TRUNCATE TABLE {table}")  # 18.16: no lightweight DELETE
            try:
                part.write_batch(make_ops(cassandra_written))
            except Exception as error:  # noqa: BLE001 - the outcome under test
                outcomes[name] = Outcome(error, {})
                continue
            found = env.select(f"SELECT id, k, c, v FROM {table} FINAL ORDER BY id")  # noqa: S608
            outcomes[name] = Outcome(None, {}, [r for r in found if r[0] == 1000])
        yield outcomes
    finally:
        part.close()
        names = env.client.query(
            "SELECT name FROM system.tables WHERE database = %(db)s AND startsWith(name, %(p)s)",
            parameters={"db": settings.database, "p": f"{ks}__"}).result_rows
        for (table,) in sorted(names, key=lambda r: not r[0].endswith("__current")):
            env.client.command(f"DROP TABLE IF EXISTS {q(settings.database)}.{q(table)}")
        progress = f"{q(settings.database)}.{q('_cdc_progress')}"
        env.client.command(f"ALTER TABLE {progress} DELETE WHERE step_id = %(s)s",
                           parameters={"s": env.step})
        env.client.close()


# --- the comparisons -------------------------------------------------------------------------

def _actual(destination: str, case: Case, value: Any) -> Any:
    """A destination's value in the form the expectations use: JSON text parsed."""
    if value is None:
        return None
    if destination == "clickhouse":
        return json.loads(value.decode("utf-8")) if case.name in _JSON_CASES else value
    if case.cql == "float":
        return f32(value)  # real's text is the shortest that reads back as the same float32
    if case.cql == "decimal":
        return value.as_tuple()
    if case.cql.startswith("vector<float"):
        return [f32(x) for x in value]
    return value


_JSON_CASES = frozenset(c.name for c in CASES if c.cql.split("<")[0] in (
    "list", "set", "map", "frozen", "tuple", "person", "vector"))


def cassandra_value(case: Case, written: Any) -> Any:
    """What Cassandra holds for WRITTEN: an empty non-frozen collection (or a non-frozen UDT
    whose fields are all null) is no cell, i.e. null."""
    if isinstance(written, set | list | dict) and not written and \
            case.cql.split("<")[0] in ("list", "set", "map"):
        return None
    if isinstance(written, Person) and case.cql == "person" and \
            all(getattr(written, f) is None for f in written._fields):
        return None  # a non-frozen UDT is one cell per field: all null is no cell at all
    return written


@pytest.mark.parametrize("destination", DESTINATIONS)
@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_type_roundtrip(name: str, destination: str, cassandra_written, request) -> None:
    """The destination holds the Cassandra value through the documented mapping (compared to
    what was written, i.e. Cassandra's exact value, not to the driver's reading of it)."""
    case = CASE_BY_NAME[name]
    outcome: Outcome = request.getfixturevalue(f"{destination}_outcomes")[name]
    rule = case.ch if destination == "clickhouse" else case.pg
    assert rule is not None
    if destination in case.refused:
        assert isinstance(outcome.error, RejectedValueError), "expected a refusal"
        assert outcome.error.column == (rule.column if isinstance(rule, Refused) else "v")
        return
    assert outcome.error is None, f"{destination} refused {name}: {outcome.error}"
    assert sorted(outcome.rows) == [i for i, _, _ in case.rows()]
    for i, key, value in case.rows():
        k, c, v = outcome.rows[i]
        value = cassandra_value(case, value)
        want_v = None if value is None else rule(value)
        assert _canonical(_actual(destination, case, v)) == _canonical(want_v), (i, "v")
        if case.keys is not None:
            want_k = rule(key)
            assert _canonical(_actual(destination, case, k)) == _canonical(want_k), (i, "k")
            if destination == "clickhouse" and case.ch_clustering is not None:
                want_k = case.ch_clustering(key)
            assert _canonical(_actual(destination, case, c)) == _canonical(want_k), (i, "c")


def test_cassandra_read_back_what_was_written(cassandra_written) -> None:
    """The driver's values equal what the cases wrote, except where the driver itself is
    inexact: it decodes a timestamp through a float of seconds, so far from 1970 (after about
    2250) it is off by microseconds, never by half a millisecond (the sinks round to whole
    milliseconds, Cassandra's precision)."""
    for name, w in cassandra_written.items():
        for i, key, value in w.case.rows():
            read_key, read_value = w.read[i]
            pairs = [(read_value, cassandra_value(w.case, value))]
            if w.case.keys is not None:
                pairs.append((read_key, key))
            for read, wrote in pairs:
                if isinstance(wrote, datetime.datetime):
                    assert abs(read - wrote) < datetime.timedelta(microseconds=500), (name, i)
                else:
                    assert _canonical(_plain(read)) == _canonical(_plain(wrote)), (name, i)


@pytest.mark.parametrize("destination", DESTINATIONS)
def test_nan_key_updated_twice_in_one_batch(destination: str, request) -> None:
    """Cassandra: one row (its key compares NaN equal to NaN); the later image must win."""
    outcome: Outcome = request.getfixturevalue(f"{destination}_outcomes")["nan_key_twice"]
    assert outcome.error is None, f"{type(outcome.error).__name__}: {outcome.error}"
    assert [row[3] for row in outcome.extra] == [2.0]


@pytest.mark.parametrize("destination", DESTINATIONS)
def test_signed_zero_keys_collapse(destination: str, request) -> None:
    """Documented loss (docs/type-mapping.md, 9): Cassandra's two rows c = -0.0 and c = 0.0
    are one key in every destination; the higher version wins."""
    outcome: Outcome = request.getfixturevalue(f"{destination}_outcomes")["signed_zero_keys"]
    assert outcome.error is None, f"{type(outcome.error).__name__}: {outcome.error}"
    assert [row[3] for row in outcome.extra] == [2.0]


LISTED = ("ascii", "bigint", "blob", "boolean", "counter", "date", "decimal", "double",
          "duration", "float", "inet", "int", "smallint", "text", "time", "timestamp",
          "timeuuid", "tinyint", "uuid", "varchar", "varint")


def test_converters_keep_none_and_only_none_as_none() -> None:
    """What the sinks' column conversion relies on (connectors/row_batch.py): a key column
    without NULL before conversion has none after it, so it is checked once, before."""
    from connectors.cassandra.values import parse_cql_type
    from connectors.clickhouse._types import converter as clickhouse_converter
    from connectors.postgres._values import converter as postgres_converter
    from connectors.type_map import ValueRefused

    checked = 0
    for case in CASES:
        if case.udts:
            continue  # their types need the keyspace's definitions
        cql = parse_cql_type(case.cql)
        for convert in (postgres_converter(cql), clickhouse_converter(cql)):
            assert convert(None) is None, case.name
            # The forms row_batch uses for a column holding no None: per value, and whole.
            whole = getattr(convert, "__wrapped__", convert)
            column = getattr(convert, "column", None)
            values = [v for v in case.values if v is not None]
            for value in values:
                for form in (convert, whole):
                    try:
                        converted = form(value)
                    except (ValueRefused, ValueError, TypeError, OverflowError):
                        continue  # refused: the sink names the column, nothing is written
                    assert converted is not None, (case.name, value)
                    checked += 1
            if column is not None and values:
                try:
                    converted_column = column(list(values))
                except Exception:  # noqa: BLE001, S112 - the column form may decline
                    continue  # (row_batch then converts value by value, checked above)
                assert None not in converted_column, case.name
                checked += 1
    assert checked > 200


def test_typemap_covers_every_cql_type_and_the_cases_cover_the_map() -> None:
    """connectors/typemap.json: every native type (counter excepted: refused) and every
    composite kind has a PostgreSQL and a ClickHouse column; TimescaleDB's rule says it uses
    PostgreSQL's; and every mapped type has a round-trip case above."""
    from connectors.postgres._values import typemap
    from connectors.timescale._sink import TIME_TYPES

    mapping = typemap()
    for name in LISTED:
        if name == "counter":
            assert name not in mapping["types"]
            continue
        assert set(mapping["types"][name]) >= {"postgres", "clickhouse"}, name
    for kind in ("list", "set", "map", "tuple", "udt"):
        assert set(mapping["composite"][kind]) >= {"postgres", "clickhouse"}, kind
    assert set(mapping["vector_default"]) >= {"postgres", "clickhouse"}
    assert mapping["timescale"]["columns"] == "postgres"
    assert TIME_TYPES == ("timestamptz", "date")
    tested = {c.cql.split("<")[0] for c in CASES} | {"udt"}
    assert tested >= (set(LISTED) - {"counter"}) | {"list", "set", "map", "frozen", "tuple",
                                                    "vector"}


def test_counter_tables_are_refused_by_every_sink(cassandra_clusters, cassandra_keyspace) -> None:
    """Counters are not captured (the commit log holds shard contexts, not values): the
    capture reports CounterUpdate notices to the dead-letter stream, and every sink refuses a
    counter table's layout with a LayoutError that says so."""
    sess, ks = cassandra_keyspace(7)
    sess.execute(f"CREATE TABLE {ks}.hits (id int PRIMARY KEY, n counter)")
    (table,) = [t for t in SchemaRegistry.from_session(sess, [ks.strip('"')]).tables()
                if t.name == "hits"]
    assert table.is_counter
    for build, error in ((postgres_layout, PostgresLayoutError),
                         (clickhouse_layout, ClickHouseLayoutError)):
        with pytest.raises(error, match="counter table"):
            build(table)
