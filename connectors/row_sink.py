"""What every destination sink shares: partitions, routing, table layouts, the password.

A destination sink is a Bytewax FixedPartitionedSink of row operations (operators/row_ops.py)
keyed by Cassandra partition. Its N partitions are routed by a stable hash of the key (the same
in every process, unlike hash()), the layout of each destination table is built on first use
from the Cassandra schema and the masking type changes, and the password is resolved from its
secret reference when a partition is built, never at flow definition.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bytewax.outputs import FixedPartitionedSink
from typing_extensions import override

from connectors.cassandra.schema import TableSchema
from connectors.secrets import SecretResolver
from operators.row_ops import Source

SchemaLookup = Callable[[str, str], TableSchema | None]
MaskedTypesLookup = Callable[[str, str], Mapping[str, str]]
Layout = TypeVar("Layout")
log = logging.getLogger(__name__)


def stable_partition(item_key: str) -> int:
    """A hash of the item key that is the same in every process and release (not hash())."""
    return int.from_bytes(hashlib.blake2b(item_key.encode(), digest_size=8).digest(), "big")


class RowOpSink(FixedPartitionedSink, Generic[Layout]):
    """The shared part; subclasses build their partitions and say how a layout is made.

    settings: needs ``partitions`` and ``password_ref``.
    schema_of: (keyspace, table) -> the table's current TableSchema.
    masked_types_of: (keyspace, table) -> columns whose type masking changes, or None.
    """

    def __init__(self, settings: Any, schema_of: SchemaLookup,
                 masked_types_of: MaskedTypesLookup | None = None,
                 resolver_factory: Callable[[], SecretResolver] = SecretResolver) -> None:
        self._settings = settings
        self._schema_of = schema_of
        self._masked_types_of = masked_types_of
        self._resolver_factory = resolver_factory

    @override
    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self._settings.partitions)]

    @override
    def part_fn(self, item_key: str) -> int:
        return stable_partition(item_key)

    def _password(self) -> str:
        return self._resolver_factory().resolve(self._settings.password_ref)

    def _build_layout(self, schema: TableSchema, masked: Mapping[str, str] | None) -> Layout:
        raise NotImplementedError

    def _missing_schema(self, keyspace: str, table: str) -> Exception:
        return LookupError(f"no schema known for {keyspace}.{table}")

    def _layouts(self) -> Callable[[str, str], Layout]:
        """A per-partition, memoised (keyspace, table) -> layout."""
        cache: dict[tuple[str, str], Layout] = {}

        def layout_of(keyspace: str, table: str) -> Layout:
            found = cache.get((keyspace, table))
            if found is None:
                schema = self._schema_of(keyspace, table)
                if schema is None:
                    raise self._missing_schema(keyspace, table)
                masked = self._masked_types_of(keyspace, table) if self._masked_types_of \
                    else None
                found = cache[(keyspace, table)] = self._build_layout(schema, masked)
            return found

        return layout_of


class RejectedValueError(ValueError):
    """A destination (or the sink's conversion for it) refuses a value. Names the sink, the
    table, the column and a fingerprint of the key (BLAKE2b of the converted key), never a
    value: the flow stops on it, and recovery replays it once the cause is fixed."""

    sink = "destination"

    def __init__(self, table: str, column: str | None, key_fingerprint: str | None,
                 reason: str):
        self.table, self.column, self.key_fingerprint = table, column, key_fingerprint
        self.reason = reason
        super().__init__(f"{self.sink} sink cannot write table {table}, column "
                         f"{column or '?'}, key fingerprint {key_fingerprint or '?'}: {reason}")


def key_fingerprint(key: tuple) -> str:
    return hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest()


@dataclass(slots=True)
class Image:
    """A row's state as one batch will write it: converted key and values (None: a
    tombstone), its version and where the change came from."""

    key: tuple
    values: tuple | None
    version: int
    source: Source


def with_retries(action: Callable[[], None], *, transient: Callable[[BaseException], bool],
                 settings: Any, sleep: Callable[[float], None], what: str,
                 before_retry: Callable[[], None] | None = None) -> None:
    """Run ACTION; on an error TRANSIENT says may pass, try again (settings.retry_attempts in
    all) after settings.retry_backoff seconds, doubled each time up to retry_max_backoff.
    Only the error's class is logged: messages of database errors can quote values."""
    pause = settings.retry_backoff
    for attempt in range(1, settings.retry_attempts + 1):
        try:
            action()
            return
        except Exception as error:
            if not transient(error) or attempt == settings.retry_attempts:
                raise
            log.warning("%s: transient %s, try %d of %d in %.1fs", what, type(error).__name__,
                        attempt, settings.retry_attempts, pause)
            if before_retry is not None:
                before_retry()
            sleep(pause)
            pause = min(pause * 2, settings.retry_max_backoff)
