"""Tokens already seen, so a value is sent to OpenBao once, not with every change of its row.

Row images carry whole rows (docs/adr/0003): every change of a patient re-masks their name,
SSN and record number, and without a cache each costs a transit round trip again. Tokenization
is deterministic (convergent, derived keys: operators/masking/tokenizer.py), so a remembered
token is exactly the token OpenBao would return.

What is kept: per (context, value) a keyed BLAKE2b digest (a random key per process, never
written anywhere) and the token, which is what destinations receive anyway. No plaintext is
kept; the digests cannot be checked against guessed values without the process's key.

Bounded by ``max_entries`` in two generations of plain dicts, each at most half of it (rounded
up; the young one turns old when full, so an even bound holds one entry less): new and used
tokens go into the young one; when it is full it becomes the old one and the old one is
dropped. A token used within the last generation or two stays (nearly least-recently-used),
and memory has a fixed ceiling that is reached early and then held: 20.7 MiB at 100,000 entries
(benchmarks/cache_memory.py). An LRU OrderedDict held 32.3 MiB with a peak of 42.5: a node per
entry, and under constant turnover its table regrows to about five times its entries, a late
step that the RSS benchmark showed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter

from operators.masking.tokenizer import Tokenizer, TokenRequest

__all__ = ["CachedTokenizer"]

LOOKUPS = Counter("cdc_token_cache_lookups", "Token cache lookups by outcome", ["outcome"])
EVICTIONS = Counter("cdc_token_cache_evictions", "Tokens dropped from the cache (full)")


class CachedTokenizer:
    """A `Tokenizer` that asks INNER only for the (context, value) pairs it has not seen."""

    def __init__(self, inner: Tokenizer, *, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._inner = inner
        self._max = max_entries
        # Old holds at most a generation, young fewer: together at most max_entries.
        self._generation = (max_entries + 1) // 2
        self._key = os.urandom(32)
        # Per context, a hasher keyed and fed with the context: a copy of it hashes a value
        # (half the cost of a new keyed hasher). Contexts are the policy's: a handful.
        self._contexts: dict[str, Any] = {}
        self._young: dict[bytes, str] = {}
        self._old: dict[bytes, str] = {}
        self._lock = threading.Lock()  # masking may run on several worker threads

    def __repr__(self) -> str:
        return f"CachedTokenizer({self._inner!r}, max_entries={self._max})"

    def __len__(self) -> int:
        with self._lock:
            return len(self._young) + len(self._old)

    def digests(self) -> list[bytes]:
        """What the cache holds besides tokens (what an audit of it would look at: no
        plaintext)."""
        with self._lock:
            return [*self._young, *self._old]

    def _get(self, digest: bytes) -> str | None:
        """The token of DIGEST, if cached (an old one moves to the young generation)."""
        token = self._young.get(digest)
        if token is None:
            token = self._old.get(digest)
            if token is not None:
                self._put(digest, token)
        return token

    def _put(self, digest: bytes, token: str) -> None:
        """DIGEST's token into the young generation, and out of the old one (two threads that
        both missed a value both put it: once in the cache all the same)."""
        self._old.pop(digest, None)
        self._young[digest] = token
        if len(self._young) >= self._generation:
            EVICTIONS.inc(len(self._old))
            self._old, self._young = self._young, {}

    def _digest(self, request: TokenRequest) -> bytes:
        hasher = self._contexts.get(request.context)
        if hasher is None:
            context = request.context.encode("utf-8")
            hasher = self._contexts[request.context] = hashlib.blake2b(
                len(context).to_bytes(4, "big") + context, key=self._key, digest_size=16)
        hasher = hasher.copy()
        hasher.update(request.plaintext)
        return hasher.digest()

    def tokenize(self, requests: Sequence[TokenRequest]) -> list[str]:
        digests = [self._digest(r) for r in requests]
        with self._lock:
            found = [self._get(d) for d in digests]
        missing = {d: r for d, r, token in zip(digests, requests, found, strict=True)
                   if token is None}
        LOOKUPS.labels("hit").inc(len(requests) - sum(1 for t in found if t is None))
        if missing:
            LOOKUPS.labels("miss").inc(len(missing))
            fresh = dict(zip(missing, self._inner.tokenize(list(missing.values())),
                             strict=True))
            with self._lock:
                for digest, token in fresh.items():
                    self._put(digest, token)
            found = [token if token is not None else fresh[d]
                     for d, token in zip(digests, found, strict=True)]
        return found  # type: ignore[return-value] - every None was filled above
