"""Each sink next to its database's raw bulk path, measured in the same run (the issue's target:
every sink at least 50% of its raw path).

    python benchmarks/sink_vs_raw.py [--rows 10000] [--repeat 3] [--only postgres,clickhouse]
                                     [--fillfactor 100]

Per database, per run (interleaved, so both paths see the same machine load):
- raw (timed right before each sink case, so every ratio pairs two neighbouring measurements):
  the same rows (same columns, types and values as the sink writes, bookkeeping columns
  included) loaded the plainest fast way into an empty table of the same definition (PostgreSQL:
  `LIKE ... INCLUDING ALL`, primary key included, and the sink's --fillfactor (the setting
  for update-heavy tables, PostgresSinkSettings.fillfactor); ClickHouse: `AS` the sink's
  table, the same ReplacingMergeTree): PostgreSQL binary COPY, ClickHouse one
  column-oriented insert. Its rows are built before the clock starts, over the sink's own
  connection (same TLS, same role).
- sink new / newer / stale: one `write_batch` of N RowUpserts through a real sink partition, as
  the flow calls it (benchmarks/sink_bench.py): conversion, gathering, the version guard, the
  progress row, in one transaction for PostgreSQL. ClickHouse's progress row is written off
  the data path, at most once a second (connectors/clickhouse/_progress.py), so its inserts
  run beside these timings, as they do beside the flow.

The raw path does less than the sink must: PostgreSQL's COPY neither upserts nor guards versions
(the sink stages the rows and runs INSERT ... ON CONFLICT DO UPDATE WHERE version <=), and
neither raw path converts driver values or records progress. The ratio is sink/raw per pair, then
the median; every figure is printed with os.getloadavg() (the machines are shared).

PostgreSQL also gets two reference lines, "merge alone" and "on conflict alone": right after the
sink's "newer" case, the same rows (one version higher) are staged untimed, and only the
server's version-guarded upsert from the stage is timed, the sink's own statement
(connectors/postgres/_apply.py, upsert_statement): as MERGE ... WHEN MATCHED AND version <= (what
the sink runs on PostgreSQL 15+) and as INSERT ... ON CONFLICT DO UPDATE WHERE version <= (its
fallback, and the TimescaleDB sink's). None of the sink's Python work runs in them: they are
the most a version-guarded write of existing rows reaches on this server, next to the same raw
COPY.

Both get "extraction alone" once per run: a fresh batch of the same N RowUpserts read into
columns (each key and value field by dict.get, versions, sources), nothing converted or checked,
the least Python work any sink taking the flow's row operations does, and the ratio it leaves:
raw / (raw + extraction), the most such a sink reaches even if all its other work were free and
none of its work overlapped the server's (the PostgreSQL sink's streamed COPY does overlap).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script: the repository root (for `benchmarks.`) is not on the path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import datetime
import shlex
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from operator import attrgetter

from benchmarks import cpu_meter, sink_bench
from benchmarks.sink_bench import (
    TABLE,
    check_counts,
    clickhouse_sink_part,
    collector_as_in_the_pipeline,
    load_average,
    postgres_sink_part,
    upserts,
)
from connectors import row_batch
from connectors.clickhouse._layout import CDC_WRITTEN as CH_CDC_WRITTEN
from connectors.postgres._layout import CDC_COLUMNS as PG_CDC_COLUMNS
from connectors.postgres._layout import CDC_WRITTEN

CASES = ("new", "newer", "stale")
TARGET = 0.5


def _load() -> str:
    return f"load {load_average()}"


def raw_values(rows: int, version: int) -> list[tuple]:
    """The sink's values for `upserts(ks, rows, version)`, as the PostgreSQL sink converts them."""
    at = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return [(f"t{i % 50}", i, f"item {i}", i, i * 0.5, at, uuid.UUID(int=i),
             version, False, "n1", 1, i + 1) for i in range(rows)]


