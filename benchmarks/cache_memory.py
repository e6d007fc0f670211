"""Memory of the pipeline's two bounded caches when full, measured with tracemalloc.

    python benchmarks/cache_memory.py [--buckets 64] [--per-bucket 2048] [--tokens 100000]

- dedup (operators/dedup.py): BUCKETS windows filled to PER_BUCKET digests of 16 bytes,
  first-seen times as the flow gives them (whole seconds, one object per second).
- token cache (operators/masking/token_cache.py): max_entries TOKENS, fed 6x TOKENS distinct
  values (constant turnover) with tokens shaped like OpenBao's ("vault:v1:" + 52 characters);
  printed: what it holds at the end and the peak over the run, which also counts one call's
  500 requests and tokens in flight (a bound on the cache, not its own size).
No server is needed; nothing is timed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import gc
import hashlib
import tracemalloc

from operators.dedup import DigestWindow
from operators.masking.token_cache import CachedTokenizer
from operators.masking.tokenizer import TokenRequest

MIB = 2**20


class ShapedTokens:
    """Tokens of OpenBao's length, without OpenBao."""

    def tokenize(self, requests):
        return ["vault:v1:" + hashlib.sha256(r.plaintext).hexdigest()[:52] for r in requests]


def dedup(buckets: int, per_bucket: int) -> tuple[int, float]:
    gc.collect()
    tracemalloc.start()
    windows = [DigestWindow() for _ in range(buckets)]
    now = 1_800_000_000.0  # one second's time, shared as the flow shares it
    for i in range(buckets * per_bucket):
        digest = hashlib.blake2b(i.to_bytes(8, "big"), digest_size=16).digest()
        windows[i % buckets].admit(digest, now, window=600.0, max_size=per_bucket)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return sum(len(w.seen) for w in windows), held / MIB


def tokens(max_entries: int) -> tuple[int, float, float]:
    gc.collect()
    tracemalloc.start()
    cache = CachedTokenizer(ShapedTokens(), max_entries=max_entries)
    for start in range(0, 6 * max_entries, 500):
        cache.tokenize([TokenRequest("ks.t.name", f"value {i}".encode())
                        for i in range(start, start + 500)])
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return len(cache), held / MIB, peak / MIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buckets", type=int, default=64)
    parser.add_argument("--per-bucket", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=100_000)
    args = parser.parse_args()
    count, held = dedup(args.buckets, args.per_bucket)
    print(f"dedup: {count:,} digests hold {held:.1f} MiB ({held * MIB / count:.0f} bytes each)")
    count, held, peak = tokens(args.tokens)
    print(f"token cache: max_entries {args.tokens:,}: {count:,} held at the end, "
          f"{held:.1f} MiB; peak {peak:.1f} MiB ({peak * MIB / args.tokens:.0f} bytes per "
          f"max entry)")


if __name__ == "__main__":
    main()
