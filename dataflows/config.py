"""The pipeline's configuration: one JSON file, validated into frozen settings before any I/O.

The file's path comes from ``CDC_PIPELINE_CONFIG`` (default ``config/pipeline.json``); see
docs/configuration.md for every key. Secrets are never written in it: every credential is
a reference (``openbao:path#field``, ``env:NAME`` or ``file:path``; connectors/secrets.py).

A bad file stops the job with one `ConfigError` naming the key path and the problem, e.g.
``pipeline.cassandra.consistency: 'QUORUMS' is not one of ONE, LOCAL_ONE, ...``; unknown keys are
errors too (a typo must not silently fall back to a default). ``_comment`` keys are ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.cassandra.expiry import ExpirySettings
from connectors.cassandra.source import DEFAULT_MAX_RECORDS, MAX_MAX_RECORDS, MIN_MAX_RECORDS
from connectors.cassandra.tail import Cursor
from operators.masking.errors import ConfigError

DEFAULT_PATH = "config/pipeline.json"
CONSISTENCY_LEVELS = ("ONE", "LOCAL_ONE", "TWO", "QUORUM", "LOCAL_QUORUM", "EACH_QUORUM", "ALL")
SECRET_SCHEMES = ("openbao", "vault", "env", "file")
DESTINATION_KINDS = ("postgres", "clickhouse", "timescale")


@dataclass(frozen=True)
class NodeSettings:
    name: str
    cdc_raw: Path
    # Where to start without recovery state, overriding start_from: a saved cursor (after a
    # restore, or to skip history).
    start_at: Cursor | None = None


@dataclass(frozen=True)
class CassandraSettings:
    contact_points: tuple[str, ...]
    port: int
    username: str
    password: str  # a secret reference
    ca_cert: Path
    consistency: str
    keyspaces: tuple[str, ...]
    tables: tuple[str, ...]  # "keyspace.table"; empty: every CDC table of the keyspaces
    nodes: tuple[NodeSettings, ...]
    # Where a node's capture starts when there is no recovery state: "earliest" (every segment
    # still in cdc_raw) or "latest" (only what is written from now on).
    start_from: str = "earliest"
    # The nodes' cdc_total_space in bytes, for the usage gauges and warnings (None: unknown).
    cdc_total_space: int | None = None
    # Rows read again when their TTL runs out (connectors/cassandra/expiry.py); None: expired
    # rows and cells stay in the destinations until their next change.
    ttl_expiry: ExpirySettings | None = None


@dataclass(frozen=True)
class BatchSettings:
    # Commit-log entries per input batch (connectors/cassandra/source.py: MIN_MAX_RECORDS to
    # MAX_MAX_RECORDS, default DEFAULT_MAX_RECORDS): the backlog benchmark ran 2,466-2,612
    # changes/s at 1000 against 2,205-2,299 at 500 (benchmarks/pipeline_throughput.py, phase
    # 2, interleaved), with a peak RSS of 135-136 MiB against 139-140.
    max_records: int
    max_changes_per_second: int  # commit-log entries per second per node; 0: no limit
    read_concurrency: int = 16  # row-image reads in flight per worker (different partitions)


@dataclass(frozen=True)
class InitialLoadSettings:
    # Load the rows that exist when the pipeline starts (connectors/cassandra/snapshot.py),
    # alongside the capture: each table's token space in `splits` resumable ranges, read
    # `page_size` rows at a time.
    enabled: bool = False
    splits: int = 16
    page_size: int = 500
    # Raised, every table is loaded again (connectors/cassandra/snapshot.py): finished ranges
    # stay finished, so this is how rows written while CDC was off come (once it is on again).
    generation: int = 0


@dataclass(frozen=True)
class DestinationSettings:
    name: str
    kind: str
    host: str
    port: int
    database: str
    username: str
    password: str  # a secret reference
    ca_cert: Path
    partitions: int
    options: Mapping[str, Any]  # kind-specific, validated by the sink
    # The captured tables ("keyspace.table") this destination receives; empty: every one
    # (TimescaleDB: every table with a time column, see dataflows/flow.py).
    tables: tuple[str, ...] = ()
    # Writes go through a durable local spool drained by a thread (connectors/spool.py,
    # docs/adr/0006), so this destination being down stalls no other; False: written inline.
    spool: bool = True


@dataclass(frozen=True)
class PipelineSettings:
    cassandra: CassandraSettings
    batching: BatchSettings
    masking_policy: Path
    dead_letter_dir: Path
    destinations: tuple[DestinationSettings, ...]
    # Bytewax's recovery directory, the same one bytewax.run is given: consumed cdc_raw segments
    # are deleted only by reading it (docs/adr/0004). None: never deleted.
    recovery_directory: Path | None = None
    initial_load: InitialLoadSettings = InitialLoadSettings()
    # The destinations' spools (docs/adr/0006): <spool_dir>/<step>/<partition>; None: "spool"
    # beside dead_letter_dir. Must survive restarts like the recovery store.
    spool_dir: Path | None = None
    # Undrained bytes per destination partition past which the flow waits (back-pressure).
    spool_max_bytes: int = 1024 * 1024 * 1024
    # The masking audit trail (connectors/audit_trail.py); None: "audit" beside dead_letter_dir.
    audit_dir: Path | None = None

    @property
    def spool_root(self) -> Path:
        """spool_dir, or its default beside the dead letters (parse fills it in)."""
        return self.spool_dir or self.dead_letter_dir.parent / "spool"

    @property
    def audit_root(self) -> Path:
        """audit_dir, or its default beside the dead letters (parse fills it in)."""
        return self.audit_dir or self.dead_letter_dir.parent / "audit"


def load(path: str | Path | None = None) -> PipelineSettings:
    """Read and validate the configuration file (see the module docstring)."""
    path = Path(path or os.environ.get("CDC_PIPELINE_CONFIG", DEFAULT_PATH))
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(str(path), f"cannot read the configuration: {error.strerror}") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as error:
        raise ConfigError(str(path), f"not valid JSON: {error.msg} at line {error.lineno}, "
                          f"column {error.colno}") from None
    return parse(data, base=path.parent)


def parse(data: Any, *, base: Path = Path()) -> PipelineSettings:
    """Validate an already-parsed document; relative paths are taken from BASE."""
    root = _Section(data, "pipeline", base)
    cassandra = root.section("cassandra")
    dead_letter_dir = root.path("dead_letter_dir", default="dead-letter")
    settings = PipelineSettings(
        cassandra=CassandraSettings(
            contact_points=tuple(cassandra.strings("contact_points", min_items=1)),
            port=cassandra.integer("port", default=9042, low=1, high=65535),
            username=cassandra.string("username"),
            password=cassandra.secret("password"),
            ca_cert=cassandra.path("ca_cert"),
            consistency=cassandra.choice("consistency", CONSISTENCY_LEVELS,
                                         default="LOCAL_QUORUM"),
            keyspaces=tuple(cassandra.strings("keyspaces", min_items=1)),
            tables=tuple(cassandra.strings("tables", default=[])),
            nodes=tuple(_node(node) for node in cassandra.sections("nodes", min_items=1)),
            start_from=cassandra.choice("start_from", ("earliest", "latest"),
                                        default="earliest"),
            cdc_total_space=_megabytes(cassandra, "cdc_total_space_mb"),
            ttl_expiry=_ttl_expiry(cassandra),
        ),
        batching=_batching(root.section("batching", default={})),
        masking_policy=root.path("masking_policy"),
        dead_letter_dir=dead_letter_dir,
        destinations=tuple(_destination(d) for d in root.sections("destinations", min_items=1)),
        recovery_directory=_recovery_directory(root),
        initial_load=_initial_load(root.section("initial_load", default={})),
        spool_dir=root.path("spool_dir", default=dead_letter_dir.parent / "spool"),
        spool_max_bytes=root.integer("spool_max_mb", default=1024, low=1) * 1024 * 1024,
        audit_dir=root.path("audit_dir", default=dead_letter_dir.parent / "audit"),
    )
    cassandra.done()
    root.done()
    _check_cross_references(settings)
    return settings


def _megabytes(section: _Section, key: str) -> int | None:
    if key not in section:
        return None
    return section.integer(key, low=1) * 1024 * 1024


def _recovery_directory(root: _Section) -> Path | None:
    """The key, else BYTEWAX_RECOVERY_DIRECTORY (what bytewax.run reads when -r is not given);
    both set and different is an error: deletion would read another store than the one
    resumed from."""
    from_env = os.environ.get("BYTEWAX_RECOVERY_DIRECTORY")
    if "recovery_directory" not in root:
        return Path(from_env) if from_env else None
    configured = root.path("recovery_directory")
    if from_env and Path(from_env).resolve() != configured.resolve():
        raise ConfigError("pipeline.recovery_directory",
                          f"is {configured} but BYTEWAX_RECOVERY_DIRECTORY is {from_env}: "
                          "segment deletion must read the store bytewax.run resumes from")
    return configured


def with_recovery_from_arguments(settings: PipelineSettings, argv: Sequence[str]
                                 ) -> PipelineSettings:
    """SETTINGS knowing the recovery store bytewax.run was given by `-r DIR` (ARGV: its
    command line; `bytewax.run` sets no variable for it), when neither the key nor
    BYTEWAX_RECOVERY_DIRECTORY named one: the pipeline's own users of the store (segment
    deletion, the start pins, the initial load's ranges) must read the store Bytewax resumes
    from. Named both ways and different: a ConfigError, as for the variable."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-r", "--recovery-directory", dest="directory")
    given = parser.parse_known_args(list(argv))[0].directory
    if not given:
        return settings
    if settings.recovery_directory is None:
        return dataclasses.replace(settings, recovery_directory=Path(given))
    if Path(given).resolve() != settings.recovery_directory.resolve():
        raise ConfigError("pipeline.recovery_directory",
                          f"the store is {settings.recovery_directory} (this key or "
                          f"BYTEWAX_RECOVERY_DIRECTORY) but bytewax.run was given -r {given}: "
                          "the pipeline must read the store Bytewax resumes from")
    return settings


