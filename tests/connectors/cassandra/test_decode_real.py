"""Property-based: random tables and workloads on the REAL nodes (commit-log v7 and v8), decoded.

For each example: a random table WITH cdc = true (1-2 partition key columns, 0-2 clustering
columns ASC/DESC, regular columns of random simple types, optionally a static column and a
non-frozen set/list/map), a non-cdc table with the same partition key in the same keyspace, and
a random workload in which every statement carries USING TIMESTAMP (out of order on purpose).
The oracle computes each statement's events from the statement alone (kind, partition key,
clustering, liveness, cells with values/timestamps/TTLs, deletion timestamps, range bounds) and
compares them with what the decoder makes of the node's cdc_raw entries, statement by statement
(each cdc statement is exactly one commit-log entry with events, in execution order).

Not covered here: commit-log compression/encryption (node-level settings, the stack runs
uncompressed), counters, UDTs, list element removal by value/index (read-before-write: the
cell paths are not known from the statement).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from cassandra.util import Date, Time
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from connectors.cassandra.events import ChangeEvent, ChangeKind, ComplexCell
from tests.connectors.cassandra.cdc_capture import CdcCapture

EXAMPLES = int(os.environ.get("CDC_DECODE_EXAMPLES", "25"))
BASE_TS = 1_700_000_000_000_000  # microseconds; each statement lands somewhere around it
EPOCH = datetime.datetime(1970, 1, 1)
MAX_TTL = 630_720_000  # 20 years, Attributes.MAX_TTL

i32 = st.integers(-(2**31), 2**31 - 1)


def _ms(v: datetime.datetime) -> int:
    return round((v - EPOCH) / datetime.timedelta(microseconds=1) / 1000)


@dataclass(frozen=True)
class CqlKind:
    name: str
    values: st.SearchStrategy
    norm: Callable[[Any], Any] = lambda v: v
    ordered: bool = False  # two-bound slices are generated only for these (Python order = CQL)


SIMPLE = {
    k.name: k for k in [
        CqlKind("int", i32, ordered=True),
        CqlKind("bigint", st.integers(-(2**63), 2**63 - 1), ordered=True),
        CqlKind("smallint", st.integers(-(2**15), 2**15 - 1), ordered=True),
        CqlKind("tinyint", st.integers(-128, 127), ordered=True),
        CqlKind("varint", st.integers(-(2**100), 2**100), ordered=True),
        # Now and then a value of 128 bytes or more: its length is a 2-byte vint.
        CqlKind("text", st.text(max_size=12) | st.text(min_size=130, max_size=200)),
        CqlKind("boolean", st.booleans()),
        CqlKind("double", st.floats(allow_nan=False)),
        CqlKind("uuid", st.uuids()),
        CqlKind("timestamp", st.datetimes(datetime.datetime(1900, 1, 1),
                                          datetime.datetime(2200, 1, 1)).map(
            lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)), norm=_ms),
        CqlKind("blob", st.binary(max_size=16) | st.binary(min_size=128, max_size=300)),
        CqlKind("decimal", st.decimals(-(10**9), 10**9, places=4, allow_nan=False,
                                       allow_infinity=False), norm=lambda v: Decimal(v)),
        CqlKind("inet", st.ip_addresses().map(str), norm=ipaddress.ip_address),
        CqlKind("date", st.dates(), norm=lambda v: ("date", v.days_from_epoch if isinstance(
            v, Date) else Date(v).days_from_epoch)),
        CqlKind("time", st.times(), norm=lambda v: ("time", v.nanosecond_time if isinstance(
            v, Time) else Time(v).nanosecond_time)),
        CqlKind("frozen<list<int>>", st.lists(i32, max_size=4), norm=tuple),
    ]
}
COLLECTIONS = {  # type -> element strategy (set: elements, list: values, map: (key, value))
    "set<text>": st.text(max_size=6),
    "list<int>": i32,
    "map<text, int>": st.tuples(st.text(max_size=6), i32),
}


def _nonempty(kind: CqlKind) -> st.SearchStrategy:
    # Cassandra refuses empty partition keys ("Key may not be empty").
    if kind.name in ("text", "blob"):
        return kind.values.filter(lambda v: len(v) > 0)
    return kind.values


@dataclass
class Column:
    name: str
    kind: CqlKind | None  # None: the collection column
    coll: str | None = None
    desc: bool = False


@dataclass
class Table:
    name: str
    pk: list[Column]
    ck: list[Column]
    regular: list[Column]
    static: Column | None
    coll: Column | None

    def cql(self) -> str:
        cols = [f"{c.name} {c.kind.name}" for c in self.pk + self.ck + self.regular]
        if self.static:
            cols.append(f"{self.static.name} {self.static.kind.name} static")
        if self.coll:
            cols.append(f"{self.coll.name} {self.coll.coll}")
        pk = "(" + ", ".join(c.name for c in self.pk) + ")"
        key = ", ".join([pk] + [c.name for c in self.ck])
        order = ""
        if self.ck:
            order = " AND CLUSTERING ORDER BY (" + ", ".join(
                f"{c.name} {'DESC' if c.desc else 'ASC'}" for c in self.ck) + ")"
        return (f"CREATE TABLE {{ks}}.{self.name} ({', '.join(cols)}, PRIMARY KEY ({key}))"
                f" WITH cdc = true{order}")

    def norm_key(self, cols: list[Column], values: dict) -> dict:
        return {c.name: (None if values[c.name] is None else c.kind.norm(values[c.name]))
                for c in cols if c.name in values}


@dataclass
class Statement:
    cql: str
    params: list
    expected: list[dict]  # events on the cdc table, in order
    note: str = ""


# --- expected events -------------------------------------------------------------------------

def ev(kind: str, pk: dict, ck: dict | None = None, *, static: bool = False, liveness=None,
       deletion=None, cells=None, start=None, end=None) -> dict:
    return {"kind": kind, "pk": pk, "ck": ck or {}, "static": static, "liveness": liveness,
            "deletion": deletion, "cells": cells or {}, "start": start, "end": end}


def simple_cell(col: Column, value, ts: int, ttl: int) -> tuple:
    if value is None:  # binding null writes a tombstone (no TTL)
        return ("cell", None, ts, 0, True)
    return ("cell", col.kind.norm(value), ts, ttl, False)


def _norm_elements(coll: str, elements: list[tuple]) -> tuple:
    # list elements keep their order (paths are timeuuids chosen by the node: left out);
    # set and map elements are compared as sets.
    if coll.startswith("list"):
        return tuple(elements)
    return tuple(sorted(elements, key=repr))


def complex_cell(col: Column, deletion: int | None, elements: list[tuple]) -> tuple:
    return ("complex", deletion, _norm_elements(col.coll, elements))


def coll_elements(col: Column, value, ts: int, ttl: int, *, deleted=False) -> list[tuple]:
    if col.coll.startswith("list"):
        return [(None, v, ts, ttl, False) for v in value]
    if col.coll.startswith("set"):
        return [(v, None, ts, 0 if deleted else ttl, deleted) for v in value]
    if deleted:  # map keys removed
        return [(k, None, ts, 0, True) for k in value]
    return [(k, v, ts, ttl, False) for k, v in value.items()]


# --- decoded events, in the same shape -------------------------------------------------------

def view(table: Table, e: ChangeEvent) -> dict:
    cells = {}
    for name, cell in e.cells.items():
        if isinstance(cell, ComplexCell):
            col = table.coll
            elements = []
            for el in cell.elements:
                path = None if col.coll.startswith("list") else el.path
                elements.append((path, el.value, el.timestamp, el.ttl, el.deleted))
            cells[name] = complex_cell(
                col, None if cell.deletion is None else cell.deletion.marked_for_delete_at,
                elements)
        else:
            col = next(c for c in table.regular + [table.static] if c and c.name == name)
            cells[name] = ("cell", None if cell.value is None else col.kind.norm(cell.value),
                           cell.timestamp, cell.ttl, cell.deleted)

    def bound(b):
        return None if b is None else (table.norm_key(table.ck, dict(b.clustering)), b.inclusive)

    return ev(e.kind.name, table.norm_key(table.pk, dict(e.partition_key)),
              table.norm_key(table.ck, dict(e.clustering)), static=e.is_static,
              liveness=None if e.liveness is None else (e.liveness.timestamp, e.liveness.ttl),
              deletion=None if e.deletion is None else e.deletion.marked_for_delete_at,
              cells=cells, start=bound(e.range_start), end=bound(e.range_end))


# --- strategies ------------------------------------------------------------------------------

@st.composite
def tables(draw, name: str) -> Table:
    kinds = list(SIMPLE.values())
    pk = [Column(f"pk{i}", draw(st.sampled_from(kinds)))
          for i in range(draw(st.integers(1, 2)))]
    ck = [Column(f"ck{i}", draw(st.sampled_from(kinds)), desc=draw(st.booleans()))
          for i in range(draw(st.integers(0, 2)))]
    regular = [Column(f"c{i}", draw(st.sampled_from(kinds)))
               for i in range(draw(st.integers(1, 4)))]
    static = Column("s", draw(st.sampled_from(kinds))) if ck and draw(st.booleans()) else None
    coll = None
    if draw(st.booleans()):
        coll = Column("coll", None, coll=draw(st.sampled_from(sorted(COLLECTIONS))))
    return Table(name, pk, ck, regular, static, coll)


def _coll_value(draw, col: Column, min_size=0):
    element = COLLECTIONS[col.coll]
    if col.coll.startswith("list"):
        return draw(st.lists(element, min_size=min_size, max_size=3))
    if col.coll.startswith("set"):
        return draw(st.sets(element, min_size=min_size, max_size=3))
    return dict(draw(st.lists(element, min_size=min_size, max_size=3,
                              unique_by=lambda kv: kv[0])))


def _where(cols: list[Column], values: dict) -> tuple[str, list]:
    return " AND ".join(f"{c.name} = ?" for c in cols), [values[c.name] for c in cols]


def _using(ts: int, ttl: int) -> str:
    return f"USING TIMESTAMP {ts}" + (f" AND TTL {ttl}" if ttl else "")


@st.composite
def statements(draw, table: Table, plain: str, pks: list[dict], cks: list[dict],
               version: int = 7) -> Statement:
    # Out of order: any statement may be older than the previous ones; now and then far from
    # the EncodingStats epoch (2015), before 1970 included (deltas that wrap).
    ts = draw(st.integers(BASE_TS - 10**9, BASE_TS + 10**9) | st.integers(-(2**62), 2**62))
    # The longest TTL (20 years) expires after 2038: only messaging 13 (v8) may write it.
    ttl = draw(st.sampled_from([0, 0, 0, 1000, 86400 * 30] + [MAX_TTL] * (version == 8)))
    pkv = draw(st.sampled_from(pks))
    ckv = draw(st.sampled_from(cks)) if table.ck else {}
    key = {**pkv, **ckv}
    npk, nck = table.norm_key(table.pk, pkv), table.norm_key(table.ck, ckv)
    choices = ["insert", "update", "delete_cells", "delete_partition", "batch", "plain"]
    if table.ck:
        choices += ["delete_row", "delete_range"]
    if table.static:
        choices += ["static_only"]
    op = draw(st.sampled_from(choices))
    where_all, key_params = _where(table.pk + table.ck, key)
    where_pk, pk_params = _where(table.pk, pkv)
    t = table.name

    if op == "insert":
        cols = draw(st.lists(st.sampled_from(table.regular), unique_by=lambda c: c.name))
        values = {c.name: draw(st.none() | c.kind.values) for c in cols}
        cells = {c.name: simple_cell(c, values[c.name], ts, ttl) for c in cols}
        names = [c.name for c in table.pk + table.ck] + [c.name for c in cols]
        params = key_params + [values[c.name] for c in cols]
        expected = []
        if table.coll and draw(st.booleans()):
            value = _coll_value(draw, table.coll)
            names.append(table.coll.name)
            params.append(value)
            cells[table.coll.name] = complex_cell(
                table.coll, ts - 1, coll_elements(table.coll, value, ts, ttl))
        if table.static and draw(st.booleans()):
            value = draw(table.static.kind.values)  # not null: keep the static row non-empty
            names.append(table.static.name)
            params.append(value)
            expected.append(ev("UPSERT", npk, static=True, cells={
                table.static.name: simple_cell(table.static, value, ts, ttl)}))
        expected.append(ev("UPSERT", npk, nck, liveness=(ts, ttl), cells=cells))
        return Statement(f"INSERT INTO {{ks}}.{t} ({', '.join(names)}) VALUES "
                         f"({', '.join('?' * len(names))}) {_using(ts, ttl)}", params, expected)

    if op == "static_only":
        value = draw(st.none() | table.static.kind.values)
        cell = {table.static.name: simple_cell(table.static, value, ts, ttl)}
        if draw(st.booleans()):
            names = [c.name for c in table.pk] + [table.static.name]
            return Statement(f"INSERT INTO {{ks}}.{t} ({', '.join(names)}) VALUES "
                             f"({', '.join('?' * len(names))}) {_using(ts, ttl)}",
                             pk_params + [value], [ev("UPSERT", npk, static=True, cells=cell)])
        if draw(st.booleans()):
            return Statement(f"DELETE {table.static.name} FROM {{ks}}.{t} USING TIMESTAMP {ts} "
                             f"WHERE {where_pk}", pk_params, [ev("UPSERT", npk, static=True, cells={
                                 table.static.name: ("cell", None, ts, 0, True)})])
        return Statement(f"UPDATE {{ks}}.{t} {_using(ts, ttl)} SET {table.static.name} = ? "
                         f"WHERE {where_pk}", [value] + pk_params,
                         [ev("UPSERT", npk, static=True, cells=cell)])

    if op == "update":
        cols = draw(st.lists(st.sampled_from(table.regular), unique_by=lambda c: c.name,
                             min_size=0 if table.coll else 1))
        sets, params, cells = [], [], {}
        for c in cols:
            value = draw(st.none() | c.kind.values)
            sets.append(f"{c.name} = ?")
            params.append(value)
            cells[c.name] = simple_cell(c, value, ts, ttl)
        coll = table.coll
        if coll and (not cols or draw(st.booleans())):
            how = draw(st.sampled_from(["overwrite", "append"] + (
                ["prepend"] if coll.coll.startswith("list") else ["remove"]) + (
                ["element"] if coll.coll.startswith("map") else [])))
            if how == "overwrite":
                value = _coll_value(draw, coll)
                sets.append(f"{coll.name} = ?")
                params.append(value)
                cells[coll.name] = complex_cell(coll, ts - 1, coll_elements(coll, value, ts, ttl))
            elif how in ("append", "prepend"):
                value = _coll_value(draw, coll, min_size=1)
                sets.append(f"{coll.name} = {coll.name} + ?" if how == "append"
                            else f"{coll.name} = ? + {coll.name}")
                params.append(value)
                cells[coll.name] = complex_cell(coll, None, coll_elements(coll, value, ts, ttl))
            elif how == "remove":
                value = _coll_value(draw, coll, min_size=1)
                if coll.coll.startswith("map"):
                    value = set(value)  # map - {keys}
                sets.append(f"{coll.name} = {coll.name} - ?")
                params.append(value)
                cells[coll.name] = complex_cell(
                    coll, None, coll_elements(coll, value, ts, ttl, deleted=True))
            else:  # map element
                k, v = draw(COLLECTIONS[coll.coll])
                sets.append(f"{coll.name}[?] = ?")
                params += [k, v]
                cells[coll.name] = complex_cell(coll, None, [(k, v, ts, ttl, False)])
        return Statement(f"UPDATE {{ks}}.{t} {_using(ts, ttl)} SET {', '.join(sets)} "
                         f"WHERE {where_all}", params + key_params,
                         [ev("UPSERT", npk, nck, cells=cells)])

    if op == "delete_cells":
        candidates = list(table.regular) + ([table.coll] if table.coll else [])
        cols = draw(st.lists(st.sampled_from(candidates), unique_by=lambda c: c.name,
                             min_size=1, max_size=3))
        targets, params, cells = [], [], {}
        for c in cols:
            if c is table.coll:
                if c.coll.startswith("map") and draw(st.booleans()):
                    k = draw(COLLECTIONS[c.coll])[0]
                    targets.append(f"{c.name}[?]")
                    params.append(k)
                    cells[c.name] = complex_cell(c, None, [(k, None, ts, 0, True)])
                else:
                    targets.append(c.name)
                    cells[c.name] = complex_cell(c, ts, [])
            else:
                targets.append(c.name)
                cells[c.name] = ("cell", None, ts, 0, True)
        return Statement(f"DELETE {', '.join(targets)} FROM {{ks}}.{t} USING TIMESTAMP {ts} "
                         f"WHERE {where_all}", params + key_params,
                         [ev("UPSERT", npk, nck, cells=cells)])

    if op == "delete_row":
        return Statement(f"DELETE FROM {{ks}}.{t} USING TIMESTAMP {ts} WHERE {where_all}",
                         key_params, [ev("ROW_DELETE", npk, nck, deletion=ts)])

    if op == "delete_partition":
        return Statement(f"DELETE FROM {{ks}}.{t} USING TIMESTAMP {ts} WHERE {where_pk}",
                         pk_params, [ev("PARTITION_DELETE", npk, deletion=ts)])

    if op == "delete_range":
        return _range_delete(draw, table, ts, pkv, ckv, where_pk, pk_params, npk)

    if op == "plain":  # a write of the non-cdc table alone: no event anywhere
        return Statement(f"INSERT INTO {{ks}}.{plain} ({', '.join(c.name for c in table.pk)}, x)"
                         f" VALUES ({', '.join('?' * len(table.pk))}, 'p') USING TIMESTAMP {ts}",
                         pk_params, [])

    # batch: a cdc statement and a write of the non-cdc table with the same partition key (one
    # mutation, two partition updates), sometimes one more of another partition (batchlog).
    inner = draw(statements(table, plain, [pkv], cks, version).filter(
        lambda s: s.expected and not s.cql.startswith("BEGIN")))
    cols = ", ".join(c.name for c in table.pk)
    marks = ", ".join("?" * len(table.pk))
    parts = [inner.cql, f"INSERT INTO {{ks}}.{plain} ({cols}, x) VALUES ({marks}, 'b') "
             f"USING TIMESTAMP {ts}"]
    params = inner.params + pk_params
    other = [p for p in pks if p != pkv]
    if other and draw(st.booleans()):
        parts.append(f"INSERT INTO {{ks}}.{plain} ({cols}, x) VALUES ({marks}, 'o') "
                     f"USING TIMESTAMP {ts}")
        params += _where(table.pk, other[0])[1]
    return Statement("BEGIN BATCH " + "; ".join(parts) + "; APPLY BATCH", params,
                     inner.expected, note="logged batch")


def _range_delete(draw, table, ts, pkv, ckv, where_pk, pk_params, npk) -> Statement:
    t = table.name
    ops = {">": (False, "lower"), ">=": (True, "lower"), "<": (False, "upper"),
           "<=": (True, "upper")}
    fixed: list = []  # clustering columns restricted by equality
    if len(table.ck) == 2 and draw(st.booleans()):
        fixed = [table.ck[0]]
    col = table.ck[len(fixed)]
    prefix = {c.name: ckv[c.name] for c in fixed}
    nprefix = table.norm_key(table.ck, prefix)
    if len(table.ck) == 2 and not fixed and draw(st.booleans()):
        # ck0 = a: every row under that prefix
        value = ckv[col.name]
        p = table.norm_key(table.ck, {col.name: value})
        return Statement(f"DELETE FROM {{ks}}.{t} USING TIMESTAMP {ts} WHERE {where_pk} AND "
                         f"{col.name} = ?", pk_params + [value],
                         [ev("RANGE_DELETE", npk, p, deletion=ts, start=(p, True), end=(p, True))])
    conds = [f"{c.name} = ?" for c in fixed]
    params = pk_params + [prefix[c.name] for c in fixed]
    # lower/upper: (normalized bound prefix, inclusive), in the column's VALUE order
    lower = upper = (nprefix, True)
    a = draw(col.kind.values)
    b = draw(col.kind.values)
    if col.kind.ordered and a != b and draw(st.booleans()):
        a, b = sorted((a, b))
        lo, hi = draw(st.sampled_from([">", ">="])), draw(st.sampled_from(["<", "<="]))
        conds += [f"{col.name} {lo} ?", f"{col.name} {hi} ?"]
        params += [a, b]
        lower = (table.norm_key(table.ck, {**prefix, col.name: a}), ops[lo][0])
        upper = (table.norm_key(table.ck, {**prefix, col.name: b}), ops[hi][0])
    else:
        op = draw(st.sampled_from(sorted(ops)))
        conds.append(f"{col.name} {op} ?")
        params.append(a)
        bound = (table.norm_key(table.ck, {**prefix, col.name: a}), ops[op][0])
        if ops[op][1] == "lower":
            lower = bound
        else:
            upper = bound
    # A DESC column's values run backwards in clustering order: the range's start is the upper.
    start, end = (upper, lower) if col.desc else (lower, upper)
    return Statement(f"DELETE FROM {{ks}}.{t} USING TIMESTAMP {ts} WHERE {where_pk} AND "
                     + " AND ".join(conds), params,
                     [ev("RANGE_DELETE", npk, nprefix, deletion=ts, start=start, end=end)])


@st.composite
def plans(draw, name: str, version: int) -> tuple[Table, list[Statement]]:
    table = draw(tables(name))
    pks = draw(st.lists(st.fixed_dictionaries({c.name: _nonempty(c.kind) for c in table.pk}),
                        min_size=1, max_size=2, unique_by=lambda d: repr(table.norm_key(
                            table.pk, d))))
    cks = [{}]
    if table.ck:
        cks = draw(st.lists(st.fixed_dictionaries({c.name: c.kind.values for c in table.ck}),
                            min_size=1, max_size=3))
    stmts = draw(st.lists(statements(table, f"{name}_plain", pks, cks, version), min_size=3,
                          max_size=10))
    return table, stmts


# --- the test --------------------------------------------------------------------------------

@pytest.fixture(params=[7, 8], ids=["commitlog-v7", "commitlog-v8"])
def capture(request, cassandra_clusters, cassandra_keyspace):
    version = request.param
    sess, keyspace = cassandra_keyspace(version)
    yield CdcCapture(sess, keyspace, cassandra_clusters[version].cdc_raw_dirs[0],
                     version=version)
    # Dozens of tables: give the drop more than the driver's default 10 s (conftest's own
    # DROP KEYSPACE IF EXISTS then finds nothing to do).
    sess.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=180)


def _check_local_times(events: list[ChangeEvent], began: float, ended: float) -> list[str]:
    """Local deletion/expiration times are the node's clock: now (+ TTL), within a margin."""
    problems = []
    lo, hi = int(began) - 120, int(ended) + 120

    def near(value, ttl, what):
        if value is None or not lo + ttl <= value <= hi + ttl:
            problems.append(f"{what}: local time {value} not within [{lo}, {hi}] + {ttl}")

    for e in events:
        if e.deletion is not None:
            near(e.deletion.local_deletion_time, 0, f"{e} deletion")
        if e.liveness is not None and e.liveness.ttl:
            near(e.liveness.local_expiration_time, e.liveness.ttl, f"{e} liveness")
        elif e.liveness is not None and e.liveness.local_expiration_time is not None:
            problems.append(f"{e}: liveness without TTL but with an expiration time")
        for name, cell in e.cells.items():
            parts = cell.elements if isinstance(cell, ComplexCell) else [cell]
            if isinstance(cell, ComplexCell) and cell.deletion is not None:
                near(cell.deletion.local_deletion_time, 0, f"{e} {name} deletion")
            for c in parts:
                if c.deleted or c.ttl:
                    near(c.local_deletion_time, c.ttl, f"{e} {name}")
                elif c.local_deletion_time is not None:
                    problems.append(f"{e} {name}: live cell with local time")
    return problems


