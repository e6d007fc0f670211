"""The benchmarks' CPU meter: a busy process is counted in its group and in the machine."""

import os
import subprocess
import sys
import time

from benchmarks import cpu_meter


def test_machine_busy_seconds_leaves_out_idle_and_iowait():
    tick = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat = "cpu  100 20 30 5000 400 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
    assert cpu_meter.machine_busy_seconds(stat) == (100 + 20 + 30 + 6 + 7 + 8) / tick


def test_a_busy_child_tree_is_counted_in_its_group():
    # A shell whose child spins: the child is in the group through its parent.
    # "; true": the shell must not exec the spinner in its own place.
    spin = (f"{sys.executable} -c 'import time\nend = time.time() + 1.5\n"
            "while time.time() < end: pass'; true")
    shell = subprocess.Popen(["/bin/sh", "-c", spin])
    try:
        meter = cpu_meter.Meter(lambda: {"spinner": [shell.pid]})
        time.sleep(0.2)  # the child exists
        meter.start()
        time.sleep(1.0)
        used = meter.stop()
    finally:
        shell.wait(timeout=10)
    assert 0.5 < used["spinner"] <= 1.1
    assert used["machine"] >= used["spinner"] - 0.05
    assert list(used)[0] == "machine" and list(used)[-1] == "other"
    assert "spinner 0." in cpu_meter.describe(used) or "spinner 1." in cpu_meter.describe(used)


def test_a_process_outside_every_group_is_other():
    spinner = subprocess.Popen([sys.executable, "-c",
                                "import time\nend = time.time() + 1.5\n"
                                "while time.time() < end: pass"])
    try:
        meter = cpu_meter.Meter()
        time.sleep(0.2)
        meter.start()
        time.sleep(1.0)
        used = meter.stop()
    finally:
        spinner.wait(timeout=10)
    assert used["other"] > 0.5
    assert set(used) <= {"machine", "other", *(g for g, _, _ in cpu_meter.SERVERS)}


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
