"""TimescaleSink (on plain PostgreSQL, when_missing="plain") when a table's Cassandra schema
changes: the PostgreSQL sink's in-place evolution, with the table hook run again."""

from __future__ import annotations

from connectors.timescale import TimescaleSettings, TimescaleSink
from operators.row_ops import RowUpsert
from tests.connectors.postgres.conftest import KS, column, rows, schemas
from tests.connectors.timescale.test_sink import T0, UTC0, src


def events(*extra: tuple[str, str]):
    return schemas([
        column("events", "device", "partition_key", "text", 0),
        column("events", "ts", "clustering", "timestamp", 0, "asc"),
        column("events", "v", "regular", "text"),
        *(column("events", name, "regular", cql) for name, cql in extra),
    ])[(KS, "events")]


def test_a_new_column_is_added_to_the_hypertable_in_place(settings, conn) -> None:
    current = {"schema": events()}
    timescale = TimescaleSettings(time_columns={"shop.events": "ts"}, when_missing="plain")
    part = TimescaleSink(settings, timescale, lambda ks, t: current["schema"]).build_part(
        "ts_out", "0", None)
    try:
        part.write_batch([RowUpsert(KS, "events", {"device": "d", "ts": T0}, {"v": "a"}, 1,
                                    src())])
        current["schema"] = events(("reading", "double"))
        part.write_batch([RowUpsert(KS, "events", {"device": "e", "ts": T0},
                                    {"v": "b", "reading": 1.5}, 2, src())])
    finally:
        part.close()
    assert rows(conn, settings.schema, "shop__events__current", "device, ts, v, reading") == [
        ("d", UTC0, "a", None), ("e", UTC0, "b", 1.5)]
