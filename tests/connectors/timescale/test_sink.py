"""TimescaleSink on plain PostgreSQL (no TimescaleDB can be installed here or in CI):
configuration checks, the exact text of the extension statements, when_missing both ways,
and the PostgreSQL sink's upserts, deletes and version guards under it."""

from __future__ import annotations

import datetime
import logging

import pytest

from connectors.cassandra.events import Position
from connectors.postgres import LayoutError, PostgresSink, build_layout
from connectors.timescale import (
    Compression,
    Hypertable,
    TimescaleMissingError,
    TimescaleSettings,
    TimescaleSink,
    check_interval,
    hypertable_of,
    statements,
)
from connectors.timescale import _extension as ext
from connectors.timescale._sink import _missing_message
from operators.row_ops import ClusteringBound, RangeDelete, RowDelete, RowUpsert, Source
from tests.connectors.postgres.conftest import KS, column, rows, schemas

TABLES = schemas([
    column("events", "device", "partition_key", "text", 0),
    column("events", "ts", "clustering", "timestamp", 0, "asc"),
    column("events", "v", "regular", "text"),
    column("events", "n", "regular", "bigint"),
    column("events", "s", "static", "text"),
    column("by_day", "day", "partition_key", "date", 0),
    column("by_day", "id", "clustering", "int", 0, "asc"),
    column("by_day", "v", "regular", "text"),
    column("loose", "id", "partition_key", "int", 0),
    column("loose", "at", "regular", "timestamp"),
    column("seq", "id", "partition_key", "int", 0),
    column("seq", "n", "clustering", "int", 0, "asc"),
])
TIMES = {"shop.events": "ts", "shop.by_day": "day", "shop.loose": "at", "shop.seq": "n"}
T0 = datetime.datetime(2026, 11, 1, 12, 0, 0)  # the driver's naive UTC
UTC0 = T0.replace(tzinfo=datetime.UTC)
_offset = iter(range(1, 10**9))


def src() -> Source:
    return Source("10.0.0.1", Position(1700000000000, next(_offset)))


def up(key: dict, values: dict, version: int) -> RowUpsert:
    return RowUpsert(KS, "events", key, values, version, src())


def layout(table: str, masked: dict | None = None):
    return build_layout(TABLES[(KS, table)], masked)


def sink(settings, timescale: TimescaleSettings) -> TimescaleSink:
    return TimescaleSink(settings, timescale, lambda ks, t: TABLES.get((ks, t)))


def exists(conn, schema: str, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                        (f'"{schema}"."{name}"',)).fetchone()[0]


# --- settings (no I/O) -------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["1 day", "7 days", "1 day 12 hours", "2 WEEKS", "90 minutes",
                                   "1 month", " 3 years ", "500 milliseconds"])
def test_good_intervals(value: str) -> None:
    assert check_interval(value, "x") == value


@pytest.mark.parametrize("value", ["", "7", "7 dayz", "-1 day", "0 days", "0 days 0 hours",
                                   "1.5 days", "1 day; DROP TABLE x", "P7D", 7, None])
def test_bad_intervals_are_refused(value) -> None:
    with pytest.raises(ValueError, match="interval"):
        check_interval(value, "x")


@pytest.mark.parametrize(("kwargs", "word"), [
    ({"time_columns": {}}, "time_columns"),
    ({"time_columns": {"events": "ts"}}, "keyspace.table"),
    ({"time_columns": {"shop.events": ""}}, "column name"),
    ({"time_columns": TIMES, "retention": {"shop.other": "7 days"}}, "no time column"),
    ({"time_columns": TIMES, "retention": {"shop.events": "7 dayz"}}, "retention"),
    ({"time_columns": TIMES, "chunk_intervals": {"shop.events": "0 days"}}, "positive"),
    ({"time_columns": TIMES, "compression": {"shop.events": "7 days"}}, "Compression"),
    ({"time_columns": TIMES, "when_missing": "ignore"}, "when_missing"),
])
def test_settings_are_validated(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        TimescaleSettings(**kwargs)


def test_compression_is_validated() -> None:
    with pytest.raises(ValueError, match="Compression.after"):
        Compression(after="soon")
    with pytest.raises(ValueError, match="tuple of column names"):
        Compression(after="7 days", segment_by="device")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="twice"):
        Compression(after="7 days", segment_by=("device", "device"))
    assert Compression(after="7 days", segment_by=["device"]).segment_by == ("device",)  # type: ignore[arg-type]


