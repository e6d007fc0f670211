"""The stack's generated credentials: created once, random, kept in one 0600 file.

This file is the stack's own root of trust (it has to remember what it set); the pipeline and the
tests never read it: they get their credentials from OpenBao, which the stack seeds from here.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from devstack.paths import service_dir

# name -> what it is for; every one is a random URL-safe string.
NAMES = {
    "cassandra_admin_password": "Cassandra superuser 'cdc_admin' (replaces the default superuser)",
    "cassandra_pipeline_password": "Cassandra role 'cdc_pipeline': reads schema, captured tables",
    "postgres_admin_password": "PostgreSQL superuser 'postgres'",
    "postgres_pipeline_password": "PostgreSQL role 'cdc_pipeline': writes its own schema only",
    "clickhouse_admin_password": "ClickHouse user 'cdc_admin'",
    "clickhouse_pipeline_password": "ClickHouse user 'cdc_pipeline'",
    "masking_hmac_key": "HMAC-SHA256 key of the keyed-hash masking strategy",
}


def _path() -> Path:
    return service_dir("secrets") / "credentials.json"


def load() -> dict[str, str]:
    """Every credential, generating (and saving) the ones that do not exist yet."""
    path = _path()
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [name for name in NAMES if name not in known]
    if missing:
        for name in missing:
            known[name] = secrets.token_urlsafe(24)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(known, out)
        os.replace(path.with_suffix(".tmp"), path)
    return known
