"""The pipeline as a Bytewax dataflow, built from validated settings.

    capture (one partition per node's cdc_raw)
      ├─ error records, counter notices ──────────────────────────────> dead letter (JSON lines)
      └─ change events
           -> dedup (keyed by partition bucket: order per partition kept)
           -> row images (read back from Cassandra, docs/adr/0003)
              ├─ changes of a table dropped before they were read back ──> dead letter
              + the initial load, if enabled (existing rows by token range, same operations)
           -> masking (a micro-batch per call; keys too)
           -> keyed by Cassandra partition -> each destination (its own branch: PostgreSQL,
              ClickHouse, TimescaleDB), each behind its own durable spool (docs/adr/0006)

Every step after capture keeps a Cassandra partition's operations on one worker in order, and
each sink partition receives a partition's operations in that order; the sinks' version guards
make replays after recovery harmless.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.cassandra.events import ChangeEvent
from connectors.cassandra.retention import RetentionSettings
from connectors.cassandra.source import CdcSource, NodeSpec
from connectors.cassandra.start_pins import pinned
from connectors.cassandra.tail import Cursor, LocalSegmentStore, end_cursor
from connectors.dead_letter import DeadLetterSink
from connectors.health import HEALTH
from connectors.recovery_store import state_keys
from connectors.spool import SpooledSink, left_behind
from connectors.tracing import tracer
from dataflows.config import DestinationSettings, PipelineSettings
from dataflows.health import STARTUP
from dataflows.initial_load import initial_load
from dataflows.runtime import Runtime
from operators.dedup import deduplicate
from operators.mask_ops import mask_operations
from operators.masking.errors import ConfigError
from operators.readback import UnreadableChange
from operators.row_ops import RangeDelete, RowOp

log = logging.getLogger(__name__)

# Read-back levels that may miss a change written at QUORUM (1 + 2 replicas of 3 need not
# overlap): the row is then stale until its next change (ADR 0003).
_BELOW_QUORUM = frozenset({"ONE", "LOCAL_ONE"})


def build(settings: PipelineSettings, *, runtime: Runtime | None = None,
          until_caught_up: bool = False,
          initial: Mapping[str, Cursor | None] | None = None) -> Dataflow:
    runtime = runtime or Runtime(settings)
    if settings.cassandra.consistency in _BELOW_QUORUM:
        log.warning("cassandra.consistency is %s: a row read back at it may not hold the"
                    " change it was read for yet (its replicas' copies are then dropped as"
                    " duplicates), and the row stays stale in every destination until its"
                    " next change; read at QUORUM or LOCAL_QUORUM (docs/adr/0003)",
                    settings.cassandra.consistency)
    flow = Dataflow("cassandra_cdc")
    nodes = [NodeSpec(n.name, n.cdc_raw) for n in settings.cassandra.nodes]
    _refuse_nodes_left_behind(settings, f"{flow.flow_id}.capture")
    if initial is None:
        initial = _initial_cursors(settings)
    captured = op.input("capture", flow, CdcSource(
        nodes, lambda: runtime.schemas, max_records=settings.batching.max_records,
        until_caught_up=until_caught_up, initial=initial,
        retention=RetentionSettings(settings.recovery_directory,
                                    capacity_bytes=settings.cassandra.cdc_total_space),
        max_entries_per_second=settings.batching.max_changes_per_second or None))

    split = op.branch("changes_or_dead_letters", captured,
                      lambda item: isinstance(item, ChangeEvent))
    changes = split.trues
    if settings.cassandra.tables:
        # The capture decodes every CDC table of the keyspaces (a mutation may hold several);
        # only the configured ones go on.
        captured_tables = frozenset(settings.cassandra.tables)
        changes = op.filter("captured_tables", changes,
                            lambda event: f"{event.keyspace}.{event.table}" in captured_tables)

    if settings.cassandra.ttl_expiry is not None and not until_caught_up:
        # Rows whose TTL ran out, to be read again like changes (dedup passes them through).
        # Not in until_caught_up runs: that source has no end.
        changes = op.merge("with_ttl_expiry", changes,
                           op.input("ttl_expiry", flow, runtime.expiry_source()))

    deduped = deduplicate("dedup", changes)
    # Lambdas, not bound methods of runtime's lazy properties: nothing may connect while the
    # flow is being defined.
    # A micro-batch at a time: reads of different partitions in flight together
    # (operators/image_batches.py); each partition's events still in order.
    images = op.flat_map_batch("row_images", deduped,
                               lambda batch: runtime.image_batches(batch))
    # Changes whose table was dropped before they were read back cannot become operations:
    # they join the capture's dead letters, whole.
    readable = op.branch("images_or_dead_letters", images,
                         lambda item: not isinstance(item[1], UnreadableChange))
    ops = readable.trues
    op.output("dead_letter", op.merge(
        "dead_letters", split.falses, op.map("unreadable", readable.falses, lambda item: item[1])),
        _StartedDeadLetterSink(settings.dead_letter_dir))
    if settings.initial_load.enabled:
        # The rows that already exist, as (bucket, operation) too. The capture's cursors above
        # were fixed before the load reads anything: see dataflows/initial_load.py.
        ops = op.merge("with_initial_load", ops, initial_load("initial_load", flow, runtime))
    if settings.cassandra.ttl_expiry is not None:
        # Before masking: the schedule holds clear keys, in Cassandra only.
        ops = op.flat_map_batch("schedule_ttl_expiry", ops,
                                lambda batch: runtime.schedule_expiry(batch))
    masked = op.flat_map_batch(
        "mask", ops, lambda batch: _masked(runtime, batch))
    by_partition = op.key_on("by_partition", op.key_rm("unkey", masked),
                             lambda o: partition_key_of(runtime, o))
    _refuse_shared_tables(settings)
    spooled: dict[str, list[str]] = {}
    for destination in settings.destinations:
        sink = _sink(destination, runtime)
        if isinstance(sink, SpooledSink):
            spooled[f"{flow.flow_id}.{destination.name}"] = sink.list_parts()
        tables = destination_tables(destination)
        routed = by_partition if tables is None else op.filter(
            f"{destination.name}_tables", by_partition,
            lambda item, tables=tables: f"{item[1].keyspace}.{item[1].table}" in tables)
        op.output(destination.name, routed, sink)
    _refuse_spools_left_behind(settings, spooled)
    return flow


def _refuse_nodes_left_behind(settings: PipelineSettings, step_id: str) -> None:
    """Stop with a message naming them if the recovery store holds the cursor of a node the
    configuration no longer has: Bytewax refuses to start then, with a message about its
    routing map that names neither the node nor what to do."""
    if settings.recovery_directory is None or not settings.recovery_directory.is_dir():
        return
    configured = {node.name for node in settings.cassandra.nodes}
    gone = sorted(state_keys(settings.recovery_directory, step_id) - configured)
    if gone:
        raise ConfigError(
            "pipeline.cassandra.nodes",
            f"the recovery store {settings.recovery_directory} holds the capture position of "
            f"{', '.join(map(repr, gone))}, which is not configured: Bytewax cannot start with "
            "it. Configure the node again (its name unchanged), or start from an emptied "
            "recovery store (every node's position with it)")


def _refuse_shared_tables(settings: PipelineSettings) -> None:
    """Two PostgreSQL or TimescaleDB destinations on one server, database and schema that
    receive a table in common would both write it: a TimescaleDB one then makes the other's
    table a hypertable and drops its old rows by its retention."""
    from connectors.postgres import PostgresSinkSettings

    default = PostgresSinkSettings.__dataclass_fields__["schema"].default
    seen: dict[tuple, list[DestinationSettings]] = {}
    for destination in settings.destinations:
        if destination.kind not in ("postgres", "timescale"):
            continue
        schema = destination.options.get("schema", default)
        where = (destination.host.lower(), destination.port, destination.database, schema)
        mine = destination_tables(destination)
        for other in seen.get(where, []):
            theirs = destination_tables(other)
            if mine is None or theirs is None or mine & theirs:
                raise ConfigError(
                    f"pipeline.destinations.{destination.name}.options.schema",
                    f"{schema!r} in database {destination.database!r} on {destination.host}:"
                    f"{destination.port} is destination {other.name!r}'s too, and both would"
                    " write a table of it; give one another schema, or each other tables")
        seen.setdefault(where, []).append(destination)


def _refuse_spools_left_behind(settings: PipelineSettings,
                               spooled: Mapping[str, list[str]]) -> None:
    """Stop with a message if a spool this configuration never opens still holds batches: a
    destination renamed, given fewer partitions or its spool turned off while one was behind
    (docs/adr/0006). Those batches' epochs were committed, so starting would lose them."""
    left = left_behind(settings.spool_root, spooled)
    if left:
        folders = ", ".join(f"{folder} ({size} bytes)" for folder, size in left)
        raise ConfigError(
            "pipeline.destinations",
            f"spooled batches that this configuration never writes: {folders}. Their epochs "
            "were committed, so nothing else will write them to their destination. Start "
            "with the configuration that spooled them (the same destination names and "
            "partitions, spool on) until they drain, or remove those folders knowing their "
            "batches are lost")