# --- a table's configuration (no I/O) ----------------------------------------------------------

def test_hypertable_of_a_table() -> None:
    timescale = TimescaleSettings(
        time_columns=TIMES, compression={"shop.events": Compression(after="7 days",
                                                                    segment_by=("device",))},
        retention={"shop.events": "365 days"}, chunk_intervals={"shop.events": "1 day"})
    assert hypertable_of(layout("events"), timescale) == Hypertable(
        "shop__events", "ts", "1 day", "7 days", ("device",), "365 days")
    assert hypertable_of(layout("by_day"), timescale) == Hypertable(
        "shop__by_day", "day", None, None, (), None)


@pytest.mark.parametrize(("table", "times", "compression", "words"), [
    ("loose", TIMES, None, ["shop.loose", "'at'", "not part of the Cassandra primary key"]),
    ("events", {"shop.events": "when"}, None, ["shop.events", "'when'", "not a column"]),
    ("seq", TIMES, None, ["shop.seq", "'n'", "integer", "timestamp or date"]),
    ("events", {"shop.by_day": "day"}, None, ["shop.events", "no time column configured"]),
    ("events", TIMES, Compression(after="1 day", segment_by=("s",)), ["'s'", "static column"]),
    ("events", TIMES, Compression(after="1 day", segment_by=("x",)), ["'x'", "rows table"]),
])
def test_configuration_errors_name_the_table_and_column(table, times, compression,
                                                        words) -> None:
    timescale = TimescaleSettings(
        time_columns=times,
        compression={f"shop.{table}": compression} if compression else {})
    with pytest.raises(LayoutError) as raised:
        hypertable_of(layout(table), timescale)
    for word in words:
        assert word in str(raised.value)


def test_a_masked_time_column_must_stay_a_time() -> None:
    timescale = TimescaleSettings(time_columns=TIMES)
    with pytest.raises(LayoutError, match="text after masking"):
        hypertable_of(layout("events", {"ts": "text"}), timescale)


# --- the extension statements: exact text (no TimescaleDB here to run them) -------------------

def test_statement_text() -> None:
    table = Hypertable('we"ird', "ts", "1 day", "7 days", ("device", "Zone"), "365 days")
    assert [s.as_string() for s in statements("cdc", table)] == [
        "SELECT create_hypertable('\"cdc\".\"we\"\"ird\"'::regclass,"
        " time_column_name => 'ts'::name, chunk_time_interval => '1 day'::interval,"
        " if_not_exists => TRUE, migrate_data => TRUE)",
        "ALTER TABLE \"cdc\".\"we\"\"ird\" SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = '\"device\", \"Zone\"')",
        # Removed first if changed: an add meeting a policy of other arguments keeps it.
        "SELECT remove_compression_policy('\"cdc\".\"we\"\"ird\"'::regclass, TRUE)"
        " FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
        " AND hypertable_schema = 'cdc' AND hypertable_name = 'we\"ird'"
        " AND CASE WHEN jsonb_typeof(config -> 'compress_after') = 'string'"
        " THEN (config ->> 'compress_after')::interval END IS DISTINCT FROM '7 days'::interval",
        "SELECT add_compression_policy('\"cdc\".\"we\"\"ird\"'::regclass,"
        " compress_after => '7 days'::interval, if_not_exists => TRUE)",
        "SELECT remove_retention_policy('\"cdc\".\"we\"\"ird\"'::regclass, TRUE)"
        " FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
        " AND hypertable_schema = 'cdc' AND hypertable_name = 'we\"ird'"
        " AND CASE WHEN jsonb_typeof(config -> 'drop_after') = 'string'"
        " THEN (config ->> 'drop_after')::interval END IS DISTINCT FROM '365 days'::interval",
        "SELECT add_retention_policy('\"cdc\".\"we\"\"ird\"'::regclass,"
        " drop_after => '365 days'::interval, if_not_exists => TRUE)",
    ]
    plain = Hypertable("t", "day", None, None, (), None)
    assert [s.as_string() for s in statements("s", plain)] == [
        "SELECT create_hypertable('\"s\".\"t\"'::regclass, time_column_name => 'day'::name,"
        " if_not_exists => TRUE, migrate_data => TRUE)"]
    assert ext.enable_compression("s", "t", ()).as_string() == \
        "ALTER TABLE \"s\".\"t\" SET (timescaledb.compress)"
    assert ext.compression_enabled("s", "it's").as_string() == (
        "SELECT compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = 's' AND hypertable_name = 'it''s'")
    assert ext.DETECT.as_string() == (
        "SELECT current_database(),"
        " (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'timescaledb'),"
        " (SELECT default_version FROM pg_catalog.pg_available_extensions"
        " WHERE name = 'timescaledb'),"
        " (SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n"
        " ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb')")
    # The extension's functions are called in its schema, quoted by psycopg.
    assert statements("cdc", plain, 'we"ird')[0].as_string().startswith(
        'SELECT "we""ird"."create_hypertable"(\'"cdc"."t"\'::regclass')


