"""The chaos script kills what it is pointed at, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "chaos" / "kill_workers.py"


def test_it_sigkills_a_matching_process_only():
    marker = f"chaos-target-{uuid.uuid4().hex}"
    target = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(60)  # {marker}"],
                              start_new_session=True)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        done = subprocess.run([sys.executable, str(SCRIPT), "--count", "1", "--min", "0",
                               "--max", "0", "--match", marker, "--seed", "1"],
                              capture_output=True, text=True, timeout=30, check=True)
        assert "SIGKILL" in done.stdout
        assert target.wait(timeout=10) == -9
        time.sleep(0.2)
        assert bystander.poll() is None
    finally:
        for proc in (target, bystander):
            proc.kill()
            proc.wait()


def test_a_target_in_the_scripts_own_process_group_takes_nothing_else_with_it():
    """A pipeline started from a script shares the script's process group, and this one's:
    killing the group took down the launcher and the chaos script after the first round. Now
    the target (and what it started) goes, and both rounds run."""
    marker = f"chaos-target-{uuid.uuid4().hex}"
    target = f"{sys.executable} -c 'import time; time.sleep(60)  # {marker}'"
    # The launching shell's own command line holds the marker too: it is an ancestor of the
    # chaos script, never its target.
    script = (f"{target} & {target} & sleep 0.5; "
              f'{sys.executable} "$CHAOS" --count 2 --min 0 --max 0 --match {marker} --seed 1; '
              "echo launcher survived; wait")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          start_new_session=True, check=False,
                          env={**os.environ, "CHAOS": str(SCRIPT)})
    assert "launcher survived" in done.stdout, (done.stdout, done.stderr)
    assert done.stdout.count("SIGKILL pid") == 2, done.stdout


def test_a_run_that_killed_nothing_does_not_pass(tmp_path):
    """A mistyped --match, or a pipeline nobody restarted, printed a line and exited 0."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--count", "2", "--min", "0", "--max",
                           "0", "--match", f"nothing-{uuid.uuid4().hex}"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert "killed nothing in round(s) 1, 2" in done.stderr


def test_options_that_cannot_run_or_would_hit_anything_are_refused():
    for argv, named in ((["--match", ""], "--match: '' would match nearly every process"),
                        (["--match", "py"], "--match: 'py' would match"),
                        (["--count", "0"], "--count: must be at least 1, not 0"),
                        (["--min", "-1"], "need 0 <= min <= max, not -1.0 and 7.0"),
                        (["--min", "5", "--max", "1"], "need 0 <= min <= max")):
        done = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True,
                              text=True, timeout=30, check=False)
        assert done.returncode == 2, argv
        assert named in done.stderr, (argv, done.stderr)


def test_a_pid_that_is_another_process_now_is_left_alone(monkeypatch):
    """The process found is signalled only while its start time is the one read when it was
    found: a PID the kernel handed to another process (the victim exited meanwhile) is not."""
    from chaos import kill_workers
    from devstack.process import start_time

    bystander = subprocess.Popen(["sleep", "60"])
    try:
        reads = iter([start_time(bystander.pid), "another start"])  # found, then reused
        with monkeypatch.context() as patched:
            patched.setattr(kill_workers, "start_time", lambda _pid: next(reads))
            assert kill_workers._kill([bystander.pid]) == []  # noqa: SLF001
        assert bystander.poll() is None
        assert kill_workers._kill([bystander.pid]) == [bystander.pid]  # noqa: SLF001
        assert bystander.wait(timeout=10) == -9
    finally:
        bystander.kill()
        bystander.wait()
