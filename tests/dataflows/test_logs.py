"""JSON log lines: parseable, one per record, with the traceback when there is one."""

from __future__ import annotations

import json
import logging

import pytest

from dataflows import logs


def test_records_become_one_json_object_per_line(capsys):
    logs.configure("INFO")
    log = logging.getLogger("cdc.test")
    log.info("deleted consumed segment %s", "CommitLog-7-1.log")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("sink failed")
    logging.getLogger("cassandra.cluster").info("driver chatter is quiet at INFO")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = map(json.loads, lines)
    assert first["level"] == "INFO" and first["logger"] == "cdc.test"
    assert first["msg"] == "deleted consumed segment CommitLog-7-1.log"
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "ERROR" and "RuntimeError: boom" in second["exc"]


def test_configuring_twice_keeps_one_handler(capsys):
    logs.configure("WARNING")
    logs.configure("WARNING")
    logging.getLogger("cdc.test").warning("once")
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_an_unknown_level_is_refused():
    with pytest.raises(ValueError, match="CDC_LOG_LEVEL 'LOUD'"):
        logs.configure("loud")