class Timed:
    """Per case, the rate of each run and its ratio to the raw rate timed last (just before
    it, in the same run)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rates: dict[str, list[float]] = {}
        self.ratios: dict[str, list[float]] = {}
        self._raw_rate: float | None = None

    def time(self, case: str, rows: int, action: Callable[[], None]) -> float:
        """Time ACTION writing ROWS rows as CASE ("raw": the reference the next are paired
        with); its rows/s."""
        start = time.perf_counter()
        action()
        rate = rows / (time.perf_counter() - start)
        print(f"  {self.name:10s} {case:6s} {rate:>10,.0f} rows/s  ({_load()})", flush=True)
        self.pair(case, rate)
        return rate

    def pair(self, case: str, rate: float) -> None:
        """Record RATE for CASE (timed here, or by another Timed), paired with the last raw."""
        self.rates.setdefault(case, []).append(rate)
        if case == "raw":
            self._raw_rate = rate
        else:
            assert self._raw_rate is not None, "a case timed before its raw path"
            self.ratios.setdefault(case, []).append(rate / self._raw_rate)

    def report(self, rows: int, *, target: bool = True,
               cases: Sequence[str] = CASES, what: str = "sink ") -> list[str]:
        """The summary lines, CASES first, each named WHAT + case; TARGET: whether this raw
        path is the one the target is set against (else the ratios are printed without a
        verdict)."""
        raw = statistics.median(self.rates["raw"])
        lines = [f"{self.name}: raw {raw:,.0f} rows/s (median, {rows} rows/batch)"]
        for case in cases:
            rate = statistics.median(self.rates[case])
            ratio = statistics.median(self.ratios[case])
            verdict = (("; meets" if ratio >= TARGET else "; BELOW")
                       + f" the {TARGET:.0%} target") if target else ""
            lines.append(f"{self.name}: {what}{case:6s} {rate:>10,.0f} rows/s  ratio {ratio:.2f}"
                         f" of raw (median of paired ratios{verdict})")
        for case in sorted(set(self.ratios) - set(cases)):  # references, not the sink
            rate = statistics.median(self.rates[case])
            ratio = statistics.median(self.ratios[case])
            lines.append(f"{self.name}: {case} {rate:>10,.0f} rows/s  ratio {ratio:.2f} of raw"
                         f" (reference: {_REFERENCES[case]})")
            if case == EXTRACTION:
                # Per pair: raw time / (raw time + extraction time).
                ceiling = statistics.median(1 / (1 + 1 / r) for r in self.ratios[case])
                lines.append(f"{self.name}: raw / (raw + extraction): {ceiling:.2f} (median;"
                             " the most a sink reaches if it extracts before the raw path's"
                             " work, not beside it)")
        return lines


EXTRACTION = "extraction alone"
_REFERENCES = {
    "merge alone": "the sink's statement alone, none of its Python work",
    "on conflict alone": "the sink's statement alone, none of its Python work",
    EXTRACTION: "reading the batch's row operations into columns, no conversion or check:"
                " the least Python work of any sink that takes the flow's row operations",
}
_KEY_NAMES, _VALUE_NAMES = ("tenant", "id"), ("name", "qty", "price", "at", "ref")
NAMES = [*_KEY_NAMES, *_VALUE_NAMES, *CDC_WRITTEN]  # what both sinks write, in this order


def postgres_types() -> list[str]:
    """The PostgreSQL types of `NAMES`, in order: the bookkeeping columns' as the sink declares
    them (bigint, boolean, ...)."""
    return ["text", "int8", "text", "int8", "float8", "timestamptz", "uuid",
            *(definition.split()[0] for name, definition in PG_CDC_COLUMNS
              if name in CDC_WRITTEN)]


def _extract(ops: list) -> list[list]:
    """The columns of OPS (RowUpserts of the items table) as they are: key and value fields,
    versions and sources, read by the sinks' own gathering (connectors/row_batch.py)."""
    keys, values = list(map(attrgetter("key"), ops)), list(map(attrgetter("values"), ops))
    return (row_batch._columns(keys, _KEY_NAMES)  # noqa: SLF001 - the sinks' own reading
            + row_batch._columns(values, _VALUE_NAMES)  # noqa: SLF001
            + [list(map(attrgetter("version"), ops)), list(map(attrgetter("source"), ops))])


def _time_extraction(timed: Timed, ks: str, rows: int, version: int) -> None:
    """Time `_extract` over a batch built for it (as fresh in memory as the sink's own)."""
    ops = upserts(ks, rows, version)
    timed.time(EXTRACTION, rows, lambda: _extract(ops))


