"""The benchmarks refuse bad options before they start anything (no server is touched: the
checks come before the stack is asked for), each naming the option."""

import sys

import pytest


def _refused(main, argv: list[str], capsys) -> str:
    old = sys.argv
    sys.argv = ["bench", *argv]
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:
        sys.argv = old
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("argv", "named"), [
    (["--rows", "0"], "--rows: must be at least 1, not 0"),
    (["--repeat", "0"], "--repeat: must be at least 1, not 0"),
    (["--only", "mysql"], "--only: 'mysql' is not a list of postgres, clickhouse"),
    (["--fillfactor", "5"], "--fillfactor: PostgresSinkSettings.fillfactor must be an integer "
                            "within 10..100, not 5"),
    (["--fillfactor", "50", "--only", "clickhouse"], "--fillfactor: only for PostgreSQL"),
])
def test_sink_vs_raw_refuses(argv, named, capsys) -> None:
    from benchmarks.sink_vs_raw import main

    assert named in _refused(main, argv, capsys)


@pytest.mark.parametrize(("argv", "named"), [
    (["--rows", "0"], "--rows: must be at least 1, not 0"),
    (["--fillfactor", "101"], "--fillfactor: PostgresSinkSettings.fillfactor must be an "
                              "integer within 10..100, not 101"),
])
def test_postgres_update_paths_refuses(argv, named, capsys) -> None:
    from benchmarks.postgres_update_paths import main

    assert named in _refused(main, argv, capsys)


@pytest.mark.parametrize(("argv", "named"), [
    (["--repeat", "0"], "--repeat: must be at least 1, not 0"),
    (["--rows", "-3"], "--rows: must be at least 1, not -3"),
])
def test_sink_upserts_refuse(argv, named, capsys) -> None:
    from benchmarks.postgres_sink_upserts import main

    assert named in _refused(main, argv, capsys)


@pytest.mark.parametrize(("argv", "named"), [
    (["--max-records", "50"], "--max-records: must be between 100 and 1000"),
    (["--workers", "2x"], "--workers: '2x' is neither N nor Np"),
    (["--skip-phases", "5"], "--skip-phases: '5' is not a list of phases 1-4"),
    (["--concurrency", "0"], "--concurrency: must be at least 1"),
    (["--latency-rate", "0"], "--latency-rate: must be more than 0"),
    (["--skip-phases", "1,2,4"], "phase 3: give --latency-rate or run phase 1"),
    (["--skip-phases", "1,2,3"], "phase 4: give --rss-rate or run phase 1 or 2"),
])
def test_pipeline_throughput_refuses(argv, named, capsys) -> None:
    from benchmarks.pipeline_throughput import arguments

    assert named in _refused(arguments, argv, capsys)