def test_versions_and_missing_messages() -> None:
    assert ext.version_tuple("2.11.2") >= ext.MIN_VERSION_COMPRESSED_UPSERTS
    assert ext.version_tuple("2.10.3") < ext.MIN_VERSION_COMPRESSED_UPSERTS
    assert ext.version_tuple("2.14.0-dev") == (2, 14, 0)
    offered = _missing_message(ext.ExtensionState("cdc", None, "2.17.2"))
    assert "'cdc'" in offered and "CREATE EXTENSION timescaledb" in offered
    absent = _missing_message(ext.ExtensionState("cdc", None, None))
    assert "'cdc'" in absent and "install TimescaleDB" in absent
    assert "shared_preload_libraries" in absent


def test_the_statements_parse_on_postgresql(conn) -> None:
    """PostgreSQL's parser accepts every statement: each fails past parsing (the schema, the
    table or the TimescaleDB function is missing here), never with a syntax error (42601)."""
    table = Hypertable("t", "ts", "1 day", "7 days", ("device",), "365 days")
    for statement in [*statements("s", table), ext.compression_enabled("s", "t")]:
        with pytest.raises(Exception) as raised:  # noqa: B017 - checked just below
            conn.execute(statement)
        assert raised.value.sqlstate in ("42883", "42P01", "3F000"), statement.as_string()


# --- against plain PostgreSQL ------------------------------------------------------------------

def test_sink_is_the_postgres_sink(settings) -> None:
    built = sink(settings, TimescaleSettings(time_columns=TIMES))
    assert isinstance(built, PostgresSink)
    assert built.list_parts() == ["0", "1"]


def test_when_missing_fail_names_the_database_and_creates_nothing(settings, conn) -> None:
    part = sink(settings, TimescaleSettings(time_columns=TIMES)).build_part("ts_out", "0", None)
    try:
        with pytest.raises(TimescaleMissingError) as raised:
            part.write_batch([up({"device": "d", "ts": T0}, {"v": "a", "n": 1}, 10)])
    finally:
        part.close()
    message = str(raised.value)
    assert f"database '{settings.dbname}'" in message
    assert "install TimescaleDB" in message and "when_missing='plain'" in message
    assert not exists(conn, settings.schema, "shop__events")  # rolled back with the hook


def test_a_time_column_outside_the_key_creates_nothing(settings, conn) -> None:
    timescale = TimescaleSettings(time_columns=TIMES, when_missing="plain")
    part = sink(settings, timescale).build_part("ts_out", "0", None)
    try:
        with pytest.raises(LayoutError, match="not part of the Cassandra primary key"):
            part.write_batch([RowUpsert(KS, "loose", {"id": 1}, {"at": T0}, 1, src())])
    finally:
        part.close()
    assert not exists(conn, settings.schema, "shop__loose")