class _StartedDeadLetterSink(DeadLetterSink):
    """The dead-letter sink. Every worker of every process builds it when the flow starts
    running (its cluster formed, its recovery loaded): that clears the health check `startup`
    (dataflows/main.py), so /readyz is not 200 before then."""

    def build(self, step_id: str, worker_index: int, worker_count: int):
        HEALTH.forget(STARTUP)
        return super().build(step_id, worker_index, worker_count)


def destination_tables(destination: DestinationSettings) -> frozenset[str] | None:
    """The tables ("keyspace.table") DESTINATION receives; None: every captured one.

    A TimescaleDB destination receives the tables with a time column
    (options.time_columns) unless it names its own, which must all have one: a hypertable
    needs its time column, and a table without one is not time-series data."""
    tables = frozenset(destination.tables) or None
    if destination.kind != "timescale":
        return tables
    with_time = frozenset(destination.options.get("time_columns", {}))
    if tables is None:
        return with_time
    for index, table in enumerate(destination.tables):
        if table not in with_time:
            raise ConfigError(f"pipeline.destinations.{destination.name}.tables[{index}]",
                              f"{table!r} has no time column in options.time_columns")
    return tables


def _initial_cursors(settings: PipelineSettings) -> dict[str, Cursor | None]:
    """Where partitions without recovery state start: a node's start_at, else start_from
    ("latest": pinned in the recovery store by the first start,
    connectors/cassandra/start_pins.py).
    Read from local files only (no connection at flow definition)."""
    initial: dict[str, Cursor | None] = {}
    latest: dict[str, Cursor | None] = {}
    for node in settings.cassandra.nodes:
        if node.start_at is not None:
            initial[node.name] = node.start_at
        elif settings.cassandra.start_from == "latest" and node.cdc_raw.is_dir():
            latest[node.name] = end_cursor(LocalSegmentStore(node.cdc_raw))
    return initial | pinned(settings.recovery_directory, latest)