def _without_comments(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_comments(v) for k, v in value.items() if k != "_comment"}
    if isinstance(value, list):
        return [_without_comments(v) for v in value]
    return value


def _node(section: _Section) -> NodeSettings:
    start_at = None
    if "start_at" in section:
        at = section.section("start_at")
        start_at = Cursor(at.integer("segment_id", low=0), at.integer("offset", default=0, low=0))
        at.done()
    settings = NodeSettings(section.string("name"), section.path("cdc_raw"), start_at)
    section.done()
    return settings


def _batching(section: _Section) -> BatchSettings:
    settings = BatchSettings(
        max_records=section.integer("max_records", default=DEFAULT_MAX_RECORDS,
                                    low=MIN_MAX_RECORDS, high=MAX_MAX_RECORDS),
        max_changes_per_second=section.integer("max_changes_per_second", default=0, low=0),
        read_concurrency=section.integer("read_concurrency", default=16, low=1, high=256),
    )
    section.done()
    return settings


def _ttl_expiry(cassandra: _Section) -> ExpirySettings | None:
    if "ttl_expiry" not in cassandra:
        cassandra.section("ttl_expiry", default={})  # read: not an unknown key
        return None
    section = cassandra.section("ttl_expiry")
    try:
        settings = ExpirySettings(
            keyspace=section.string("keyspace", default="cdc_pipeline_state"),
            buckets=section.integer("buckets", default=4, low=1, high=256),
            poll_seconds=section.integer("poll_seconds", default=5, low=1, high=3600),
            grace_seconds=section.integer("grace_seconds", default=5, low=0, high=3600),
            lookback_seconds=section.integer("lookback_hours", default=24, low=0,
                                             high=24 * 366) * 3600,
            max_records=section.integer("max_records", default=1000, low=1, high=100_000))
    except ValueError as error:
        raise ConfigError("pipeline.cassandra.ttl_expiry", str(error)) from None
    section.done()
    return settings