def test_when_missing_plain_warns_and_applies_with_version_guards(settings, conn,
                                                                  caplog) -> None:
    timescale = TimescaleSettings(
        time_columns=TIMES, when_missing="plain", retention={"shop.events": "30 days"},
        compression={"shop.events": Compression(after="7 days", segment_by=("device",))})
    part = sink(settings, timescale).build_part("ts_out", "0", None)
    t1 = T0 + datetime.timedelta(hours=1)
    try:
        with caplog.at_level(logging.WARNING, logger="connectors.timescale._sink"):
            part.write_batch([
                up({"device": "d", "ts": T0}, {"v": "a", "n": 1}, 10),
                up({"device": "d", "ts": t1}, {"v": "b", "n": 2}, 10),
            ])
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        warning = warnings[0]
        assert f"database '{settings.dbname}'" in warning and "plain PostgreSQL table" in warning
        for skipped in ("create_hypertable", "timescaledb.compress_segmentby",
                        "add_compression_policy", "add_retention_policy"):
            assert skipped in warning
        part.write_batch([
            up({"device": "d", "ts": T0}, {"v": "old", "n": 0}, 9),  # older: ignored
            up({"device": "d", "ts": t1}, {"v": "b2", "n": 3}, 11),  # newer: applied
            RowDelete(KS, "events", {"device": "d", "ts": T0}, 12, src()),
        ])
        part.write_batch([up({"device": "d", "ts": T0}, {"v": "zombie", "n": 0}, 11)])
        current = rows(conn, settings.schema, "shop__events__current", "device, ts, v, n",
                       "ts")
        assert current == [("d", UTC0 + datetime.timedelta(hours=1), "b2", 3)]
        stored = rows(conn, settings.schema, "shop__events",
                      "ts, v, _cdc_version, _cdc_deleted", "ts")
        assert stored == [(UTC0, None, 12, True), (UTC0 + datetime.timedelta(hours=1), "b2", 11,
                                                 False)]
        part.write_batch([RangeDelete(KS, "events", {"device": "d"}, ClusteringBound({}, True),
                                      ClusteringBound({}, True), 20, src())])
        assert rows(conn, settings.schema, "shop__events__current") == []
        pk = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary"
            " ORDER BY array_position(i.indkey, a.attnum)",
            (f'"{settings.schema}"."shop__events"',)).fetchall()
        assert [r[0] for r in pk] == ["device", "ts"]  # the hypertable rule would hold
    finally:
        part.close()


