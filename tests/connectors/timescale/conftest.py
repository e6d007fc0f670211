"""Fixtures of the TimescaleDB sink tests: the PostgreSQL sink's (settings for the stack's
PostgreSQL in a fresh schema, an autocommit connection); CI has no TimescaleDB."""

from tests.connectors.postgres.conftest import conn, pg_password, settings  # noqa: F401
