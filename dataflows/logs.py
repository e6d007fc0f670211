"""Structured logs: one JSON object per line on stderr, for log collectors to parse.

Fields: ts (UTC, ISO 8601), level, logger, msg (the formatted message), and exc (the traceback)
when there is one. The level comes from CDC_LOG_LEVEL (default INFO). Messages never carry
secrets: the pipeline logs references (openbao:path#field), never resolved values.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str | None = None) -> None:
    """Route the root logger to stderr as JSON lines (idempotent: one handler, replaced)."""
    name = (level or os.environ.get("CDC_LOG_LEVEL", "INFO")).upper()
    if name not in logging.getLevelNamesMapping():
        raise ValueError(f"CDC_LOG_LEVEL {name!r} is not a logging level")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(name)
    # The drivers are chatty at INFO about every connection; their warnings still show.
    for noisy in ("cassandra", "urllib3", "clickhouse_connect", "hvac"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
