"""PID files that survive crashes safely: a reused PID is never taken for (or killed as) ours."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from devstack import process


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CDC_STACK_HOME", str(tmp_path))
    return tmp_path


def test_start_tracks_and_stop_ends_the_process(home):
    proc = process.start("sleeper", ["sleep", "60"], log_path=home / "sleeper.log")
    assert process.tracked("sleeper") == proc
    assert process.stop("sleeper", timeout=5)
    assert process.tracked("sleeper") is None
    assert not (home / "run" / "sleeper.pid").exists()
    assert process.stop("sleeper") is False


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(home):
    ignore_term = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    )
    stubborn = [sys.executable, "-c", ignore_term]
    process.start("stubborn", stubborn, log_path=home / "stubborn.log")
    time.sleep(0.3)  # let it install its handler
    began = time.monotonic()
    assert process.stop("stubborn", timeout=1)
    assert time.monotonic() - began < 10
    assert process.tracked("stubborn") is None


def test_a_pid_file_naming_another_process_is_stale_and_never_killed(home):
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        # A crash left a PID file whose PID now belongs to someone else (other start time).
        (home / "run").mkdir(exist_ok=True)
        (home / "run" / "ghost.pid").write_text(f"{bystander.pid} 12345\n")
        assert process.tracked("ghost") is None
        assert not (home / "run" / "ghost.pid").exists()
        assert process.kill("ghost") is False
        assert bystander.poll() is None  # still alive
    finally:
        bystander.kill()
        bystander.wait()


def test_kill_is_immediate(home):
    process.start("victim", ["sleep", "60"], log_path=home / "victim.log")
    assert process.kill("victim")
    assert process.tracked("victim") is None


def test_a_port_another_process_holds_is_refused_naming_it(home):
    """Another stack's server on our port would answer with certificates of another CA:
    starting refuses it by name, before anything talks to it."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(process.StackError, match=rf"127\.0\.0\.1:{port} is taken by a process "
                                                     rf"this stack home \({home}\) does not"):
            process.refuse_taken_port("127.0.0.1", port, grace=0.3)
    process.refuse_taken_port("127.0.0.1", port)  # closed again: free


def test_a_port_freed_within_the_grace_is_not_refused(home):
    """Our own server just stopped may hold its socket a moment longer."""
    import socket
    import threading

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    threading.Timer(0.5, held.close).start()
    started = time.monotonic()
    process.refuse_taken_port("127.0.0.1", port, grace=10)
    assert time.monotonic() - started < 5  # as soon as it is free, not the whole grace


def test_a_second_stack_home_refuses_the_running_openbao_s_port(openbao_env, tmp_path,
                                                                  monkeypatch):
    """The test stack's OpenBao holds 127.0.0.1:8200; a stack in another home, started on
    this machine, names the port instead of meeting a server of another CA."""
    from devstack.openbao import OpenBaoService

    monkeypatch.setenv("CDC_STACK_HOME", str(tmp_path))
    with pytest.raises(process.StackError, match=r"127\.0\.0\.1:8200 is taken by a process "
                                                 rf"this stack home \({tmp_path}\) does not"):
        OpenBaoService().start()


def test_what_ran_before_is_kept_and_the_rest_stopped(home):
    """scripts/test stops what it started, not what ran before it: it judged the whole stack
    "already up" when anything healthy ran (the demo's cluster), and then left running every
    service and cluster it had started itself."""
    from devstack import stack

    for name in ("openbao", "cassandra-c7-node1"):
        process.start(name, ["sleep", "60"], log_path=home / f"{name}.log")
    before = process.running()
    assert before == ["cassandra-c7-node1", "openbao"]
    for name in ("postgres", "cassandra-c8-node1"):
        process.start(name, ["sleep", "60"], log_path=home / f"{name}.log")
    stopped: list[str] = []
    stack.stop_all_but(before, report=stopped.append)
    assert stopped == ["cassandra-c8-node1: stopped", "postgres: stopped"]  # Cassandra first
    assert process.running() == before
    stack.stop_all_but([], report=stopped.append)
    assert process.running() == []