def _initial_load(section: _Section) -> InitialLoadSettings:
    settings = InitialLoadSettings(
        enabled=section.boolean("enabled", default=False),
        splits=section.integer("splits", default=16, low=1, high=4096),
        page_size=section.integer("page_size", default=500, low=10, high=5000),
        generation=section.integer("generation", default=0, low=0),
    )
    section.done()
    return settings


def _destination(section: _Section) -> DestinationSettings:
    kind = section.choice("kind", DESTINATION_KINDS)
    settings = DestinationSettings(
        name=section.string("name", default=kind),
        kind=kind,
        host=section.string("host"),
        port=section.integer("port", low=1, high=65535),
        database=section.string("database"),
        username=section.string("username"),
        password=section.secret("password"),
        ca_cert=section.path("ca_cert"),
        partitions=section.integer("partitions", default=2, low=1, high=256),
        options=section.mapping("options", default={}),
        tables=tuple(section.strings("tables", default=[])),
        spool=section.boolean("spool", default=True),
    )
    section.done()
    return settings


def _check_cross_references(settings: PipelineSettings) -> None:
    names = [n.name for n in settings.cassandra.nodes]
    for index, name in enumerate(names):
        if names.index(name) != index:
            raise ConfigError(f"pipeline.cassandra.nodes[{index}].name",
                              f"{name!r} is used twice: node names key the capture's partitions")
    _check_tables("pipeline.cassandra.tables", settings.cassandra.tables, settings.cassandra)
    destinations = [d.name for d in settings.destinations]
    for index, name in enumerate(destinations):
        if destinations.index(name) != index:
            raise ConfigError(f"pipeline.destinations[{index}].name", f"{name!r} is used twice")
    for index, destination in enumerate(settings.destinations):
        _check_tables(f"pipeline.destinations[{index}].tables", destination.tables,
                      settings.cassandra)


