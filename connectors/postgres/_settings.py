"""PostgresSinkSettings: where and how the sink connects; validated, no I/O at construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.postgres._naming import MAX_IDENTIFIER_BYTES

__all__ = ["PostgresSinkSettings"]


@dataclass(frozen=True, kw_only=True)
class PostgresSinkSettings:
    """Connection and batching settings of `PostgresSink`.

    TLS is not configurable: every connection uses ``sslmode=verify-full`` against
    ``sslrootcert`` and refuses anything below TLS 1.3 (``ssl_min_protocol_version``).

    password_ref: a secret reference (``openbao:path#field``, ``env:NAME``, ``file:path``),
        resolved by `connectors.secrets.SecretResolver` when a partition is built.
    schema: the PostgreSQL schema holding the sink's tables (it must exist; the role needs
        CREATE on it).
    partitions: the sink's partition count (fixed for a deployment: items are routed by a
        stable hash of their key modulo this count).
    max_transaction_ops: a `write_batch` with more operations is applied as consecutive
        transactions of at most this many operations, in order (each with its progress row).
    pool_min_size / pool_max_size: connections of each partition's pool. A partition writes
        one transaction at a time, so 1/1 is the natural size; the pool exists for its health
        checks, reconnection and connection lifetime, not for concurrency.
    retry_attempts: tries of one transaction on a transient error (connection lost, serialization
        failure, deadlock, statement timeout, pool timeout) before the error is raised.
    retry_backoff: first pause between tries in seconds, doubled each time up to retry_max_backoff.
    fillfactor: the storage parameter of the sink's tables (10-100). None, the default,
        leaves it as it is: PostgreSQL's 100 for the tables the sink makes (pages packed
        full), or what was set by hand. Below 100, pages keep room for new row versions: an
        update whose new version fits on its page is HOT (no index entry, no new page), so a
        table whose rows are updated again and again takes a version-guarded update at about
        the cost of an insert (figures: docs/performance.md), for up to 100/fillfactor times
        the space.
        Set on the tables when a partition first meets them (ALTER TABLE ... SET: pages
        written from then on).
    """

    host: str
    port: int = 5432
    dbname: str
    user: str
    password_ref: str
    sslrootcert: str
    schema: str = "cdc"
    partitions: int = 1
    max_transaction_ops: int = 100_000
    pool_min_size: int = 1
    pool_max_size: int = 1
    pool_timeout: float = 30.0
    pool_max_lifetime: float = 3600.0
    connect_timeout: int = 10
    statement_timeout_ms: int = 300_000
    retry_attempts: int = 5
    retry_backoff: float = 0.2
    retry_max_backoff: float = 10.0
    application_name: str = "cdc-pipeline-postgres-sink"
    fillfactor: int | None = None

    def __post_init__(self) -> None:
        for name in ("host", "dbname", "user", "sslrootcert", "application_name"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"PostgresSinkSettings.{name} must be a non-empty string")
        scheme, sep, rest = self.password_ref.partition(":")
        if not sep or not scheme or not rest:
            raise ValueError("PostgresSinkSettings.password_ref must be a secret reference "
                             "(openbao:path#field, env:NAME or file:path), not a password")
        self.check_schema(self.schema)
        if not 0 < self.port < 65536:
            raise ValueError("PostgresSinkSettings.port must be within 1..65535")
        positive = ("partitions", "max_transaction_ops", "pool_max_size", "retry_attempts",
                    "connect_timeout", "statement_timeout_ms")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PostgresSinkSettings.{name} must be an integer >= 1")
        if not isinstance(self.pool_min_size, int) or not \
                0 <= self.pool_min_size <= self.pool_max_size:
            raise ValueError("PostgresSinkSettings.pool_min_size must be within 0..pool_max_size")
        for name in ("pool_timeout", "pool_max_lifetime", "retry_backoff", "retry_max_backoff"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PostgresSinkSettings.{name} must be > 0")
        self.check_fillfactor(self.fillfactor)
        if self.retry_max_backoff < self.retry_backoff:
            raise ValueError("PostgresSinkSettings.retry_max_backoff must be >= retry_backoff")

    @staticmethod
    def check_schema(value: object) -> None:
        """ValueError unless VALUE is a schema name PostgreSQL keeps whole (a non-empty string
        of at most MAX_IDENTIFIER_BYTES bytes)."""
        if not isinstance(value, str) or not value:
            raise ValueError("PostgresSinkSettings.schema must be a non-empty string")
        if len(value.encode()) > MAX_IDENTIFIER_BYTES:
            raise ValueError(f"PostgresSinkSettings.schema is longer than "
                             f"{MAX_IDENTIFIER_BYTES} bytes")

    @staticmethod
    def check_fillfactor(value: object) -> None:
        """ValueError unless VALUE is None or a fillfactor PostgreSQL takes (10..100)."""
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or not 10 <= value <= 100):
            raise ValueError("PostgresSinkSettings.fillfactor must be an integer within 10..100, "
                             f"not {value!r}")

    def connection_kwargs(self, password: str) -> dict[str, Any]:
        """libpq parameters: verified TLS 1.3 only, UTC session time zone, statement timeout."""
        return {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "password": password,
            "sslmode": "verify-full",
            "sslrootcert": self.sslrootcert,
            "ssl_min_protocol_version": "TLSv1.3",
            "connect_timeout": self.connect_timeout,
            "application_name": self.application_name,
            "options": f"-c TimeZone=UTC -c statement_timeout={self.statement_timeout_ms}",
        }
