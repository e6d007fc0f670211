"""The database chaos script kills a database of the local stack and brings it back."""

from __future__ import annotations

import pytest

from chaos import kill_databases
from devstack import clickhouse, process


def test_a_database_killed_comes_back_healthy(clickhouse_service):
    """A real SIGKILL of the stack's ClickHouse (another process afterwards, not the same one
    left running), started again and answering queries when the round ends."""
    before = process.tracked("clickhouse")
    assert before is not None
    assert kill_databases.main(["--only", "clickhouse", "--count", "1", "--min", "0", "--max",
                                "0", "--down", "0.5", "--seed", "1"]) == 0
    after = process.tracked("clickhouse")
    assert after is not None and after.pid != before.pid
    client = clickhouse.connect("admin")
    try:
        assert client.command("SELECT 1") == 1
    finally:
        client.close()


def test_a_round_with_nothing_to_kill_does_not_pass(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CDC_STACK_HOME", str(tmp_path))  # a stack where nothing runs
    assert kill_databases.main(["--count", "2", "--min", "0", "--max", "0"]) == 1
    assert "killed nothing in round(s) 1, 2" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "named"), [
    (["--only", "mysql"], "--only: 'mysql' is not a list of postgres, clickhouse, cassandra"),
    (["--down", "-1"], "--down: must be at least 0"),
    (["--count", "0"], "--count: must be at least 1"),
])
def test_bad_options_are_refused_by_name(argv, named, capsys):
    with pytest.raises(SystemExit) as exited:
        kill_databases.main(argv)
    assert exited.value.code == 2
    assert named in capsys.readouterr().err
