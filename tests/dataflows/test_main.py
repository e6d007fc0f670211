"""The entry point, dataflows/main.py, as `python -m bytewax.run dataflows.main` imports it:
what it checks before anything runs, and how it answers SIGTERM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "pipeline.example.json"


def _import_main(tmp_path: Path, config: dict, then: str = "") -> subprocess.CompletedProcess:
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [sys.executable, "-c", f"import dataflows.main\n{then}"], cwd=REPO,
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "CDC_PIPELINE_CONFIG": str(path), "CDC_HEALTH_PORT": ""})


def _example(tmp_path: Path) -> dict:
    config = json.loads(EXAMPLE.read_text())
    for key in ("masking_policy", "dead_letter_dir", "spool_dir"):
        config[key] = str((EXAMPLE.parent / config[key]).resolve())
    config["dead_letter_dir"] = str(tmp_path / "dead-letter")
    config["spool_dir"] = str(tmp_path / "spool")
    return config


def test_a_masking_policy_that_does_not_load_stops_the_start_in_one_line(tmp_path) -> None:
    """The policy used to be read when the first change came, so a missing or broken one
    stopped a pipeline that had already started (and looked ready)."""
    config = _example(tmp_path)
    config["masking_policy"] = str(tmp_path / "absent-masking.json")
    result = _import_main(tmp_path, config)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("configuration error:"), result.stderr
    assert "absent-masking.json" in result.stderr and "Traceback" not in result.stderr


def test_sigterm_stops_the_flow_as_ctrl_c_does(tmp_path) -> None:
    """SIGTERM raises KeyboardInterrupt, which Bytewax answers by closing the partitions (the
    spools drain, the last progress is written). Without the handler the process died at once
    (and as PID 1 in a container ignored it until SIGKILL). A second one while they close is
    logged, not raised (a KeyboardInterrupt inside a close aborted the process)."""
    result = _import_main(tmp_path, _example(tmp_path),
                          "import os, signal\n"
                          "try:\n"
                          "    os.kill(os.getpid(), signal.SIGTERM)\n"
                          "except KeyboardInterrupt:\n"
                          "    print('interrupted')\n"
                          "os.kill(os.getpid(), signal.SIGTERM)  # a second: logged only\n"
                          "print('closing on')\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["interrupted", "closing", "on"]
    assert "SIGTERM again" in result.stderr


def test_an_audit_dir_that_cannot_hold_the_trail_stops_the_start_in_one_line(tmp_path) -> None:
    """The audit file was first opened at the first masked batch, so a folder it cannot use
    stopped a running flow with a bare OSError."""
    config = _example(tmp_path)
    (tmp_path / "a-file").write_text("")
    config["audit_dir"] = str(tmp_path / "a-file" / "audit")  # under a file: no folder there
    result = _import_main(tmp_path, config)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("configuration error: pipeline.audit_dir:")
    assert "Traceback" not in result.stderr


def test_a_recovery_store_that_cannot_be_read_stops_the_start_in_one_line(tmp_path) -> None:
    """Read at start (the nodes and ranges it holds state for): a part file SQLite cannot read
    (one half made by `bytewax.recovery`, say) gave a traceback, not a line naming it."""
    store = tmp_path / "recovery"
    store.mkdir()
    (store / "part-0.sqlite3").write_bytes(b"not a database")
    config = _example(tmp_path)
    config["recovery_directory"] = str(store)
    result = _import_main(tmp_path, {**config, "audit_dir": str(tmp_path / "audit")})
    assert result.returncode == 1
    assert result.stderr.strip().startswith("recovery store error:"), result.stderr
    assert "part-0.sqlite3" in result.stderr and "Traceback" not in result.stderr
