"""The masking step's own CPU per operation, without OpenBao: what the pipeline spends in
operators/mask_ops.py and operators/masking/ besides waiting for tokens.

    python benchmarks/masking_cpu.py [--batches 40] [--batch 500] [--top 0]

Batches of RowUpserts of the throughput benchmark's table (benchmarks/cdc_load.py: every row a
new patient, masked with the demo's strategies: first_name, last_name and mrn tokenized, email
HMAC, the rest passed through) go through `mask_operations`, as the flow calls it. Tokens come
from the real token cache (operators/masking/token_cache.py) in front of a stand-in that shapes
tokens like OpenBao's without a round trip, so the figure is the masker's CPU, not OpenBao's
latency (benchmarks/pipeline_throughput.py measures the whole). The HMAC key is random per run.

Printed: microseconds per operation, the best of --repeat passes over the same batches (each
pass with a fresh cache, so every mrn is a miss, as in the pipeline); --top N adds a cProfile
of one pass.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import cProfile
import os
import pstats
import time

from benchmarks import cdc_load
from benchmarks.cache_memory import ShapedTokens
from connectors.cassandra.events import Position
from operators.mask_ops import mask_operations
from operators.masking import Masker, MaskingPolicy
from operators.masking.token_cache import CachedTokenizer
from operators.row_ops import RowUpsert, Source

KEYSPACE, TABLE = "bench", "patients"
VALUE_COLUMNS = ("first_name", "last_name", "email", "mrn", "visits", "weight_kg", "admitted_at")


class _RandomKey:
    def __init__(self) -> None:
        self._key = os.urandom(32).hex()

    def resolve(self, reference: str) -> str:
        return self._key


def _masker() -> Masker:
    policy = MaskingPolicy.from_mapping({
        "version": 1,
        "hmac": {"key": "env:BENCH_UNUSED"},  # resolved by _RandomKey, never read
        "tokenize": {"mount": "transit", "key": "cdc-tokenization"},
        "tables": {KEYSPACE: {TABLE: {"columns": cdc_load.masking_columns()}}},
    })
    return Masker(policy, _RandomKey(), CachedTokenizer(ShapedTokens(), max_entries=100_000))


def _batches(count: int, size: int) -> list[list[RowUpsert]]:
    source = Source("node1", Position(1, 0))
    batches = []
    for b in range(count):
        batch = []
        for seq in range(b * size, (b + 1) * size):
            row = cdc_load.row(seq)
            batch.append(RowUpsert(KEYSPACE, TABLE, {"seq": row[0]},
                                   dict(zip(VALUE_COLUMNS, row[1:], strict=True)), seq, source))
        batches.append(batch)
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--top", type=int, default=0, help="cProfile's top N functions")
    args = parser.parse_args()
    batches = _batches(args.batches, args.batch)
    operations = args.batches * args.batch
    best = float("inf")
    for _ in range(args.repeat):
        masker = _masker()
        began = time.process_time()
        for batch in batches:
            mask_operations(masker, batch)
        best = min(best, time.process_time() - began)
    print(f"masking: {best / operations * 1e6:.1f} us CPU per operation (best of {args.repeat} "
          f"passes over {operations:,} upserts in batches of {args.batch}; 3 tokenized, 1 HMAC, "
          "4 passed-through columns)")
    if args.top:
        masker = _masker()
        profile = cProfile.Profile()
        profile.enable()
        for batch in batches:
            mask_operations(masker, batch)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
