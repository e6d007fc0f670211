"""The garbage collector's thresholds for the pipeline process.

CPython collects its youngest generation after every 700 net allocations of tracked objects
(dicts, lists, tuples, instances). The pipeline allocates that many in a fraction of every
batch (a row operation is a dataclass, two dicts, a Source and a Position), and objects that
are still alive at a collection (the rest of the batch in flight) are promoted and traversed
again by the older generations' collections. Measured on the backlog phase of
benchmarks/pipeline_throughput.py (100,000 changes, one worker): 4,981 young, 453 middle and
41 full collections took 6.4 s of the process's 37 s of CPU. With a young threshold of 50,000,
a batch mostly dies before it is ever traversed: 11 collections, 0.8 s, and the peak RSS went
from 125 to 138 MiB. Reference cycles are still collected, later.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 50)
"""(young, middle, old): see gc.set_threshold."""


def tune_collector() -> tuple[int, int, int]:
    """Set THRESHOLDS for this process; returns the thresholds it had."""
    before = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    return before