def _check_tables(path: str, tables: tuple[str, ...], cassandra: CassandraSettings) -> None:
    """Each of TABLES is keyspace.table, of a captured keyspace (and of the captured tables
    when pipeline.cassandra.tables names them)."""
    for index, table in enumerate(tables):
        keyspace, dot, name = table.partition(".")
        if not dot or not name:
            raise ConfigError(f"{path}[{index}]", f"{table!r} is not keyspace.table")
        if keyspace not in cassandra.keyspaces:
            raise ConfigError(f"{path}[{index}]",
                              f"keyspace {keyspace!r} is not in pipeline.cassandra.keyspaces")
        if cassandra.tables and tables is not cassandra.tables and table not in cassandra.tables:
            raise ConfigError(f"{path}[{index}]",
                              f"{table!r} is not in pipeline.cassandra.tables")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ConfigError(key, "appears twice in one object")
        seen[key] = value
    return seen


class _Section:
    """One JSON object being validated: every read names its key path; done() rejects the rest."""

    _MISSING = object()

    def __init__(self, data: Any, path: str, base: Path) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, f"must be an object, not {type(data).__name__}")
        self._data = {k: v for k, v in data.items() if k != "_comment"}
        self._path = path
        self._base = base
        self._read: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def _get(self, key: str, default: Any) -> Any:
        self._read.add(key)
        value = self._data.get(key, self._MISSING)
        if value is self._MISSING:
            if default is self._MISSING:
                raise ConfigError(f"{self._path}.{key}", "is required")
            return default
        return value

    def _fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self._path}.{key}", problem)

    def string(self, key: str, default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self._fail(key, "must be a non-empty string")
        return value

    def secret(self, key: str) -> str:
        """The key's secret reference, checked whole here (not when a partition first resolves
        it); a relative file: path is taken from the base, as every other path."""
        value = self.string(key)
        scheme, sep, rest = value.partition(":")
        if not sep or scheme not in SECRET_SCHEMES or not rest:
            # Never echo the value: it may be the secret itself, pasted by mistake.
            raise self._fail(key, "must be a secret reference (openbao:path#field, env:NAME or "
                                  "file:path), not a literal secret")
        if scheme in ("openbao", "vault"):
            path, sep, field = rest.partition("#")
            if not (sep and path and field):
                raise self._fail(key, f"needs a path and a field: {scheme}:path#field")
        if scheme == "file" and not Path(rest).is_absolute():
            return f"file:{self._base / rest}"
        return value

    def integer(self, key: str, default: Any = _MISSING, *, low: int | None = None,
                high: int | None = None) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, f"must be an integer, not {type(value).__name__}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            raise self._fail(key, f"{value} is out of range: must be {bounds}")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, f"must be true or false, not {type(value).__name__}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if value not in choices:
            raise self._fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def path(self, key: str, default: Any = _MISSING) -> Path:
        """The key's path, taken from the base when relative. A default given as a Path is
        already resolved (beside another path) and is not joined to the base again."""
        if isinstance(default, Path) and key not in self:
            return default
        value = Path(self.string(key, default))
        return value if value.is_absolute() else (self._base / value)

    def strings(self, key: str, default: Any = _MISSING, *, min_items: int = 0) -> list[str]:
        value = self._get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._fail(key, "must be a list of non-empty strings")
        if len(value) < min_items:
            raise self._fail(key, f"needs at least {min_items} item(s)")
        return value

    def mapping(self, key: str, default: Any = _MISSING) -> Mapping[str, Any]:
        """The key's object as it is (checked where it is used: a destination's options),
        less its `_comment` keys, at every depth, as everywhere in the file."""
        value = self._get(key, default)
        if not isinstance(value, dict):
            raise self._fail(key, "must be an object")
        return _without_comments(value)

    def section(self, key: str, default: Any = _MISSING) -> _Section:
        return _Section(self._get(key, default), f"{self._path}.{key}", self._base)

    def sections(self, key: str, *, min_items: int = 0) -> list[_Section]:
        value = self._get(key, self._MISSING)
        if not isinstance(value, list) or len(value) < min_items:
            raise self._fail(key, f"must be a list of at least {min_items} object(s)")
        return [_Section(item, f"{self._path}.{key}[{i}]", self._base)
                for i, item in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            raise self._fail(unknown[0], "is not a known key (a typo?)")