def postgres_bench(args: argparse.Namespace) -> list[str]:
    from psycopg import sql

    ks, part = postgres_sink_part("bench_raw", args.fillfactor)
    table = sql.Identifier(f"{ks}__{TABLE}")
    names, types = NAMES, postgres_types()
    timed = Timed("postgres")
    try:
        part.write_batch(upserts(ks, 1, 1))  # creates the sink's tables outside the timings
        with part._pool.connection() as conn:  # noqa: SLF001 - the benchmark's own partition
            raw_table = sink_bench.make_raw_table(conn, ks, args.fillfactor)
        rows = raw_values(args.rows, 1)
        for run in range(args.repeat):
            with part._pool.connection() as conn:  # noqa: SLF001
                conn.execute(sql.SQL("TRUNCATE cdc.{}").format(table))
                conn.commit()
            for case, version in (("new", 10 + run * 10), ("newer", 15 + run * 10),
                                  ("stale", 11 + run * 10)):
                with part._pool.connection() as conn:  # noqa: SLF001
                    conn.execute(sql.SQL("TRUNCATE {}").format(raw_table))
                    conn.commit()

                    def raw(conn=conn) -> None:
                        with conn.transaction():
                            copy_rows(conn, raw_table, rows, types)

                    timed.time("raw", args.rows, raw)
                ops = upserts(ks, args.rows, version)
                timed.time(case, args.rows, lambda ops=ops: part.write_batch(ops))
                if case == "new":
                    _time_extraction(timed, ks, args.rows, version)
                if case == "newer":
                    # Alternating which goes first: the second meets the dead row versions
                    # the first left.
                    statements = ("merge", "on conflict")
                    for statement in statements if run % 2 == 0 else statements[::-1]:
                        _upsert_alone(part, timed, args.rows, table, names, types,
                                      raw_values(args.rows, version + 1), statement)
    finally:
        sink_bench.drop_postgres_bench(part, ks, "bench_raw")
    return timed.report(args.rows) + [sink_bench.raw_copy_note(
        "the sink also stages, upserts with a version guard and records progress",
        args.fillfactor)]


def copy_rows(conn, into, rows: list[tuple], types: list[str]) -> None:
    """Binary COPY of ROWS (values in NAMES' order, of TYPES) into INTO (qualified, quoted)."""
    from psycopg import sql

    columns = sql.SQL(", ").join(map(sql.Identifier, NAMES))
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)")
                                        .format(into, columns)) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _upsert_alone(part, timed: Timed, rows: int, table, names: list[str], types: list[str],
                  values: list[tuple], statement: str) -> None:
    """Time the server's version-guarded upsert of VALUES (staged untimed) into TABLE, by
    STATEMENT: "merge" or "on conflict"."""
    from psycopg import sql

    from connectors.postgres._apply import upsert_statement

    columns = sql.SQL(", ").join(map(sql.Identifier, names))
    # The sink's own statement text; only the sink's Python work is left out.
    upsert = upsert_statement(sql.SQL("cdc.{}").format(table), sql.Identifier("bench_stage"),
                              names[:2], names[2:], merge=statement == "merge")
    with part._pool.connection() as conn:  # noqa: SLF001 - the benchmark's own partition
        # A session's temp table keeps its rows across transactions: staged and committed
        # first, so the timing holds the upsert and its commit only, as the raw one holds its
        # COPY and commit.
        conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS bench_stage AS SELECT {} FROM "
                             "cdc.{} WITH NO DATA").format(columns, table))
        conn.execute("TRUNCATE bench_stage")
        with conn.cursor() as cur, cur.copy(sql.SQL(
                "COPY bench_stage ({}) FROM STDIN (FORMAT BINARY)").format(columns)) as copy:
            copy.set_types(types)
            for row in values:
                copy.write_row(row)
        conn.commit()

        def run() -> None:
            with conn.transaction():
                conn.execute(upsert)

        timed.time(f"{statement} alone", rows, run)


