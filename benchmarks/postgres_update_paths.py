"""Every server-side way we know to write newer versions of N stored rows into PostgreSQL, with
a version guard, next to a raw COPY of the same rows into an empty table (the raw path of
benchmarks/sink_vs_raw.py).

    python benchmarks/postgres_update_paths.py [--rows 10000] [--repeat 8] [--fillfactor 100]

What it answers: whether ANY client can write newer versions of stored rows at 50% of COPY
(issue 5's target for the sink's "newer" case), so none of the sink's Python runs here: every
path's rows are built before the clock starts, and each timing holds only getting those rows
to the server and applying them, in one transaction, commit included.

Paths (each writes version v+1 over all N stored rows at version v; the stored table is
vacuumed, untimed, before each, so every path starts from the same state):
- stage + merge: binary COPY into a temporary table, then MERGE ... WHEN MATCHED AND
  version <= (the sink's own statement, connectors/postgres/_apply.py: what it runs on 15+);
- stage + on conflict: the same stage, then INSERT ... ON CONFLICT DO UPDATE WHERE version <=
  (the sink's fallback, and the TimescaleDB sink's);
- merge alone: the same MERGE with the stage filled untimed (not a way to write: the floor of
  the two above, the server's update work by itself);
- delete + copy: the keys and versions bound as arrays, one statement deleting the stored
  rows at a version <= the new one (and reading the keys whose stored version is higher),
  then binary COPY of the rest straight into the table;
- merge from arrays: MERGE USING unnest() of every column bound as an array (no stage).
The raw COPY is timed right before each path; ratios are per pair, then the median.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script: the repository root (for `benchmarks.`) is not on the path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collections.abc import Callable

from psycopg import sql

from benchmarks import sink_bench
from benchmarks.sink_bench import TABLE, load_average, postgres_sink_part, upserts
from benchmarks.sink_vs_raw import NAMES, Timed, copy_rows, postgres_types, raw_values
from connectors.postgres._apply import upsert_statement

PATHS = ("stage + merge", "stage + on conflict", "merge alone", "delete + copy",
         "merge from arrays")
_KEYS = 2  # (tenant, id): the first two of NAMES


class _Paths:
    """The timed paths over one connection, TABLE (qualified, quoted) holding the stored rows."""

    def __init__(self, conn, table: sql.Composable, types: list[str]) -> None:
        self.conn, self.table, self.types = conn, table, types
        self.stage = sql.Identifier("bench_update_stage")
        conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} AS SELECT {} FROM {}"
                             " WITH NO DATA").format(
            self.stage, sql.SQL(", ").join(map(sql.Identifier, NAMES)), table))

    def _upsert(self, merge: bool) -> sql.Composed:
        return upsert_statement(self.table, self.stage, NAMES[:_KEYS], NAMES[_KEYS:],
                                merge=merge)

    def prepare(self, path: str, rows: list[tuple]) -> Callable[[], None]:
        """What to time for PATH writing ROWS; anything untimed is done here."""
        conn = self.conn
        conn.execute(sql.SQL("TRUNCATE {}").format(self.stage))
        conn.commit()
        if path == "merge alone":
            copy_rows(conn, self.stage, rows, self.types)
            conn.commit()
            return lambda: conn.execute(self._upsert(merge=True))
        if path in ("stage + merge", "stage + on conflict"):
            def staged() -> None:
                copy_rows(conn, self.stage, rows, self.types)
                conn.execute(self._upsert(merge=path == "stage + merge"))
            return staged
        if path == "delete + copy":
            return lambda: self._delete_andcopy_rows(rows)
        assert path == "merge from arrays", path
        columns = [list(column) for column in zip(*rows, strict=True)]
        arrays = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(t)) for t in self.types)
        merge = upsert_statement(
            self.table, sql.SQL("(SELECT * FROM unnest({}) AS u ({}))").format(
                arrays, sql.SQL(", ").join(map(sql.Identifier, NAMES))),
            NAMES[:_KEYS], NAMES[_KEYS:], merge=True)
        return lambda: conn.execute(merge, columns, binary=True)

    def _delete_andcopy_rows(self, rows: list[tuple]) -> None:
        keys = sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(sql.Identifier(n))
                                     for n in NAMES[:_KEYS])
        version = sql.Identifier("_cdc_version")
        stale = self.conn.execute(sql.SQL(
            "WITH s AS (SELECT * FROM unnest(%s::text[], %s::int8[], %s::int8[])"
            " AS s ({}, {}, {})),"
            " gone AS (DELETE FROM {} AS t USING s WHERE {} AND t.{} <= s.{} RETURNING 1)"
            " SELECT t.{}, t.{} FROM {} AS t JOIN s ON {} WHERE t.{} > s.{}").format(
            *map(sql.Identifier, NAMES[:_KEYS]), version, self.table, keys, version, version,
            *map(sql.Identifier, NAMES[:_KEYS]), self.table, keys, version, version),
            [[r[0] for r in rows], [r[1] for r in rows], [r[NAMES.index("_cdc_version")]
                                                         for r in rows]],
            binary=True).fetchall()
        kept = set(map(tuple, stale))
        copy_rows(self.conn, self.table,
              [r for r in rows if r[:_KEYS] not in kept] if kept else rows, self.types)


def main() -> None:
    parser = sink_bench.parser(__doc__)
    parser.set_defaults(repeat=8)
    sink_bench.add_fillfactor(parser, "the stored and the raw table's fillfactor (10-100;"
                                      " default: unset, PostgreSQL's 100)")
    args = parser.parse_args()
    sink_bench.check_counts(parser, args)
    sink_bench.check_fillfactor(parser, args.fillfactor)
    print(f"start: load {load_average()}")
    ks, part = postgres_sink_part("bench_paths", args.fillfactor)
    table = sql.SQL("cdc.{}").format(sql.Identifier(f"{ks}__{TABLE}"))
    types, timed = postgres_types(), Timed("postgres")
    try:
        part.write_batch(upserts(ks, args.rows, 1))  # the stored rows, at version 1
        with part._pool.connection() as conn:  # noqa: SLF001 - the benchmark's own partition
            raw_table = sink_bench.make_raw_table(conn, ks, args.fillfactor)
            conn.commit()
            paths = _Paths(conn, table, types)
            raw_rows, version = raw_values(args.rows, 1), 1
            for run in range(args.repeat):
                # Which path goes first turns with each run.
                for path in PATHS[run % len(PATHS):] + PATHS[:run % len(PATHS)]:
                    version += 1
                    rows = raw_values(args.rows, version)
                    action = paths.prepare(path, rows)
                    conn.execute(sql.SQL("TRUNCATE {}").format(raw_table))
                    conn.commit()
                    conn.autocommit = True  # VACUUM runs outside a transaction
                    conn.execute(sql.SQL("VACUUM {}").format(table))
                    conn.autocommit = False

                    def raw() -> None:
                        with conn.transaction():
                            copy_rows(conn, raw_table, raw_rows, types)

                    def write(action=action) -> None:
                        with conn.transaction():
                            action()

                    timed.time("raw", args.rows, raw)
                    timed.time(path, args.rows, write)
            stored = conn.execute(sql.SQL("SELECT count(*), min(_cdc_version) FROM {}")
                                  .format(table)).fetchone()
    finally:
        sink_bench.drop_postgres_bench(part, ks, "bench_paths")
    # Every path wrote every row: the last version written by each run is stored everywhere.
    assert stored == (args.rows, version), f"stored rows (count, lowest version): {stored}"
    print(f"end: load {load_average()}")
    for line in timed.report(args.rows, cases=PATHS, what=""):
        print(line)
    print(sink_bench.raw_copy_note(f"every path writes newer versions of {args.rows} stored"
                                   " rows, rows built before the clock", args.fillfactor))


if __name__ == "__main__":
    main()
