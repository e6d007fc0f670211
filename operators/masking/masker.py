"""The masking step: a micro-batch of row images of one table in, masked row images out.

`Masker.mask_rows` applies each column's rule (policy.py) to every row, makes one tokenizer
call for the whole batch, reports per-column counts to the audit hook and returns new dicts
(the input rows are not modified). It raises `MaskingError` instead of returning anything
partially masked: a batch is masked completely or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import is_
from typing import Any, Protocol

from operators.masking.errors import MaskingError, TokenizationError
from operators.masking.policy import Basis, ColumnRule, DataClass, MaskingPolicy, Strategy
from operators.masking.strategies import (
    HMAC_MIN_KEY_BYTES,
    Shape,
    hmac_hex,
    rebuild,
    split,
    text_bytes,
    texts_bytes,
)
from operators.masking.tokenizer import Tokenizer, TokenRequest

__all__ = ["AuditHook", "BatchAudit", "ColumnCount", "Masker", "SecretSource"]

log = logging.getLogger(__name__)


class SecretSource(Protocol):
    """Resolves a secret reference (connectors.secrets.SecretResolver)."""

    def resolve(self, reference: str) -> str: ...


@dataclass(frozen=True, slots=True)
class ColumnCount:
    """One column of one batch: how it was treated and how many values it had. No values."""

    column: str
    strategy: Strategy
    data_class: DataClass
    basis: Basis
    values: int  # non-NULL values the strategy was applied to
    nulls: int   # NULLs, left as they were


@dataclass(frozen=True, slots=True)
class BatchAudit:
    """What one `mask_rows` call did, column by column (sorted by name)."""

    keyspace: str
    table: str
    rows: int
    columns: tuple[ColumnCount, ...]


AuditHook = Callable[[BatchAudit], None]


@dataclass(slots=True)
class _Pending:
    """A tokenized collection (or non-text) value waiting for the batch's tokens."""

    column: str
    out: list[Any]  # its column's masked values
    at: int  # its row's place in them
    shape: Shape
    leaves: list[bytes | None]
    start: int  # its first token's place in the batch's requests


@dataclass(slots=True)
class _PendingTexts:
    """A tokenized column's text values, waiting for their tokens (consecutive requests)."""

    column: str
    out: list[Any]
    at: list[int]  # the rows holding a text value, in order
    start: int


@dataclass(slots=True)
class _Group:
    """Rows of a batch with the same columns (in the same order), masked column by column."""

    columns: tuple[str, ...]
    rows: list[int]  # their places in the batch
    masked: list[Sequence[Any]]  # per column, the masked values of those rows