counter = iter(range(10**6))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: each try is ~3 s
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_random_workloads_decode_to_what_the_statements_wrote(capture, data):
    name = f"t{next(counter)}"
    table, stmts = data.draw(plans(name, capture.version), label="plan")
    sess, ks = capture.sess, capture.keyspace
    sess.execute(table.cql().format(ks=ks))
    plain_cols = ", ".join(f"{c.name} {c.kind.name}" for c in table.pk)
    sess.execute(f"CREATE TABLE {ks}.{name}_plain ({plain_cols}, x text, PRIMARY KEY (("
                 f"{', '.join(c.name for c in table.pk)}))) WITH cdc = false")
    prepared = [sess.prepare(s.cql.format(ks=ks)) for s in stmts]

    def workload():
        for statement, p in zip(stmts, prepared, strict=True):
            sess.execute(p, statement.params)

    began = time.time()
    result = capture.run(workload, [name, f"{name}_plain"])
    ended = time.time()

    log = "\n".join(f"  {s.cql} {s.params!r}" for s in stmts)
    context = f"table: {table.cql()}\nstatements:\n{log}"
    assert result.read_errors == [], context
    assert result.errors == [], context
    with_events = [d for d in result.decoded if d.events]
    assert all(e.table == name for d in with_events for e in d.events), context
    expected = [s for s in stmts if s.expected]
    assert len(with_events) == len(expected), (
        f"{len(with_events)} entries with events for {len(expected)} cdc statements\n{context}")
    for statement, decoded in zip(expected, with_events, strict=True):
        got = [view(table, e) for e in decoded.events]
        assert got == statement.expected, f"{statement.cql} {statement.params!r}\n{context}"
        assert [e.seq for e in decoded.events] == list(range(len(decoded.events)))
        assert all(e.keyspace == ks.strip('"') for e in decoded.events)
        for e in decoded.events:  # shown by --hypothesis-show-statistics
            label = e.kind.name + (" static" if e.is_static else "")
            event(f"{label} {statement.note}".strip())
    assert _check_local_times(result.events, began, ended) == [], context


