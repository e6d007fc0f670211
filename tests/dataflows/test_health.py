"""Liveness and readiness: what the parts report, and the HTTP endpoints probes call."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from connectors.health import Health
from dataflows.health import serve, serve_from_environment
from devstack.bytewax_cluster import free_ports
from tests.manual_clock import ManualClock


def test_ready_once_every_capture_polled_and_no_destination_in_trouble():
    clock = ManualClock()
    health = Health(stall_after=60, clock=clock)
    assert health.report()[:2] == (True, True)  # nothing owned: ready
    health.trouble("capture n1", "not polled yet")
    health.ok("destination pg/0")
    live, ready, body = health.report()
    assert (live, ready) == (True, False)
    assert body["checks"]["capture n1"] == {"state": "trouble", "seconds_since_report": 0.0,
                                            "detail": "not polled yet"}
    health.beat("capture n1")
    assert health.report()[:2] == (True, True)
    health.trouble("destination pg/0", "unavailable (OperationalError), retrying")
    assert health.report()[:2] == (True, False)  # down: not ready, but alive
    health.ok("destination pg/0")
    clock.now = 61  # no poll for longer than stall_after
    live, ready, body = health.report()
    assert (live, ready) == (True, False) and body["checks"]["capture n1"]["state"] == "stalled"
    health.beat("capture n1")
    health.fatal("destination pg/0", "stopped on RejectedValueError")
    assert health.report()[:2] == (False, False)


def test_a_watched_problem_makes_trouble_until_it_clears():
    health = Health()
    lag = [0.0]
    health.watch("destination pg/0", lambda: f"{lag[0]:.0f} s behind" if lag[0] > 30 else None)
    assert health.report()[:2] == (True, True)
    lag[0] = 45.0
    live, ready, body = health.report()
    assert (live, ready) == (True, False)
    assert body["checks"]["destination pg/0"]["detail"] == "45 s behind"
    health.fatal("destination pg/0", "stopped on RejectedValueError")  # worse stays worse
    assert health.report()[2]["checks"]["destination pg/0"]["state"] == "fatal"
    health.ok("destination pg/0")
    lag[0] = 0.0
    assert health.report()[:2] == (True, True)
    health.watch("destination pg/1", lambda: 1 / 0)  # a probe that fails says so
    assert health.report()[2]["checks"]["destination pg/1"]["detail"] == \
        "cannot tell (ZeroDivisionError)"
    health.forget("destination pg/1")
    assert "destination pg/1" not in health.report()[2]["checks"]


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_endpoints_answer_with_status_and_json():
    health = Health()
    port = free_ports(1)[0]
    server = serve(port, health, host="127.0.0.1")
    try:
        health.beat("capture n1")
        assert _get(port, "/healthz") == (200, {"live": True, "ready": True, "checks": {
            "capture n1": {"state": "ok", "seconds_since_report": 0.0}}})
        health.trouble("destination pg/0", "unavailable (OperationalError), retrying")
        status, body = _get(port, "/readyz")
        assert status == 503 and body["checks"]["destination pg/0"]["state"] == "trouble"
        assert _get(port, "/healthz")[0] == 200
        health.fatal("destination pg/0", "stopped on RejectedValueError")
        assert _get(port, "/healthz")[0] == 503
        assert _get(port, "/metrics")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_the_port_comes_from_the_environment():
    assert serve_from_environment({}) is None
    for bad in ("http", "70000", "0"):
        with pytest.raises(ValueError, match=r"CDC_HEALTH_PORT must be a port number \(1-65535\)"):
            serve_from_environment({"CDC_HEALTH_PORT": bad})
    port = free_ports(1)[0]
    first = serve_from_environment({"CDC_HEALTH_PORT": str(port)})
    try:
        assert first is not None
        assert serve_from_environment({"CDC_HEALTH_PORT": str(port)}) is None  # taken: logged
    finally:
        first.shutdown()
        first.server_close()


def test_not_ready_until_the_flow_builds_its_parts(tmp_path):
    """The entry point reports `startup` in trouble; every worker builds the dead-letter sink
    when the flow starts running (its cluster formed, its recovery loaded), which clears it.
    Before, a process that never formed its cluster answered 200 on /readyz with no checks."""
    from connectors.health import HEALTH
    from dataflows.flow import _StartedDeadLetterSink
    from dataflows.health import STARTUP

    HEALTH.trouble(STARTUP, "the flow has not started yet")
    live, ready, body = HEALTH.report()
    assert live and not ready and body["checks"][STARTUP]["state"] == "trouble"
    _StartedDeadLetterSink(tmp_path / "dlq").build("dead_letter", 0, 1).close()
    assert STARTUP not in HEALTH.report()[2]["checks"]


def test_a_running_flow_clears_startup_without_any_dead_letter(tmp_path):
    """Bytewax builds the dead-letter sink when the flow starts, whether or not anything ever
    reaches it: a flow run for real (no dead letters) clears `startup`."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    from connectors.health import HEALTH
    from dataflows.flow import _StartedDeadLetterSink
    from dataflows.health import STARTUP

    HEALTH.trouble(STARTUP, "the flow has not started yet")
    flow = Dataflow("startup")
    items = op.input("in", flow, TestingSource([1, 2]))
    op.output("dead_letter", op.filter("none", items, lambda _item: False),
              _StartedDeadLetterSink(tmp_path / "dlq"))
    out: list = []
    op.output("out", items, TestingSink(out))
    run_main(flow)
    assert out == [1, 2]
    assert STARTUP not in HEALTH.report()[2]["checks"]