def _masked(runtime: Runtime, batch: list[tuple[str, RowOp]]) -> list[tuple[str, RowOp]]:
    """A micro-batch of (bucket, operation) with every operation masked, keys kept."""
    with tracer().start_as_current_span("mask") as span:
        masked = mask_operations(runtime.masker, [operation for _, operation in batch])
        span.set_attribute("operations", len(masked))
    return [(bucket, operation) for (bucket, _), operation in zip(batch, masked, strict=True)]


def partition_key_of(runtime: Runtime, operation: RowOp) -> str:
    """A stable key per Cassandra partition (masked values: deterministic, so still stable)."""
    if isinstance(operation, RangeDelete):
        values = tuple(operation.partition_key.values())
    else:
        table = runtime.table(operation.keyspace, operation.table)
        values = tuple(operation.key[c.name] for c in table.partition_key)
    material = f"{operation.keyspace}.{operation.table}|{values!r}".encode()
    return hashlib.blake2b(material, digest_size=8).hexdigest()


def _sink(destination: DestinationSettings, runtime: Runtime):
    """The destination's sink, behind a durable spool unless the destination opts out
    (docs/adr/0006): a destination that is down then stalls neither the flow nor the others."""
    sink = _destination_sink(destination, runtime)
    if not destination.spool:
        return sink
    settings = runtime.settings
    return SpooledSink(sink, settings.spool_root,
                       max_bytes=settings.spool_max_bytes, transient=sink.transient_error)


