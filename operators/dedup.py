"""Drop the replica copies of a change: keyed by partition, remembered by digest, bounded.

Each of the RF replicas (and hints, and a replay after recovery) writes the same change into its
own commit log; the decoder gives every copy the same ``digest`` (events.py). The first copy
goes on, later ones within the window are dropped.

State is kept per *bucket*, not per Cassandra partition: events are keyed by a stable hash of
(table, partition key) into ``buckets`` buckets. Every event of one partition lands in the same
bucket, so the order of a partition's changes is kept for the operators after this one, while
memory is bounded by ``buckets * max_per_bucket`` digests whatever the table's size. Within a
bucket, digests expire after ``window`` (time-bounded) and the oldest go first when the bucket is
full (size-bounded); both evictions are counted. An evicted digest only costs a duplicate
downstream, which the idempotent, version-guarded sinks absorb: eviction can never lose a change.

The state is snapshotted with each epoch for the buckets an epoch touched, so the defaults stay
modest (64 x 2048 digests: 11.7 MiB, 94 bytes each, by benchmarks/cache_memory.py; a dict
and a deque in age order, and first-seen times in whole seconds, one float object per second
shared by every digest seen in it; an OrderedDict with a float per digest held 19.6 MiB); size
them to the copies expected within the window.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta

import bytewax.operators as op
from bytewax.dataflow import Stream
from prometheus_client import Counter

from connectors.cassandra.events import ChangeEvent, CounterUpdate

DUPLICATES = Counter("cdc_dedup_duplicates", "Replica copies of a change dropped")
EVICTIONS = Counter("cdc_dedup_evictions", "Digests forgotten before a copy could match them",
                    ["reason"])
_BY_SIZE, _BY_TIME = EVICTIONS.labels("size"), EVICTIONS.labels("time")


def bucket_of(event: ChangeEvent | CounterUpdate, buckets: int) -> str:
    """A stable bucket for the event's (table, partition key): same in every process and run.

    repr() of the key values is deterministic for every type the decoder produces (ints, str,
    bytes, UUID, Decimal, datetime, driver types) and Python's hash() is not (it is salted)."""
    material = f"{event.table_id}|{tuple(event.partition_key.items())!r}".encode()
    value = int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "big")
    return str(value % buckets)


class DigestWindow:
    """One bucket's recently seen digests: a dict from digest to first-seen time, and the
    digests oldest first in a deque, so the oldest go in constant time (taking a plain dict's
    first key scans past the slots of every key deleted before it; an OrderedDict would add a
    linked-list node per digest). The deque is not part of the state: it is the dict's order."""

    def __init__(self, seen: dict[bytes, float] | None = None) -> None:
        self.seen: dict[bytes, float] = dict(seen or {})
        self._order: deque[bytes] = deque(self.seen)

    def __getstate__(self) -> dict:
        return {"seen": self.seen}

    def __setstate__(self, state: dict) -> None:
        # Also the state of earlier versions: a dataclass whose `seen` was an OrderedDict.
        self.__init__(state["seen"])  # type: ignore[misc]

    def admit(self, digest: bytes, now: float, *, window: float, max_size: int) -> bool:
        """True for a digest not seen within the window (and remember it); False for a copy."""
        seen = self.seen
        self._expire(now - window)
        if digest in seen:
            return False
        seen[digest] = now
        self._order.append(digest)
        while len(seen) > max_size:
            del seen[self._order.popleft()]
            _BY_SIZE.inc()
        return True

    def _expire(self, horizon: float) -> None:
        seen, order = self.seen, self._order
        while order and seen[order[0]] < horizon:
            del seen[order.popleft()]
            _BY_TIME.inc()


class _Seconds:
    """CLOCK's time in whole seconds, the same float object for every call within a second:
    the digests of one second share it instead of holding a float each."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last = float("-inf")

    def __call__(self) -> float:
        now = float(int(self._clock()))
        if now != self._last:
            self._last = now
        return self._last


def deduplicate(
    step_id: str,
    up: Stream,
    *,
    window: timedelta = timedelta(minutes=10),
    max_per_bucket: int = 2048,
    buckets: int = 64,
    clock: Callable[[], float] = time.time,
) -> op.KeyedStream:
    """Changes without their replica copies, keyed by bucket (see the module docstring).

    Counter notices carry no digest and pass through (keyed like the rest, so they stay in
    order with their partition's changes)."""
    if window <= timedelta(0) or max_per_bucket < 1 or buckets < 1:
        raise ValueError("window must be positive, max_per_bucket and buckets at least 1")
    # First-seen times are whole seconds (rounded down): so is the window (rounded up), or a
    # copy less than a second later could fall outside a window of 1.5 s.
    seconds = float(math.ceil(window.total_seconds()))
    clock = _Seconds(clock)
    keyed = op.key_on(f"{step_id}_key", up, lambda event: bucket_of(event, buckets))

    def admit(state: DigestWindow | None, event):
        if not isinstance(event, ChangeEvent):
            return state, [event]
        state = state or DigestWindow()
        if state.admit(event.digest, clock(), window=seconds, max_size=max_per_bucket):
            return state, [event]
        DUPLICATES.inc()
        return state, []

    return op.stateful_flat_map(f"{step_id}_admit", keyed, admit)
