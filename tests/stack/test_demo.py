"""The README's demo command, end to end on the running stack: every destination catches up
with Cassandra on both demo tables (the counts it prints, and the same keys on every side),
and nothing goes to dead letters."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from devstack.paths import REPO_ROOT


@pytest.mark.slow
def test_the_demo_shows_every_destination_caught_up(
    cassandra_clusters, postgres_service, clickhouse_service, openbao_env
):
    run = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "devstack.demo", "--patients", "60", "--timeout", "120"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = re.findall(r"^rows of (\w+): Cassandra (\d+), (.*?)  \((.*)\)$", run.stdout, re.M)
    assert {table for table, *_ in rows} == {"patients", "vitals"}, run.stdout
    for table, expected, counts, verdict in rows:
        found = dict(re.findall(r"(\w+) (\d+)", counts))
        assert set(found) == ({"PostgreSQL", "ClickHouse", "TimescaleDB"} if table == "vitals"
                              else {"PostgreSQL", "ClickHouse"}), counts
        assert int(expected) > 0 and set(found.values()) == {expected}, (table, counts)
        assert verdict == "caught up"
    assert re.search(r"^dead letters: 0$", run.stdout, re.M), run.stdout
    # Masked: the samples carry tokens and digests, never the demo's names.
    assert "vault:v1:" in run.stdout
    assert not re.search(r"Ana|Okafor|example\.org", run.stdout)
    # And not only the counts it printed: the same rows, key for key, on every side.
    assert _keys_everywhere() == {}


def _keys_everywhere() -> dict[str, object]:
    """Where a destination's keys differ from Cassandra's: {destination table: difference}."""
    from datetime import UTC

    from clickhouse_connect.driver.binding import quote_identifier
    from psycopg import sql

    from devstack import cassandra, clickhouse, postgres
    from devstack.demo import KEYSPACE, TIMESCALE_SCHEMA

    with cassandra.session(7) as sess:
        patients = {r.id for r in sess.execute(f"SELECT id FROM {KEYSPACE}.patients")}
        vitals = {(r.patient, r.taken_at.replace(tzinfo=UTC))
                  for r in sess.execute(f"SELECT patient, taken_at FROM {KEYSPACE}.vitals")}
    found: dict[str, set] = {}
    with postgres.connect(role="admin") as conn:
        for schema, table, columns in (("cdc", "patients", ["id"]),
                                       ("cdc", "vitals", ["patient", "taken_at"]),
                                       (TIMESCALE_SCHEMA, "vitals", ["patient", "taken_at"])):
            rows = conn.execute(sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.Identifier(schema, f"{KEYSPACE}__{table}__current"))).fetchall()
            found[f"{schema}.{table}"] = {r[0] if len(r) == 1 else tuple(r) for r in rows}
    client = clickhouse.connect("admin")
    try:
        found["clickhouse.patients"] = {r[0] for r in client.query(
            f"SELECT id FROM cdc.{quote_identifier(KEYSPACE + '__patients__current')}"
        ).result_rows}
    finally:
        client.close()
    expected = {"cdc.patients": patients, "cdc.vitals": vitals,
                f"{TIMESCALE_SCHEMA}.vitals": vitals, "clickhouse.patients": patients}
    return {name: (len(expected[name] - keys), len(keys - expected[name]))
            for name, keys in found.items() if keys != expected[name]}
