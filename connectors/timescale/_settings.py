"""TimescaleSettings: which column of each table is its hypertable's time column, optional
compression and retention policies, and what to do when the extension is missing.

Validated at construction, no I/O. Table names are "keyspace.table" (Cassandra's names);
column names are Cassandra's. Intervals are PostgreSQL interval text limited to positive
whole amounts of named units ("7 days", "1 day 12 hours", "2 weeks"), checked here so that a
typo fails at start-up instead of inside a policy job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["WHEN_MISSING", "Compression", "TimescaleSettings", "check_interval", "whole_days"]

WHEN_MISSING = ("fail", "plain")
_UNITS = "microsecond|millisecond|second|minute|hour|day|week|month|year"
_INTERVAL = re.compile(rf"\s*(\d+)\s*(?:{_UNITS})s?(?:\s+(\d+)\s*(?:{_UNITS})s?)*\s*",
                       re.IGNORECASE)
_PART = re.compile(rf"(\d+)\s*({_UNITS})s?", re.IGNORECASE)  # one "amount unit" of them


def _parts(interval: str) -> list[tuple[int, str]]:
    """(amount, unit) of each part of INTERVAL (matched by _INTERVAL), unit in lower case."""
    return [(int(amount), unit.lower()) for amount, unit in _PART.findall(interval)]


def check_interval(value: object, what: str) -> str:
    """VALUE if it is a positive interval such as "7 days" or "1 day 12 hours"; else
    ValueError naming WHAT."""
    if not isinstance(value, str) or not _INTERVAL.fullmatch(value):
        raise ValueError(f"{what} must be an interval such as '7 days' or '1 day 12 hours' "
                         f"(units: {_UNITS.replace('|', ', ')}), not {value!r}")
    if not any(amount for amount, _ in _parts(value)):
        raise ValueError(f"{what} must be a positive interval, not {value!r}")
    return value


_SUB_DAY_MICROSECONDS = {"microsecond": 1, "millisecond": 1_000, "second": 10**6,
                         "minute": 60 * 10**6, "hour": 3600 * 10**6}


def whole_days(interval: str) -> bool:
    """Whether INTERVAL (checked by `check_interval`) is a whole number of days: the only
    chunk interval TimescaleDB takes for a `date` time column."""
    sub_day = sum(amount * _SUB_DAY_MICROSECONDS.get(unit, 0) for amount, unit in _parts(interval))
    return sub_day % (86_400 * 10**6) == 0


def _check_table(name: object, what: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"{what}: table names must be strings, not {name!r}")
    keyspace, dot, table = name.partition(".")
    if not dot or not keyspace or not table or "." in table:
        raise ValueError(f"{what}: table names are 'keyspace.table', not {name!r}")
    return name


@dataclass(frozen=True, kw_only=True)
class Compression:
    """Native compression of a hypertable's chunks older than ``after`` (an interval), with
    ``segment_by`` columns (Cassandra names; empty: none). Requires TimescaleDB >= 2.11, the
    first release whose compressed chunks accept the sink's upserts (INSERT ... ON CONFLICT)."""

    after: str
    segment_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_interval(self.after, "Compression.after")
        if isinstance(self.segment_by, str) or not all(
                isinstance(c, str) and c for c in self.segment_by):
            raise ValueError("Compression.segment_by must be a tuple of column names")
        if len(set(self.segment_by)) != len(self.segment_by):
            raise ValueError("Compression.segment_by names a column twice")
        object.__setattr__(self, "segment_by", tuple(self.segment_by))


@dataclass(frozen=True, kw_only=True)
class TimescaleSettings:
    """What makes `TimescaleSink` more than `PostgresSink`.

    time_columns: {"keyspace.table": "column"}: every table the sink writes needs one; the
        column must be in the table's Cassandra primary key (checked when the sink first meets
        the table) and of CQL type timestamp or date.
    compression: {"keyspace.table": Compression(...)} (optional, per table).
    retention: {"keyspace.table": "drop_after interval"} (optional, per table). Chunks older
        than that are dropped by TimescaleDB: those rows leave the destination while they may
        still exist in Cassandra (a later change of such a row writes it again).
    chunk_intervals: {"keyspace.table": "interval"} (optional): chunk_time_interval of a new
        hypertable (TimescaleDB's default, 7 days, otherwise); ignored for an existing one.
    when_missing: "fail" (default): without the timescaledb extension in the database the sink
        raises `TimescaleMissingError` saying what to install; "plain": it creates plain
        PostgreSQL tables and logs a warning listing the statements it skipped.
    """

    time_columns: Mapping[str, str]
    compression: Mapping[str, Compression] = field(default_factory=dict)
    retention: Mapping[str, str] = field(default_factory=dict)
    chunk_intervals: Mapping[str, str] = field(default_factory=dict)
    when_missing: str = "fail"

    def __post_init__(self) -> None:
        if not isinstance(self.time_columns, Mapping) or not self.time_columns:
            raise ValueError("TimescaleSettings.time_columns must map 'keyspace.table' to a "
                             "column, for every table the sink writes")
        for table, column in self.time_columns.items():
            _check_table(table, "TimescaleSettings.time_columns")
            if not isinstance(column, str) or not column:
                raise ValueError(f"TimescaleSettings.time_columns[{table!r}] must be a "
                                 "column name")
        for name in ("compression", "retention", "chunk_intervals"):
            mapping = getattr(self, name)
            if not isinstance(mapping, Mapping):
                raise ValueError(f"TimescaleSettings.{name} must be a mapping")
            for table, value in mapping.items():
                what = f"TimescaleSettings.{name}[{table!r}]"
                _check_table(table, f"TimescaleSettings.{name}")
                if table not in self.time_columns:
                    raise ValueError(f"{what}: {table} has no time column in "
                                     "TimescaleSettings.time_columns")
                if name == "compression":
                    if not isinstance(value, Compression):
                        raise ValueError(f"{what} must be a Compression")
                else:
                    check_interval(value, what)
        if self.when_missing not in WHEN_MISSING:
            raise ValueError(f"TimescaleSettings.when_missing must be one of {WHEN_MISSING}, "
                             f"not {self.when_missing!r}")
        for name in ("time_columns", "compression", "retention", "chunk_intervals"):
            object.__setattr__(self, name, dict(getattr(self, name)))
