"""The pipeline's collector thresholds make a batch-shaped allocation pattern cost few
collections (dataflows/collector.py), and the entry point applies them."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

from dataflows.collector import THRESHOLDS, tune_collector

REPO = Path(__file__).resolve().parents[2]


def _collections_during_batches() -> int:
    """Collections run while 20 batches of 10,000 row-operation-like objects (an instance
    holding two dicts) are made, each batch alive until the next one replaces it."""
    runs = []

    def count(phase: str, _info: dict) -> None:
        if phase == "start":
            runs.append(1)

    class Op:
        def __init__(self, i: int) -> None:
            self.key = {"id": i}
            self.values = {"name": f"n{i}", "n": i}

    gc.callbacks.append(count)
    try:
        batch: list[Op] = []
        for _ in range(20):
            batch = [Op(i) for i in range(10_000)]
        del batch
    finally:
        gc.callbacks.remove(count)
    return len(runs)


def test_tuned_thresholds_collect_a_batch_stream_far_less_often() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # CPython's defaults
        default = _collections_during_batches()
        assert tune_collector() == (700, 10, 10)
        tuned = _collections_during_batches()
    finally:
        gc.set_threshold(*before)
    assert default > 500  # 600,000 tracked objects at 700 a collection
    assert tuned * 20 < default, (tuned, default)


def test_the_entry_point_tunes_the_collector_before_reading_its_configuration(tmp_path) -> None:
    # A missing configuration stops dataflows.main right after the collector is tuned; the
    # thresholds the process ended with are printed by an exit hook.
    probe = ("import atexit, gc\n"
             "atexit.register(lambda: print('thresholds', gc.get_threshold()))\n"
             "import dataflows.main\n")
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "CDC_PIPELINE_CONFIG": str(tmp_path / "absent.json")},
        check=False)
    assert "configuration error" in result.stderr
    assert f"thresholds {THRESHOLDS}" in result.stdout, result.stdout + result.stderr