def test_kinds_of_change_are_all_exercised():
    """The strategies can produce every event kind (a guard against a silently narrow oracle)."""
    seen: set[str] = set()
    table = Table("t", [Column("pk0", SIMPLE["int"])], [Column("ck0", SIMPLE["int"], desc=True)],
                  [Column("c0", SIMPLE["text"])], Column("s", SIMPLE["int"]),
                  Column("coll", None, coll="map<text, int>"))

    @settings(max_examples=200, database=None)
    @given(statements(table, "p", [{"pk0": 1}], [{"ck0": 2}]))
    def collect(statement):
        seen.update(e["kind"] for e in statement.expected)
        seen.update("STATIC" for e in statement.expected if e["static"])

    collect()
    assert {k.name for k in ChangeKind} | {"STATIC"} <= seen


@pytest.mark.parametrize("width", [10, 70], ids=["bitmap-subset", "indexed-subset"])
def test_rows_of_one_update_with_different_column_subsets(capture, width):
    """A batch writing several rows of one partition makes one update whose header is the union
    of their columns: each row then says which header columns it has (Columns.serializeSubset:
    a bitmap below 64 columns; above, the missing count then the present or the missing
    indexes, whichever are fewer). The random workloads above never produce that."""
    sess, ks = capture.sess, capture.keyspace
    name = f"wide{width}"
    cols = [f"c{i:02d}" for i in range(width)]
    sess.execute(f"CREATE TABLE {ks}.{name} (id int, ck int, "
                 + ", ".join(f"{c} int" for c in cols) + ", PRIMARY KEY (id, ck)) WITH cdc = true")
    rows = {  # ck -> columns it sets: all but a few, a few, more than half
        0: cols[: width - 3], 1: cols[1:4], 2: cols[::3] + cols[1::3], 3: cols[-1:]}
    ts = BASE_TS + width
    parts, params = [], []
    for ck, written in rows.items():
        parts.append(f"UPDATE {ks}.{name} USING TIMESTAMP {ts + ck} SET "
                     + ", ".join(f"{c} = ?" for c in written) + " WHERE id = 1 AND ck = ?")
        params += [cols.index(c) * 1000 + ck for c in written] + [ck]
    statement = sess.prepare("BEGIN UNLOGGED BATCH " + "; ".join(parts) + "; APPLY BATCH")
    result = capture.run(lambda: sess.execute(statement, params), [name])
    assert result.errors == [] and result.read_errors == []
    got = [(e.kind, dict(e.clustering), {n: (c.value, c.timestamp) for n, c in e.cells.items()})
           for e in result.events]
    assert got == [(ChangeKind.UPSERT, {"ck": ck}, {c: (cols.index(c) * 1000 + ck, ts + ck)
                                                    for c in written})
                   for ck, written in rows.items()]
    assert len({e.position for e in result.events}) == 1  # one entry, one partition update


