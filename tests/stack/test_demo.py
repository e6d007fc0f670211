"""The README's demo command, end to end on the running stack: every destination catches up
with Cassandra on both demo tables, and nothing goes to dead letters."""

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
