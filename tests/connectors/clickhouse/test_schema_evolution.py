"""The ClickHouse sink (18.16) when a table's Cassandra schema changes under a running
partition (docs/schema-evolution.md): ADD COLUMN on the MergeTree tables, the "__current"
view recreated with the current columns, a dropped column kept and no longer written."""

from __future__ import annotations

from connectors.clickhouse import ClickHouseSink
from tests.connectors.postgres.test_schema_evolution import versions


def test_add_and_drop_evolve_the_destination_in_place(env) -> None:
    v1, v2, v3 = versions("evo", keyspace=env.ks)
    current = {"schema": v1}
    sink = ClickHouseSink(env.settings, lambda ks, t: current["schema"])
    part = sink.build_part(env.step, "0", None)
    other = sink.build_part(env.step, "1", None)  # a second partition meets the change too

    def columns(suffix: str = "") -> dict[str, str]:
        return dict(env.select("SELECT name, type FROM system.columns WHERE database = %(d)s"
                               " AND table = %(t)s",
                               {"d": env.settings.database, "t": f"{env.ks}__evo{suffix}"}))

    try:
        part.write_batch([env.up("evo", {"k": 1, "c": 1}, {"v": "a", "old": "o1"}, 10)])
        other.write_batch([env.up("evo", {"k": 5, "c": 1}, {"v": "e", "old": "o5"}, 10)])
        current["schema"] = v2
        part.write_batch([
            env.up("evo", {"k": 2, "c": 1}, {"v": "b", "old": "o2", "new": 7}, 20),
            env.up("evo", {"k": 2}, {"s": "st"}, 20, static=True)])
        other.write_batch([env.up("evo", {"k": 5, "c": 1}, {"v": "e2", "old": "o5", "new": 5},
                                  20)])
        assert columns()["new"] == "Nullable(Int64)"
        assert env.live("evo", "k, c, s, v, old, new", "k") == [
            (1, 1, None, "a", "o1", None), (2, 1, "st", "b", "o2", 7),
            (5, 1, None, "e2", "o5", 5)]

        current["schema"] = v3
        part.write_batch([env.up("evo", {"k": 3, "c": 1}, {"v": "c", "new": 8, "old": "x"},
                                 30)])
        other.write_batch([env.up("evo", {"k": 5, "c": 1}, {"v": "e3", "new": 6}, 30)])
        assert "old" not in columns("__current") and "old" in columns()
        assert env.live("evo", "k, v, new", "k") == [
            (1, "a", None), (2, "b", 7), (3, "c", 8), (5, "e3", 6)]
        # Kept with its values as of the drop; rows written since (every write is a whole new
        # row version in ClickHouse) hold NULL.
        assert env.final("evo", "k, old", "k") == [(1, "o1"), (2, "o2"), (3, None), (5, None)]
    finally:
        part.close()
        other.close()


def test_a_destination_table_with_another_primary_key_is_refused(env) -> None:
    """A table dropped and created again with another primary key must not write into the
    old destination table: FINAL would merge its rows by the old sort key."""
    import pytest

    from connectors.clickhouse._layout import LayoutError
    from tests.connectors.postgres.test_schema_evolution import rekeyed

    old, new = rekeyed(keyspace=env.ks)
    current = {"schema": old}
    part = ClickHouseSink(env.settings, lambda ks, t: current["schema"]).build_part(
        env.step, "0", None)
    try:
        part.write_batch([env.up("rekey", {"k": 1}, {"c": 1}, 10)])
        current["schema"] = new
        with pytest.raises(LayoutError, match=r"__rekey has the sort key \(k\), the "
                                              r"Cassandra table's primary key is \(c, k\)"):
            part.write_batch([env.up("rekey", {"k": 1, "c": 2}, {}, 20)])
    finally:
        part.close()
