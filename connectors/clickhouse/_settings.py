"""ClickHouseSinkSettings: where and how the sink connects; validated, no I/O at construction."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_PROGRESS_INTERVAL", "MIN_PROGRESS_INTERVAL", "ClickHouseSinkSettings"]

# _cdc_progress may lag this long behind the data (connectors/clickhouse/_progress.py); the
# thread writing it wakes no more often than every MIN_PROGRESS_INTERVAL.
MIN_PROGRESS_INTERVAL, MAX_PROGRESS_INTERVAL = 0.1, 3600


@dataclass(frozen=True, kw_only=True)
class ClickHouseSinkSettings:
    """Connection and retry settings of `ClickHouseSink`.

    TLS is not configurable: every connection is HTTPS verified against ``ca_cert`` (host name
    included) and refuses anything below TLS 1.3; compression is off (18.16 refuses lz4
    Content-Encoding).

    password_ref: a secret reference (``openbao:path#field``, ``env:NAME``, ``file:path``),
        resolved by `connectors.secrets.SecretResolver` when a partition is built.
    database: the database holding the sink's tables (it must exist; the user must be allowed
        to create tables in it).
    partitions: the sink's partition count (fixed for a deployment: items are routed by a
        stable hash of their key modulo this count).
    retry_attempts: tries of one batch on a transient error (connection lost or timed out)
        before the error is raised; a retried batch is re-inserted whole (idempotent).
    retry_backoff: first pause between tries in seconds, doubled each time up to retry_max_backoff.
    progress_interval: seconds (0.1..3600) between writes of a partition's _cdc_progress rows,
        made off the data path (connectors/clickhouse/_progress.py); 0: after every batch, on
        the data path.
    """

    host: str
    port: int = 8443
    database: str = "cdc"
    user: str
    password_ref: str
    ca_cert: str
    partitions: int = 1
    connect_timeout: int = 10
    send_receive_timeout: int = 300
    retry_attempts: int = 5
    retry_backoff: float = 0.2
    retry_max_backoff: float = 10.0
    progress_interval: float = 1.0

    def __post_init__(self) -> None:
        for name in ("host", "database", "user", "ca_cert"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"ClickHouseSinkSettings.{name} must be a non-empty string")
        scheme, sep, rest = self.password_ref.partition(":")
        if not sep or not scheme or not rest:
            raise ValueError("ClickHouseSinkSettings.password_ref must be a secret reference "
                             "(openbao:path#field, env:NAME or file:path), not a password")
        if not 0 < self.port < 65536:
            raise ValueError("ClickHouseSinkSettings.port must be within 1..65535")
        for name in ("partitions", "retry_attempts", "connect_timeout", "send_receive_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ClickHouseSinkSettings.{name} must be an integer >= 1")
        for name in ("retry_backoff", "retry_max_backoff"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ClickHouseSinkSettings.{name} must be > 0")
        if self.retry_max_backoff < self.retry_backoff:
            raise ValueError("ClickHouseSinkSettings.retry_max_backoff must be >= retry_backoff")
        self.check_progress_interval(self.progress_interval)

    @staticmethod
    def check_progress_interval(value: object) -> None:
        """Refuse what is not 0 or a number of seconds within 0.1..3600, naming the option
        (below 0.1 the writing thread would all but spin)."""
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                value == 0 or MIN_PROGRESS_INTERVAL <= value <= MAX_PROGRESS_INTERVAL):
            raise ValueError("ClickHouseSinkSettings.progress_interval must be 0 (after every "
                             f"batch) or a number of seconds within {MIN_PROGRESS_INTERVAL}.."
                             f"{MAX_PROGRESS_INTERVAL}, not {value!r}")

    def client_kwargs(self, password: str) -> dict[str, Any]:
        """clickhouse_connect.get_client arguments: verified HTTPS, TLS 1.3 only, no
        compression, the sink's database, UTC."""
        from clickhouse_connect.driver import httputil

        pool = httputil.get_pool_manager(ca_cert=self.ca_cert, verify=True, maxsize=2,
                                         ssl_minimum_version=ssl.TLSVersion.TLSv1_3)
        return {
            "host": self.host,
            "port": self.port,
            "interface": "https",
            "secure": True,
            "verify": True,
            "ca_cert": self.ca_cert,
            "username": self.user,
            "password": password,
            "database": self.database,
            "compress": False,
            "connect_timeout": self.connect_timeout,
            "send_receive_timeout": self.send_receive_timeout,
            "pool_mgr": pool,
            "query_retries": 0,  # retries are the sink's, per batch
        }