def test_making_a_populated_table_a_hypertable_is_not_cut_by_the_statement_timeout(
        settings, monkeypatch) -> None:
    """create_hypertable(migrate_data => TRUE) moves every row of a table written while the
    extension was missing: cut by the sink's statement timeout (300 s), it was retried as
    transient and moved them again, for ever. Here a stand-in create_hypertable takes 2 s
    against a 1 s timeout. It is in a schema of its own, off the role's search path
    (devstack/postgres.py gives it only `cdc`), as the extension's functions may be: they are
    called in the schema the extension is in."""
    import dataclasses
    import uuid

    from devstack import postgres

    functions = f"ts_functions_{uuid.uuid4().hex[:8]}"  # nothing of another run's in the way
    with postgres.connect(role="admin", autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {functions}")
        admin.execute(f'GRANT USAGE ON SCHEMA {functions} TO "{settings.user}"')
        admin.execute(f"CREATE TABLE {functions}.calls (relation text, took interval)")
        admin.execute(f'GRANT INSERT ON {functions}.calls TO "{settings.user}"')
        # Records each call once it has taken its 2 s: the write below succeeding without a
        # row here would mean the call never ran, or never finished.
        admin.execute(
            f"CREATE FUNCTION {functions}.create_hypertable(relation regclass,"
            " time_column_name name, if_not_exists boolean, migrate_data boolean)"
            " RETURNS integer LANGUAGE plpgsql AS $$ DECLARE began timestamptz :="
            " clock_timestamp(); BEGIN PERFORM pg_sleep(2);"
            f" INSERT INTO {functions}.calls VALUES (relation::text,"
            " clock_timestamp() - began); RETURN 1; END $$")
    monkeypatch.setattr(ext, "detect",
                        lambda _conn: ext.ExtensionState("db", "2.14.0", None, functions))
    slow = dataclasses.replace(settings, statement_timeout_ms=1000)
    part = sink(slow, TimescaleSettings(time_columns=TIMES)).build_part("ts_out", "0", None)
    try:
        part.write_batch([up({"device": "d", "ts": T0}, {"v": "a", "n": 1}, 10)])
        with postgres.connect(role="admin") as admin:
            calls = admin.execute(f"SELECT relation, took >= interval '2 s' FROM {functions}"
                                  ".calls").fetchall()
        assert calls == [(f"{settings.schema}.shop__events", True)]
    finally:
        part.close()
        with postgres.connect(role="admin", autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {functions} CASCADE")


def test_a_date_time_column_takes_whole_days_of_chunk_interval_only() -> None:
    """TimescaleDB refuses a sub-day chunk interval for a date column, at the first write;
    refused with the table's other settings, when its layout is made, naming the interval."""
    def of(interval: str):
        return hypertable_of(layout("by_day"), TimescaleSettings(
            time_columns=TIMES, chunk_intervals={"shop.by_day": interval}))

    for interval in ("2 days", "48 hours", "1 week", "1 month", "1 day 24 hours"):
        assert of(interval).chunk_interval == interval
    for interval in ("12 hours", "1 day 12 hours", "36 hours", "1 day 1 second"):
        with pytest.raises(LayoutError, match=rf"shop.by_day: chunk interval '{interval}' is"
                                              " not a whole number of days"):
            of(interval)
    # A timestamp column takes any.
    assert hypertable_of(layout("events"), TimescaleSettings(
        time_columns=TIMES, chunk_intervals={"shop.events": "12 hours"})).chunk_interval \
        == "12 hours"


def test_a_policy_is_replaced_only_when_its_age_changed(conn) -> None:
    """Against stand-ins of TimescaleDB's jobs view and remove function (plain PostgreSQL):
    the remove runs for a changed age, not for the same one written otherwise ("1 week" is
    "7 days"), nor for another table or kind."""
    import uuid

    from devstack import postgres

    at = f"ts_stand_in_{uuid.uuid4().hex[:8]}"  # the extension's schema, as detected
    with postgres.connect(role="admin", autocommit=True) as admin:
        # The view's schema is fixed by name: one a failed run left is dropped first.
        admin.execute("DROP SCHEMA IF EXISTS timescaledb_information CASCADE")
        admin.execute("CREATE SCHEMA timescaledb_information")
        admin.execute(f"CREATE SCHEMA {at}")
        try:
            admin.execute("CREATE TABLE timescaledb_information.jobs (proc_name text,"
                          " hypertable_schema name, hypertable_name name, config jsonb)")
            admin.execute(f"CREATE TABLE {at}.removed (relation regclass)")
            admin.execute(f"CREATE TABLE {at}.events (ts timestamptz)")
            admin.execute(
                f"CREATE FUNCTION {at}.remove_retention_policy(relation regclass, e boolean)"
                f" RETURNS void LANGUAGE sql AS 'INSERT INTO {at}.removed VALUES (relation)'")
            # Another table's policy on an integer time column: a number no interval holds.
            admin.execute("INSERT INTO timescaledb_information.jobs VALUES"
                          f" ('policy_retention', '{at}', 'events',"
                          " '{\"drop_after\": \"7 days\"}'),"
                          f" ('policy_retention', '{at}', 'ticks',"
                          " '{\"drop_after\": 604800000000000}'),"
                          f" ('policy_compression', '{at}', 'events',"
                          " '{\"compress_after\": \"1 day\"}')")
            removed = []
            for age in ("1 week", "7 days", "30 days"):
                admin.execute(f"DELETE FROM {at}.removed")
                admin.execute(ext.remove_changed_policy("retention", at, "events", age, at))
                removed.append(admin.execute(f"SELECT count(*) FROM {at}.removed").fetchone()[0])
            assert removed == [0, 0, 1]
        finally:
            admin.execute("DROP SCHEMA timescaledb_information CASCADE")
            admin.execute(f"DROP SCHEMA {at} CASCADE")