def test_same_change_has_the_same_digest_however_the_update_is_packaged(capture):
    """events.py: the digest covers the change's content and timestamps, never local deletion
    times nor the update around it (other rows, EncodingStats, header columns), so that replicas
    and hints agree. Here the same row change is written alone, twice (local times differ), and
    inside batches that change the update's header, minimum timestamp and minimum TTL."""
    sess, ks = capture.sess, capture.keyspace
    sess.execute(f"CREATE TABLE {ks}.pkg (id int, ck int, a int, b text, c set<text>, "
                 "s int static, PRIMARY KEY (id, ck)) WITH cdc = true")
    t = BASE_TS
    change = (f"UPDATE {ks}.pkg USING TIMESTAMP {t} AND TTL 5000 "
              "SET a = 1, b = 'x', c = c + {'e'} WHERE id = 1 AND ck = 1")
    packagings = {
        "alone": change,
        "batch: older row and a static": (
            f"BEGIN UNLOGGED BATCH {change}; "
            f"UPDATE {ks}.pkg USING TIMESTAMP {t - 10**9} AND TTL 7 SET b = 'y' "
            "WHERE id = 1 AND ck = 0; "
            f"UPDATE {ks}.pkg USING TIMESTAMP {t - 5} SET s = 3 WHERE id = 1; APPLY BATCH"),
        "batch: newer insert": (
            f"BEGIN UNLOGGED BATCH {change}; "
            f"INSERT INTO {ks}.pkg (id, ck, a) VALUES (1, 2, 5) USING TIMESTAMP {t + 10**9}; "
            "APPLY BATCH"),
    }
    digests: dict[str, bytes] = {}
    others: list[bytes] = []
    for label, cql in [*packagings.items(), ("alone again", change)]:
        if label == "alone again":
            time.sleep(1.1)  # another local deletion time for the expiring cells
        result = capture.run(lambda cql=cql: sess.execute(cql), ["pkg"])
        assert result.errors == [] and result.read_errors == []
        ours = [e for e in result.events if dict(e.clustering) == {"ck": 1}]
        assert len(ours) == 1, (label, result.events)
        cells = ours[0].cells
        assert cells["a"].value == 1 and cells["a"].ttl == 5000 and cells["b"].value == "x"
        digests[label] = ours[0].digest
        others += [e.digest for e in result.events if e is not ours[0]]
    assert len(set(digests.values())) == 1, digests
    assert digests["alone"] not in others and len(set(others)) == len(others)


