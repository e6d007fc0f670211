"""Closing a ClickHouse client that may already be broken."""

from __future__ import annotations

import logging

from clickhouse_connect.driver.client import Client

__all__ = ["close_quietly"]

log = logging.getLogger(__name__)


def close_quietly(client: Client | None) -> None:
    """Close CLIENT (None: nothing). Its connection may be what failed: a failure to close
    is logged at debug level, not raised over the error being handled."""
    if client is None:
        return
    try:
        client.close()
    except Exception:  # noqa: BLE001 - already failing; a new client replaces it
        log.debug("closing a failed ClickHouse client failed", exc_info=True)
