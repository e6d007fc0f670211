"""The benchmarks' CPU meter: grouping processes, the arithmetic of an interval, /proc parsing.

The interval tests use made-up samples (the machine is shared: a live process's share of a core
depends on the load); one live test only checks that a real child is found and grouped."""

import os
import subprocess
import sys
import time

import pytest

from benchmarks import cpu_meter
from benchmarks.cpu_meter import ProcessInfo, Sample


def test_machine_busy_seconds_leaves_out_idle_iowait_and_steal():
    tick = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat = "cpu  100 20 30 5000 400 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
    assert cpu_meter.machine_busy_seconds(stat) == (100 + 20 + 30 + 6 + 7) / tick


def test_machine_cores_are_the_cpu_lines_the_busy_time_adds_up():
    stat = ("cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
            "cpu1 1 2 3 4 5 6 7 8 9 10\ncpu12 1 2 3 4 5 6 7 8 9 10\nintr 1 2\nctxt 5\n")
    assert cpu_meter.machine_cores(stat) == 3
    assert cpu_meter.machine_cores() == os.sysconf("SC_NPROCESSORS_ONLN")  # online ones


def test_servers_are_told_by_their_program():
    assert cpu_meter.server_of(b"/usr/lib/postgresql/15/bin/postgres\x00-D\x00/x\x00") == \
        "postgresql"
    assert cpu_meter.server_of(b"postgres: cdc_pipeline cdc 127.0.0.1(5) idle\x00") == \
        "postgresql"
    assert cpu_meter.server_of(b"/usr/bin/java\x00-Xss256k\x00"
                               b"org.apache.cassandra.service.CassandraDaemon\x00") == "cassandra"
    assert cpu_meter.server_of(b"/x/bin/bao\x00server\x00-config=c.hcl\x00") == "openbao"
    assert cpu_meter.server_of(b"/usr/sbin/clickhouse-server\x00--config-file=c\x00") == \
        "clickhouse"
    # Not a server because a path or an argument names one:
    assert cpu_meter.server_of(b"python\x00bench.py\x00--only\x00postgres\x00") is None
    assert cpu_meter.server_of(b"/usr/bin/java\x00-jar\x00other.jar\x00") is None
    assert cpu_meter.server_of(b"/usr/lib/postgresql/15/bin/psql\x00") is None


def test_a_process_belongs_to_its_nearest_named_ancestor_before_its_server():
    java = b"/usr/bin/java\x00org.apache.cassandra.service.CassandraDaemon\x00"
    processes = {
        1: ProcessInfo(0, b"init\x00", 0.0),
        10: ProcessInfo(1, b"python\x00-m\x00bytewax.run\x00", 0.0),  # a named root
        11: ProcessInfo(10, b"python\x00worker\x00", 0.0),
        12: ProcessInfo(11, java, 0.0),  # a server started inside the named tree
        20: ProcessInfo(1, java, 0.0),
        30: ProcessInfo(1, b"python\x00writer\x00", 0.0),
    }
    roots = {10: "pipeline"}
    assert [cpu_meter.group_of(pid, processes, roots) for pid in (10, 11, 12, 20, 30)] == \
        ["pipeline", "pipeline", "pipeline", "cassandra", None]
    # Parent links in a loop (pids reused between readings) end the walk: its own server.
    looping = {5: ProcessInfo(6, java, 0.0), 6: ProcessInfo(5, b"sh\x00", 0.0)}
    assert cpu_meter.group_of(5, looping, {}) == "cassandra"
    assert cpu_meter.group_of(6, looping, {}) is None


def _sample(at: float, busy: float, seconds: dict, groups: dict) -> Sample:
    return Sample(at, busy, seconds, groups)


def test_an_interval_counts_each_process_from_its_first_reading():
    a, b, c, d = (100, 7), (200, 9), (300, 11), (400, 13)
    before = _sample(10.0, 1000.0, {a: 50.0, b: 5.0, c: 1.0, d: 3.0}, {a: "cassandra"})
    after = _sample(12.0, 1003.0,
                    {a: 52.0,  # 1 core over 2 s
                     b: 5.5,  # ungrouped before, grouped now: counted from 5.0, not from 0
                     (300, 99): 0.4,  # pid 300 reused by a new process: counted from zero
                     (500, 2): 0.1},  # born in the interval; d ended in it (goes to other)
                    {a: "cassandra", b: "pipeline", (300, 99): "pipeline", (500, 2): "openbao"})
    usage = cpu_meter.cores(before, after)
    assert usage.seconds == 2.0
    assert usage.cores == pytest.approx({"machine": 1.5, "cassandra": 1.0, "openbao": 0.05,
                                         "pipeline": 0.45, "other": 0.0})
    assert list(usage.cores)[0] == "machine" and list(usage.cores)[-1] == "other"
    assert usage.per_item(1000) == pytest.approx({"machine": 3.0, "cassandra": 2.0,
                                                  "openbao": 0.1, "pipeline": 0.9, "other": 0.0})
    # The machine's busy time that no group accounts for is "other".
    busier = _sample(12.0, 1004.0, after.seconds, after.groups)
    assert cpu_meter.cores(before, busier).cores["other"] == pytest.approx(0.5)


def test_a_live_child_tree_is_found_and_grouped():
    from devstack.process import start_time

    # "; true": the shell must not exec the spinner in its own place.
    spin = (f"{sys.executable} -c 'import time\nend = time.time() + 3\n"
            "while time.time() < end: pass'; true")
    shell = subprocess.Popen(["/bin/sh", "-c", spin])
    try:
        meter = cpu_meter.Meter(lambda: {"spinner": [shell.pid]})
        time.sleep(0.3)  # the child exists
        meter.start()
        time.sleep(0.5)
        usage = meter.stop()
        outside = cpu_meter.sample()
        started = start_time(shell.pid)  # as devstack reads it, while the shell runs
    finally:
        shell.wait(timeout=10)
    assert 0.0 < usage.cores["spinner"] <= 1.1  # a share of one core, whatever the load
    assert usage.cores["machine"] >= usage.cores["spinner"] - 0.05
    assert "spinner" not in outside.groups.values()  # without the tree named: no group
    assert any(pid == shell.pid for pid, _ in outside.seconds)
    # The process is known by its pid and its start time.
    assert started is not None and (shell.pid, int(started)) in outside.seconds
    assert cpu_meter.describe(usage).startswith(
        f"machine {usage.cores['machine']:.2f} of {cpu_meter.machine_cores()} cores busy: ")


def test_resident_memory_of_a_tree_holds_its_children():
    # "; true": the shell must not exec the child in its own place.
    hold = (f"{sys.executable} -c 'import time\nblock = bytearray(64 * 2**20)\n"
            "time.sleep(3)'; true")
    shell = subprocess.Popen(["/bin/sh", "-c", hold])
    try:
        time.sleep(1.0)  # the child holds its 64 MiB
        tree = cpu_meter.rss_mib([shell.pid])
    finally:
        shell.wait(timeout=10)
    assert 64 <= tree < 64 + 100  # the child's block under the shell's tree, no more
    assert cpu_meter.rss_mib([]) == 0
