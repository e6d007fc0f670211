"""Tokens already seen, so a value is sent to OpenBao once, not with every change of its row.

Row images carry whole rows (docs/adr/0003): every change of a patient re-masks their name,
SSN and record number, and without a cache each costs a transit round trip again. Tokenization
is deterministic (convergent, derived keys: operators/masking/tokenizer.py), so a remembered
token is exactly the token OpenBao would return.

What is kept: per (context, value) a keyed BLAKE2b digest (a random key per process, never
written anywhere) and the token, which is what destinations receive anyway. No plaintext is
kept; the digests cannot be checked against guessed values without the process's key. Bounded:
the least recently used entries go past ``max_entries``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

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
        self._key = os.urandom(32)
        self._tokens: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()  # masking may run on several worker threads

    def __repr__(self) -> str:
        return f"CachedTokenizer({self._inner!r}, max_entries={self._max})"

    def __len__(self) -> int:
        return len(self._tokens)

    def _digest(self, request: TokenRequest) -> bytes:
        context = request.context.encode("utf-8")
        return hashlib.blake2b(len(context).to_bytes(4, "big") + context + request.plaintext,
                               key=self._key, digest_size=16).digest()

    def tokenize(self, requests: Sequence[TokenRequest]) -> list[str]:
        digests = [self._digest(r) for r in requests]
        with self._lock:
            found = [self._tokens.get(d) for d in digests]
            for digest, token in zip(digests, found, strict=True):
                if token is not None:
                    self._tokens.move_to_end(digest)
        missing = {d: r for d, r, token in zip(digests, requests, found, strict=True)
                   if token is None}
        LOOKUPS.labels("hit").inc(len(requests) - sum(1 for t in found if t is None))
        if missing:
            LOOKUPS.labels("miss").inc(len(missing))
            fresh = dict(zip(missing, self._inner.tokenize(list(missing.values())),
                             strict=True))
            with self._lock:
                self._tokens.update(fresh)
                while len(self._tokens) > self._max:
                    self._tokens.popitem(last=False)
                    EVICTIONS.inc()
            found = [token if token is not None else fresh[d]
                     for d, token in zip(digests, found, strict=True)]
        return found  # type: ignore[return-value] - every None was filled above