class Masker:
    """Masks row images according to a policy.

    secrets resolves the policy's hmac key reference (on first use; the key is then kept for
    the life of the Masker, so a key rotated in OpenBao takes effect at the next restart).
    tokenizer is required when the policy tokenizes anything. audit, if given, is called once
    per non-empty batch, after masking succeeded; an exception from it fails the batch (an
    audit trail with holes is not one).

    No I/O at construction."""

    def __init__(
        self,
        policy: MaskingPolicy,
        secrets: SecretSource,
        tokenizer: Tokenizer | None = None,
        *,
        audit: AuditHook | None = None,
    ) -> None:
        if tokenizer is None and policy.uses(Strategy.TOKENIZE):
            raise ValueError("the masking policy tokenizes columns: pass a Tokenizer")
        self.policy = policy
        self._secrets = secrets
        self._tokenizer = tokenizer
        self._audit = audit
        self._hmac_key: bytes | None = None
        self._rules: dict[tuple[str, str, str], ColumnRule] = {}

    def __repr__(self) -> str:
        return f"Masker({len(self.policy.columns)} listed columns, tokenizer={self._tokenizer!r})"

    def rule_for(self, keyspace: str, table: str, column: str) -> ColumnRule:
        """The column's rule (cached); logs once when a column is masked fail-closed."""
        key = (keyspace, table, column)
        rule = self._rules.get(key)
        if rule is None:
            rule = self._rules[key] = self.policy.rule_for(keyspace, table, column)
            if rule.basis is Basis.DETECTED:
                log.warning(
                    "%s.%s.%s is not in the masking policy but its name looks sensitive "
                    "(%r): masked with %s; classify or exempt it at %s",
                    keyspace, table, column, rule.matched, rule.strategy,
                    self.policy.key_path(keyspace, table, column),
                )
        return rule

    def _key(self) -> bytes:
        if self._hmac_key is None:
            settings = self.policy.hmac
            if settings is None:  # from_mapping requires it whenever hmac is used
                raise MaskingError(f"{self.policy.root}.hmac: not configured")
            key = self._secrets.resolve(settings.key).encode("utf-8")
            if len(key) < HMAC_MIN_KEY_BYTES:
                raise MaskingError(
                    f"{self.policy.root}.hmac.key: the secret {settings.key} is shorter than "
                    f"{HMAC_MIN_KEY_BYTES} bytes"
                )
            self._hmac_key = key
        return self._hmac_key

    def mask_rows(
        self, keyspace: str, table: str, rows: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """The rows with every column masked by its rule; same order, new dicts.

        One tokenizer call for the whole batch. Raises MaskingError (naming the column, never
        a value) if any value cannot be masked; then nothing of the batch is returned."""
        if not rows:
            return []
        # Column by column, not value by value: a column's rule and strategy are looked at once
        # per batch, and passed-through columns are not touched at all. A batch's rows share a
        # few column sets (an operation's key, its values), so rows are grouped by theirs.
        places: dict[tuple[str, ...], list[int]] = {}
        for place, row in enumerate(rows):
            places.setdefault(tuple(row), []).append(place)
        counts: dict[str, list[int]] = {}
        rules: dict[str, ColumnRule] = {}
        texts: list[_PendingTexts] = []
        pending: list[_Pending] = []
        requests: list[TokenRequest] = []
        groups: list[_Group] = []
        for columns, members in places.items():
            if len(members) == len(rows):
                mappings: Sequence[Mapping[str, Any]] = rows
            else:
                mappings = [rows[place] for place in members]
            group = _Group(columns, members, [])
            groups.append(group)
            if not columns:
                continue
            by_column = zip(*[m.values() for m in mappings], strict=True)
            for column, values in zip(columns, by_column, strict=True):
                rule = rules.get(column)
                if rule is None:
                    rule = rules[column] = self.rule_for(keyspace, table, column)
                # By identity: count(None) would use ==, and a value equal to None would
                # then pass unmasked as a NULL.
                nulls = sum(map(is_, values, repeat(None)))
                tally = counts.setdefault(column, [0, 0])
                tally[0] += len(values) - nulls
                tally[1] += nulls
                group.masked.append(self._mask_column(
                    keyspace, table, column, rule, values, nulls, texts, pending, requests))

        if requests:
            self._fill_tokens(keyspace, table, texts, pending, requests)

        masked_rows: list[dict[str, Any]] = [{} for _ in rows]
        for group in groups:
            if group.columns:
                for place, values in zip(group.rows, zip(*group.masked, strict=True), strict=True):
                    masked_rows[place] = dict(zip(group.columns, values, strict=True))

        if self._audit is not None:
            self._audit(BatchAudit(keyspace, table, len(rows), tuple(
                ColumnCount(column, rules[column].strategy, rules[column].data_class,
                            rules[column].basis, values, nulls)
                for column, (values, nulls) in sorted(counts.items())
            )))
        return masked_rows

    def _mask_column(
        self, keyspace: str, table: str, column: str, rule: ColumnRule,
        values: tuple[Any, ...], nulls: int, texts: list[_PendingTexts],
        pending: list[_Pending], requests: list[TokenRequest],
    ) -> Sequence[Any]:
        """One column's values of a group, masked; tokenized ones are None until the batch's
        tokens arrive (queued in texts and pending, their requests in requests)."""
        strategy = rule.strategy
        if strategy is Strategy.PASS or nulls == len(values):
            return values
        if strategy is Strategy.REDACT:
            return [None] * len(values)
        if strategy is Strategy.HMAC:
            key = self._key()
            return [
                None if value is None
                else hmac_hex(key, text_bytes(value)) if type(value) is str
                else rebuild(*self._hmac_leaves(key, keyspace, table, column, strategy, value))
                for value in values
            ]
        assert rule.context is not None
        context = rule.context
        out: list[Any] = [None] * len(values)
        # Text values (the common case) are consecutive requests; anything else is split into
        # its leaves and queued on its own.
        at = [place for place, value in enumerate(values) if type(value) is str]
        if at:
            texts.append(_PendingTexts(column, out, at, len(requests)))
            requests.extend(map(TokenRequest, repeat(context),
                                texts_bytes([values[place] for place in at])))
        if len(at) + nulls < len(values):
            for place, value in enumerate(values):
                if value is None or type(value) is str:
                    continue
                shape, leaves = self._split(keyspace, table, column, strategy, value)
                pending.append(_Pending(column, out, place, shape, leaves, len(requests)))
                requests.extend(TokenRequest(context, leaf) for leaf in leaves if leaf is not None)
        return out

    def _hmac_leaves(
        self, key: bytes, keyspace: str, table: str, column: str, strategy: Strategy, value: Any
    ) -> tuple[Shape, list[str | None]]:
        shape, leaves = self._split(keyspace, table, column, strategy, value)
        return shape, [None if leaf is None else hmac_hex(key, leaf) for leaf in leaves]

    @staticmethod
    def _split(
        keyspace: str, table: str, column: str, strategy: Strategy, value: Any
    ) -> tuple[Shape, list[bytes | None]]:
        try:
            return split(value)
        except Exception:  # noqa: BLE001 - re-raised without the value (never chained)
            raise MaskingError(
                f"{keyspace}.{table}.{column}: cannot {strategy} a value of type "
                f"{type(value).__name__}"
            ) from None

    def _fill_tokens(
        self, keyspace: str, table: str, texts: list[_PendingTexts], pending: list[_Pending],
        requests: list[TokenRequest],
    ) -> None:
        assert self._tokenizer is not None
        columns = ", ".join(sorted({p.column for p in texts} | {p.column for p in pending}))
        try:
            tokens = self._tokenizer.tokenize(requests)
        except TokenizationError as error:
            raise MaskingError(f"{keyspace}.{table}: tokenizing {columns}: {error}") from None
        except Exception as error:  # noqa: BLE001 - another Tokenizer's text could hold values
            raise MaskingError(
                f"{keyspace}.{table}: tokenizing {columns} failed ({type(error).__name__})"
            ) from None
        if len(tokens) != len(requests):
            raise MaskingError(
                f"{keyspace}.{table}: the tokenizer returned {len(tokens)} tokens for "
                f"{len(requests)} values"
            )
        for text in texts:
            out = text.out
            for place, token in zip(
                text.at, tokens[text.start:text.start + len(text.at)], strict=True
            ):
                out[place] = token
        for item in pending:
            masked: list[str | None] = []
            at = item.start
            for leaf in item.leaves:
                if leaf is None:
                    masked.append(None)
                else:
                    masked.append(tokens[at])
                    at += 1
            item.out[item.at] = rebuild(item.shape, masked)