def test_entries_written_before_a_column_drop_decode_the_same_after_it(capture):
    """mutation.py: cells of a dropped column are still reported (from dropped_columns), so what
    an entry decodes to does not depend on when it is decoded: same events, same digests."""
    sess, ks = capture.sess, capture.keyspace
    sess.execute(f"CREATE TABLE {ks}.dropt (id int, ck text, keep text, gone bigint, "
                 "gone_set set<text>, gone_map map<int, text>, PRIMARY KEY (id, ck)) "
                 "WITH cdc = true")
    t = BASE_TS
    statements = [
        f"INSERT INTO {ks}.dropt (id, ck, keep, gone, gone_set, gone_map) VALUES "
        f"(1, 'a', 'k', 42, {{'x', 'y'}}, {{7: 'seven'}}) USING TIMESTAMP {t}",
        f"UPDATE {ks}.dropt USING TIMESTAMP {t + 1} SET gone = 43, gone_set = gone_set - {{'x'}}"
        " WHERE id = 1 AND ck = 'b'",
    ]
    result = capture.run(lambda: [sess.execute(q) for q in statements], ["dropt"])
    before = [d for d in result.decoded if d.events]
    assert len(before) == 2 and result.errors == []
    assert before[0].events[0].cells["gone"].value == 42
    sess.execute(f"ALTER TABLE {ks}.dropt DROP (gone, gone_set, gone_map)")
    after = [d for d in capture.decode(result.entries) if d.events]
    assert [d.errors for d in after] == [[], []]
    for b, a in zip(before, after, strict=True):
        assert [(e.digest, dict(e.cells)) for e in a.events] == \
            [(e.digest, dict(e.cells)) for e in b.events]


