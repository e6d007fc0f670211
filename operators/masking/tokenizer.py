"""Deterministic, reversible tokenization through OpenBao transit.

The transit key (devstack: ``cdc-tokenization``) is created with ``convergent_encryption=true``
and ``derived=true``: every request names a context, transit derives a key for that context, and
the nonce is derived from the plaintext, so the same (value, context, key version) encrypts to the
same ciphertext in every process and after every restart. That ciphertext is the token,
``vault:v<N>:<base64(nonce | ciphertext | GCM tag)>``, exactly as transit returns it (about
``9 + 4 * ceil((len + 28) / 3)`` characters for a value of ``len`` bytes).

- Different contexts derive different keys: equal values in two columns get unrelated tokens
  unless the policy gives both columns the same context.
- The key version is pinned per request item (``TransitSettings.key_version``; transit ignores a
  top-level ``key_version`` in batch mode). Rotating the transit key therefore changes nothing
  until the policy moves to the new version, which re-tokenizes everything: do that only with
  a full re-snapshot of the destinations.
- A token is reversible only by a caller whose OpenBao policy allows
  ``update`` on ``transit/decrypt/<key>`` (and who knows the context). The pipeline needs only
  ``transit/encrypt/<key>``; re-identification belongs to a separate, audited role.
- One `tokenize` call costs one round trip per `max_batch_items` distinct (context, value)
  pairs: duplicates inside a call are sent once, and up to `parallel_requests` of those round
  trips are in flight at once (each thread with its own hvac client). OpenBao's listener caps a
  request's JSON at ``max_request_json_strings`` (default 1000) strings, i.e. 199 items: the
  default; a deployment that wants one round trip for bigger micro-batches raises both
  (TransitSettings).

Errors (`TokenizationError`) name the key, the mount and the OpenBao status, never a value or a
token: hvac's own exception text contains the response body, which holds other items' tokens, so
it is never chained.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Protocol

import hvac
import hvac.exceptions

from connectors.secrets import OpenBaoSettings
from operators.masking.errors import TokenizationError
from operators.masking.policy import TransitSettings

__all__ = [
    "OpenBaoTransitTokenizer",
    "TokenRequest",
    "TokenizationError",
    "Tokenizer",
]


class TokenRequest(NamedTuple):
    """One value to tokenize: its context (usually ``keyspace.table.column``) and its bytes."""

    context: str
    plaintext: bytes


class Tokenizer(Protocol):
    """Turns values into deterministic tokens."""

    def tokenize(self, requests: Sequence[TokenRequest]) -> list[str]:
        """One token per request, in order. Equal requests give equal tokens, always; the whole
        sequence is sent as one batch (per `max_batch_items`), never one request per value."""
        ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _describe(error: hvac.exceptions.VaultError, *, item_errors: bool = True) -> str:
    kind = {
        hvac.exceptions.Forbidden: "permission denied",
        hvac.exceptions.InvalidPath: "no such key or mount",
        hvac.exceptions.Unauthorized: "the token is not valid",
        hvac.exceptions.VaultDown: "OpenBao is sealed or down",
        hvac.exceptions.InvalidRequest: "request refused",
    }.get(type(error), type(error).__name__)
    if not item_errors:
        return kind
    # Top-level errors are the server's sentences about the request as a whole.
    for message in error.errors or ():
        kind += f"; {str(message)[:200]}"
        if "exceeded maximum number of strings" in str(message):
            kind += (" (lower tokenize.max_batch_items, or raise the listener's "
                     "max_request_json_strings with it)")
    # Per-item encrypt errors are transit's own sentences ("requested version ... is higher than
    # the latest key version"); results that succeeded carry ciphertexts and are not looked at.
    # (Decrypt errors may quote the ciphertext, so detokenize leaves them out.)
    body = error.json if isinstance(error.json, Mapping) else {}
    results = (body.get("data") or {}).get("batch_results") or []
    messages = sorted({r["error"] for r in results if isinstance(r, Mapping) and r.get("error")})
    if messages:
        kind += ": " + "; ".join(str(message)[:200] for message in messages)
    return kind


class OpenBaoTransitTokenizer:
    """`Tokenizer` on an OpenBao transit key (convergent, derived), with hvac.

    No I/O at construction: clients are made on first use, one per thread, from BAO_ADDR,
    BAO_CACERT and BAO_TOKEN/BAO_TOKEN_FILE (connectors/secrets.py), unless one is given (then
    it serves every request, one at a time). `parallel_requests`: encrypt requests of one
    `tokenize` call in flight at once."""

    def __init__(
        self,
        settings: TransitSettings,
        *,
        client: hvac.Client | None = None,
        environ: Mapping[str, str] = os.environ,
        parallel_requests: int = 4,
    ) -> None:
        if parallel_requests < 1:
            raise ValueError(f"parallel_requests must be >= 1, got {parallel_requests}")
        self.settings = settings
        self._client = client
        self._environ = environ
        self._parallel = 1 if client is not None else parallel_requests
        self._local = threading.local()  # a requests session is not for sharing across threads
        # Made here, not on first use: masking runs on several worker threads at once, and two
        # first uses would each make one. Its threads start only when a call has 2+ chunks.
        self._pool = ThreadPoolExecutor(self._parallel, thread_name_prefix="tokenize")

    def __repr__(self) -> str:
        s = self.settings
        return f"OpenBaoTransitTokenizer({s.mount}/{s.key} v{s.key_version})"

    def _openbao(self) -> hvac.Client:
        if self._client is not None:
            return self._client
        client = getattr(self._local, "client", None)
        if client is None:
            settings = OpenBaoSettings.from_environment(self._environ)
            client = self._local.client = hvac.Client(
                url=settings.address, token=settings.token, verify=settings.ca_cert or True
            )
        return client

    def tokenize(self, requests: Sequence[TokenRequest]) -> list[str]:
        distinct = list(dict.fromkeys(requests))
        step = self.settings.max_batch_items
        chunks = [distinct[start:start + step] for start in range(0, len(distinct), step)]
        if len(chunks) > 1 and self._parallel > 1:
            encrypted = list(self._pool.map(self._encrypt, chunks))
        else:
            encrypted = [self._encrypt(chunk) for chunk in chunks]
        tokens: dict[TokenRequest, str] = {}
        for chunk, found in zip(chunks, encrypted, strict=True):
            tokens.update(zip(chunk, found, strict=True))
        return [tokens[request] for request in requests]

    def _encrypt(self, chunk: Sequence[TokenRequest]) -> list[str]:
        s = self.settings
        batch = [
            {"plaintext": _b64(r.plaintext), "context": _b64(r.context.encode("utf-8")),
             "key_version": s.key_version}
            for r in chunk
        ]
        try:
            response = self._openbao().secrets.transit.encrypt_data(
                name=s.key, batch_input=batch, mount_point=s.mount
            )
        except hvac.exceptions.VaultError as error:
            raise TokenizationError(
                f"transit encrypt with {s.mount}/{s.key} v{s.key_version} failed for a batch of "
                f"{len(chunk)}: {_describe(error)}"
            ) from None
        except OSError as error:  # requests' connection errors are OSErrors
            raise TokenizationError(
                f"transit encrypt with {s.mount}/{s.key}: cannot reach OpenBao "
                f"({type(error).__name__})"
            ) from None
        results = (response.get("data") or {}).get("batch_results") or []
        if len(results) != len(chunk):
            raise TokenizationError(
                f"transit encrypt with {s.mount}/{s.key}: {len(results)} results for "
                f"{len(chunk)} values"
            )
        prefix = f"vault:v{s.key_version}:"
        tokens = []
        for result in results:
            token = result.get("ciphertext")
            if result.get("error") or not isinstance(token, str) or not token.startswith(prefix):
                raise TokenizationError(
                    f"transit encrypt with {s.mount}/{s.key}: a result is not a v{s.key_version} "
                    "ciphertext (is the key convergent and derived?)"
                )
            tokens.append(token)
        return tokens

    def detokenize(self, tokens: Sequence[tuple[str, str]]) -> list[bytes]:
        """(context, token) pairs back to the canonical bytes, in one transit decrypt request.

        For re-identification tooling: works only with a token allowed transit decrypt."""
        if not tokens:
            return []
        s = self.settings
        batch = [
            {"ciphertext": token, "context": _b64(context.encode("utf-8"))}
            for context, token in tokens
        ]
        try:
            response = self._openbao().secrets.transit.decrypt_data(
                name=s.key, batch_input=batch, mount_point=s.mount
            )
        except hvac.exceptions.VaultError as error:
            raise TokenizationError(
                f"transit decrypt with {s.mount}/{s.key} failed for a batch of {len(tokens)}: "
                f"{_describe(error, item_errors=False)}"
            ) from None
        results = (response.get("data") or {}).get("batch_results") or []
        if len(results) != len(tokens) or any("plaintext" not in r for r in results):
            raise TokenizationError(f"transit decrypt with {s.mount}/{s.key}: incomplete results")
        return [base64.b64decode(r["plaintext"]) for r in results]