def clickhouse_bench(args: argparse.Namespace) -> list[str]:
    from clickhouse_connect.driver.binding import quote_identifier as q

    from devstack import clickhouse

    ks, part = clickhouse_sink_part("bench_raw_{ks}")
    step = f"bench_raw_{ks}"
    admin = clickhouse.connect("admin")
    table = f"{q('cdc')}.{q(f'{ks}__{TABLE}')}"
    raw_table = f"{q('cdc')}.{q(f'{ks}__{TABLE}__raw')}"
    names = NAMES
    types = ["String", "Int64", "Nullable(String)", "Nullable(Int64)", "Nullable(Float64)",
             "Nullable(Int64)", "Nullable(UUID)", *(t for _, t in CH_CDC_WRITTEN)]
    at_ms = int(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).timestamp() * 1000)
    timed = Timed("clickhouse")
    by_rows = Timed("ch-rows")  # the sink against a row-oriented insert
    try:
        part.write_batch(upserts(ks, 1, 1))  # creates the sink's tables outside the timings
        admin.command(f"CREATE TABLE {raw_table} AS {table}")
        n = args.rows
        # The same values as PostgreSQL's raw path, as ClickHouse takes them: timestamps in
        # epoch milliseconds, the deleted flag 0/1. Rows as the driver's default form takes
        # them (text as str); columns with the text already bytes.
        rows = [(*r[:5], at_ms, *r[6:8], int(r[8]), *r[9:]) for r in raw_values(n, 1)]
        columns = [list(column) for column in zip(*rows, strict=True)]
        for text in (names.index("tenant"), names.index("name"),
                     names.index("_cdc_source_node")):
            columns[text] = [value.encode() for value in columns[text]]

        def raw() -> None:
            part._client.insert(raw_table, columns, column_names=names,  # noqa: SLF001
                                column_type_names=types, column_oriented=True)

        def raw_rows() -> None:
            part._client.insert(raw_table, rows, column_names=names,  # noqa: SLF001
                                column_type_names=types)

        for run in range(args.repeat):
            admin.command(f"TRUNCATE TABLE {table}")
            for case, version in (("new", 10 + run * 10), ("newer", 15 + run * 10),
                                  ("stale", 11 + run * 10)):
                # Which raw insert goes first alternates between runs.
                references = ((timed, raw), (by_rows, raw_rows))
                for reference, action in references if run % 2 == 0 else references[::-1]:
                    admin.command(f"TRUNCATE TABLE {raw_table}")
                    reference.time("raw", n, action)
                ops = upserts(ks, args.rows, version)
                rate = timed.time(case, args.rows, lambda ops=ops: part.write_batch(ops))
                by_rows.pair(case, rate)
                if case == "new":
                    _time_extraction(timed, ks, n, version)
    finally:
        for suffix in ("__current", "", "__raw"):
            admin.command(f"DROP TABLE IF EXISTS {q('cdc')}.{q(f'{ks}__{TABLE}{suffix}')}")
        admin.command(f"ALTER TABLE {q('cdc')}.{q('_cdc_progress')} DELETE WHERE"
                      " step_id = %(s)s", parameters={"s": step})
        admin.close()
        part.close()
    return timed.report(args.rows) + by_rows.report(args.rows, target=False) + [
        "clickhouse: raw = one column-oriented insert of the same rows into a table AS the"
        " sink's, text already bytes; the sink also converts, gathers per key and records its"
        " progress (written off the data path, at most once a second)",
        "ch-rows: the same sink runs against a row-oriented insert of the same rows as Python"
        " values (text as str), the driver's default form of a batched insert (no verdict:"
        " the target is set against the column-oriented one above)"]


def main() -> None:
    parser = sink_bench.parser(__doc__)
    parser.add_argument("--only", default="postgres,clickhouse",
                        help="comma-separated: postgres, clickhouse")
    sink_bench.add_fillfactor(parser, "PostgreSQL: the sink's fillfactor (10-100), the raw"
                                      " table's too (default: unset, PostgreSQL's 100)")
    args = parser.parse_args()
    benches = {"postgres": postgres_bench, "clickhouse": clickhouse_bench}
    only = list(dict.fromkeys(name.strip() for name in args.only.split(",") if name.strip()))
    if not only or any(name not in benches for name in only):
        parser.error(f"--only: {args.only!r} is not a list of {', '.join(benches)}")
    check_counts(parser, args)
    if args.fillfactor is not None:
        if "postgres" not in only:
            parser.error("--fillfactor: only for PostgreSQL, and --only leaves it out")
        sink_bench.check_fillfactor(parser, args.fillfactor)
    print(f"$ {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"start: {_load()} ({cpu_meter.machine_cores()} cores); "
          f"{collector_as_in_the_pipeline()}",
          flush=True)
    summary: list[str] = []
    for name in only:
        summary += benches[name](args)
    print(f"end: {_load()}")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