def test_non_frozen_udt_fields(capture):
    """Non-frozen UDT cells: the path is the field's int16 position, reported by name."""
    sess, ks = capture.sess, capture.keyspace
    sess.execute(f"CREATE TYPE {ks}.addr (street text, zip int, tags frozen<set<text>>)")
    sess.execute(f"CREATE TABLE {ks}.people (id int PRIMARY KEY, a addr) WITH cdc = true")
    t = BASE_TS
    statements = [
        f"INSERT INTO {ks}.people (id, a) VALUES (1, {{street: 'main', zip: 12345, "
        f"tags: {{'x'}}}}) USING TIMESTAMP {t}",
        f"UPDATE {ks}.people USING TIMESTAMP {t + 1} AND TTL 600 SET a.zip = 5 WHERE id = 1",
        f"DELETE a.street FROM {ks}.people USING TIMESTAMP {t + 2} WHERE id = 1",
    ]
    result = capture.run(lambda: [sess.execute(q) for q in statements], ["people"])
    assert result.errors == []
    got = []
    for e in result.events:
        cell = e.cells["a"]
        got.append((None if cell.deletion is None else cell.deletion.marked_for_delete_at,
                    [(el.path, el.value, el.timestamp, el.ttl, el.deleted)
                     for el in cell.elements]))
    assert got == [
        (t - 1, [("street", "main", t, 0, False), ("zip", 12345, t, 0, False),
                 ("tags", {"x"}, t, 0, False)]),
        (None, [("zip", 5, t + 1, 600, False)]),
        (None, [("street", None, t + 2, 0, True)]),
    ]