def _destination_sink(destination: DestinationSettings, runtime: Runtime):
    path = f"pipeline.destinations.{destination.name}"
    options = dict(destination.options)
    if destination.kind == "clickhouse":
        from connectors.clickhouse import ClickHouseSink, ClickHouseSinkSettings

        progress = _checked_options(path, options, {
            "progress_interval": ClickHouseSinkSettings.check_progress_interval})
        _no_other_options(path, options)
        try:
            settings = ClickHouseSinkSettings(
                host=destination.host, port=destination.port, database=destination.database,
                user=destination.username, password_ref=destination.password,
                ca_cert=str(destination.ca_cert), partitions=destination.partitions,
                **progress)
        except ValueError as error:  # what is left is the destination's own fields
            raise ConfigError(path, str(error)) from None
        return ClickHouseSink(settings, runtime.table, runtime.masked_types,
                              schema_refresh=runtime.refresh_schemas)
    from connectors.postgres import PostgresSinkSettings

    checks = {"schema": PostgresSinkSettings.check_schema}
    if destination.kind == "postgres":  # room for HOT updates; a time-series table takes none
        checks["fillfactor"] = PostgresSinkSettings.check_fillfactor
    given = _checked_options(path, options, checks)
    try:
        settings = PostgresSinkSettings(
            host=destination.host, port=destination.port, dbname=destination.database,
            user=destination.username, password_ref=destination.password,
            sslrootcert=str(destination.ca_cert), partitions=destination.partitions, **given)
    except ValueError as error:  # what is left is the destination's own fields
        raise ConfigError(path, str(error)) from None
    if destination.kind == "postgres":
        from connectors.postgres import PostgresSink

        _no_other_options(path, options)
        return PostgresSink(settings, runtime.table, runtime.masked_types,
                            schema_refresh=runtime.refresh_schemas)
    from connectors.timescale import TimescaleSettings, TimescaleSink

    try:
        timescale = TimescaleSettings(
            time_columns=options.pop("time_columns"),
            compression=_compression(f"{path}.options.compression",
                                     options.pop("compression", {})),
            retention=options.pop("retention", {}),
            chunk_intervals=options.pop("chunk_intervals", {}),
            when_missing=options.pop("when_missing", "fail"))
    except KeyError as missing:
        raise ConfigError(f"{path}.options.{missing.args[0]}", "is required") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path}.options", str(error)) from None
    _no_other_options(path, options)
    return TimescaleSink(settings, timescale, runtime.table, runtime.masked_types,
                         schema_refresh=runtime.refresh_schemas)


def _compression(path: str, entries: object) -> dict:
    """A timescale destination's `compression` option, {"keyspace.table": {"after": interval,
    "segment_by": [column, ...]}}, as Compression settings; anything else is a ConfigError
    naming its own path."""
    from connectors.timescale import Compression

    if not isinstance(entries, dict):
        raise ConfigError(path, "must be an object of \"keyspace.table\": {\"after\": ...}")
    compression = {}
    for table, entry in entries.items():
        here = f"{path}.{table}"
        if not isinstance(entry, dict):
            raise ConfigError(here, "must be an object: {\"after\": interval, \"segment_by\":"
                                    " [column, ...]}")
        unknown = sorted(set(entry) - {"after", "segment_by"})
        if unknown:
            raise ConfigError(f"{here}.{unknown[0]}", "is not a known key")
        if "after" not in entry:
            raise ConfigError(f"{here}.after", "is required")
        segment_by = entry.get("segment_by", [])
        if not isinstance(segment_by, list):
            raise ConfigError(f"{here}.segment_by", "must be a list of column names")
        try:
            compression[table] = Compression(after=entry["after"],
                                             segment_by=tuple(segment_by))
        except (TypeError, ValueError) as error:
            raise ConfigError(here, str(error)) from None
    return compression


def _checked_options(path: str, options: dict, checks: Mapping[str, Callable[[object], None]]
                     ) -> dict:
    """The OPTIONS CHECKS names, taken out of OPTIONS, each checked by its function: a value
    it refuses (ValueError) is a ConfigError named by the option's own path."""
    given = {name: options.pop(name) for name in checks if name in options}
    for name, value in given.items():
        try:
            checks[name](value)
        except ValueError as error:
            raise ConfigError(f"{path}.options.{name}", str(error)) from None
    return given


def _no_other_options(path: str, options: dict) -> None:
    if options:
        raise ConfigError(f"{path}.options.{sorted(options)[0]}", "is not a known option")
