"""The garbage collector's thresholds for the pipeline process.

CPython collects its youngest generation after every 700 net allocations of tracked objects
(dicts, lists, tuples, instances), and the older ones after every 10 collections of the one
below. The pipeline allocates 700 such objects in a fraction of every batch (a row operation is
a dataclass, two dicts, a Source and a Position), and whatever of the batch is still alive at a
collection is promoted and traversed again by the older generations' collections. Measured on
the backlog phase of benchmarks/pipeline_throughput.py (100,000 changes, one worker), with
CPython's thresholds: 4,981 young, 453 middle and 41 full collections, 6.4 s of the process's
37 s of CPU. With a young threshold of 50,000 a batch mostly dies before it is ever traversed;
the older thresholds stay CPython's, so reference cycles that outlive a batch are still
collected within about 5 million allocations (see the README's figures for the collections,
CPU and RSS measured with these thresholds).
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 10, 10)
"""(young, middle, old): see gc.set_threshold."""


def tune_collector() -> tuple[int, int, int]:
    """Set THRESHOLDS for this process; returns the thresholds it had."""
    before = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    return before