def test_counter_writes_become_notices_and_their_deletions_events(capture):
    """Counter cells hold per-replica shard contexts, not values: a CounterUpdate notice per
    row, never a ChangeEvent with a made-up value; deleting a counter row is a plain ROW_DELETE."""
    sess, ks = capture.sess, capture.keyspace
    sess.execute(f"CREATE TABLE {ks}.hits (id int, ck int, n counter, m counter, "
                 "PRIMARY KEY (id, ck)) WITH cdc = true")
    began = time.time()
    statements = [
        f"UPDATE {ks}.hits SET n = n + 5, m = m - 1 WHERE id = 1 AND ck = 2",
        f"UPDATE {ks}.hits SET n = n + 1 WHERE id = 1 AND ck = 3",
        f"DELETE FROM {ks}.hits WHERE id = 1 AND ck = 2",
    ]
    result = capture.run(lambda: [sess.execute(q) for q in statements], ["hits"])
    assert result.errors == []
    counters = [c for d in result.decoded for c in d.counters]
    assert [(dict(c.partition_key), dict(c.clustering), sorted(c.columns)) for c in counters] \
        == [({"id": 1}, {"ck": 2}, ["m", "n"]), ({"id": 1}, {"ck": 3}, ["n"])]
    # Counter writes carry the coordinator's clock (USING TIMESTAMP is refused for counters).
    assert all(began - 60 <= c.timestamp / 1e6 <= time.time() + 60 for c in counters)
    assert [(e.kind, dict(e.clustering)) for e in result.events] == [
        (ChangeKind.ROW_DELETE, {"ck": 2})]
