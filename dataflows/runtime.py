"""What the steps of one worker process share, built on first use (never at flow definition).

Bytewax imports the flow module in every process; connections, the schema registry, the masker
and the read-back reader are made here lazily, once per process, from the settings.
"""

from __future__ import annotations

import atexit
import threading
from functools import cached_property

from cassandra import ConsistencyLevel

from connectors.audit_trail import AuditTrail
from connectors.cassandra.expiry import ExpirySchedule, ExpirySource
from connectors.cassandra.schema import SchemaRegistry, TableSchema
from connectors.cassandra.session import open_session
from connectors.secrets import SecretResolver
from dataflows.config import PipelineSettings
from operators.image_batches import ImageBatches
from operators.masking import Masker, masked_column_types
from operators.masking.policy import load_policy
from operators.masking.token_cache import CachedTokenizer
from operators.masking.tokenizer import OpenBaoTransitTokenizer, Tokenizer
from operators.readback import RowImages, RowReader
from operators.row_ops import RowOp, RowUpsert

# Seconds between two probes of the cluster's schema version by the row-image step.
SCHEMA_PROBE_INTERVAL = 1.0


class Runtime:
    def __init__(self, settings: PipelineSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()

    @cached_property
    def secrets(self) -> SecretResolver:
        return SecretResolver()

    @cached_property
    def session(self):
        c = self.settings.cassandra
        cluster, session = open_session(
            c.contact_points, port=c.port, username=c.username,
            password=self.secrets.resolve(c.password), ca_cert=c.ca_cert,
            consistency=c.consistency)
        return session

    @cached_property
    def schemas(self) -> SchemaRegistry:
        return SchemaRegistry.from_session(self.session, self.settings.cassandra.keyspaces)

    def table(self, keyspace: str, name: str) -> TableSchema:
        found = self._named(keyspace, name)
        if found is None:
            self.schemas.refresh()
            found = self._named(keyspace, name)
        if found is None:
            raise LookupError(f"table {keyspace}.{name} is not in system_schema")
        return found

    def _named(self, keyspace: str, name: str) -> TableSchema | None:
        """The schema of the table of that name: the one in system_schema. A table dropped and
        created again keeps its old id's last schema in the registry (its old entries still
        decode), under the same name: the first of them was the old one, whose layout then
        wrote the new table's rows (a clustering order, a column since gone)."""
        named = [t for t in self.schemas.tables() if t.keyspace == keyspace and t.name == name]
        live = [t for t in named if self.schemas.exists(t.id)]
        return (live or named or [None])[-1]

    @cached_property
    def row_images(self) -> RowImages:
        level = ConsistencyLevel.name_to_value[self.settings.cassandra.consistency]
        return RowImages(RowReader(self.session, consistency=level), self._current_table,
                         refresh=self.refresh_schemas, history=self.schemas.history,
                         exists=self.schemas.exists)

    def _current_table(self, event):
        # A dropped column or a switched cdc flag makes no event the decoder cannot read, so
        # nothing else would re-read the schema: probe its version at most once a second.
        self.schemas.refresh_if_changed(max_age=SCHEMA_PROBE_INTERVAL)
        return self.schemas.table(event.table_id)

    def refresh_schemas(self) -> bool:
        """Re-read the schema now if the cluster's schema version moved (schema evolution:
        a column or table this process has not read yet); True if re-read."""
        return self.schemas.refresh_if_changed()

    @cached_property
    def expiry_schedule(self) -> ExpirySchedule:
        settings = self.settings.cassandra.ttl_expiry
        assert settings is not None
        return ExpirySchedule(self.session, settings)  # LOCAL_QUORUM: see its module

    def schedule_expiry(self, batch: list[tuple[str, RowOp]]) -> list[tuple[str, RowOp]]:
        """BATCH as it is, once every row image in it with a TTL has its re-read scheduled
        (clear keys: this runs before masking; connectors/cassandra/expiry.py)."""
        entries = [(self.table(o.keyspace, o.table), o.key, o.static, o.expires)
                   for _, o in batch if isinstance(o, RowUpsert) and o.expires is not None]
        if entries:
            self.expiry_schedule.add(entries)
        return batch

    def expiry_source(self) -> ExpirySource:
        settings = self.settings.cassandra.ttl_expiry
        assert settings is not None
        return ExpirySource(lambda: self.session, self._table_by_id, settings)

    def _table_by_id(self, table_id):
        table = self.schemas.table(table_id)
        if table is None:
            # With the id: one found missing lately (a table dropped before this process read
            # the schema, its expiry entries keyless) is not probed for again per entry.
            self.schemas.refresh(table_id)
            table = self.schemas.table(table_id)
        return table

    @cached_property
    def image_batches(self) -> ImageBatches:
        images = self.row_images
        return ImageBatches(images.operations,
                            concurrency=self.settings.batching.read_concurrency,
                            can_read_at_once=images.can_read_at_once,
                            read_at_once=images.read_at_once)

    @cached_property
    def policy(self):
        return load_policy(self.settings.masking_policy)

    @cached_property
    def audit_trail(self) -> AuditTrail:
        """What every masked batch did, column by column (connectors/audit_trail.py); synced
        at the process's exit."""
        trail = AuditTrail(self.settings.audit_root)
        atexit.register(trail.close)
        return trail

    @cached_property
    def masker(self) -> Masker:
        policy = self.policy
        tokenizer: Tokenizer = OpenBaoTransitTokenizer(policy.tokenize)
        if policy.tokenize is not None and policy.tokenize.cache_entries:
            tokenizer = CachedTokenizer(tokenizer, max_entries=policy.tokenize.cache_entries)
        return Masker(policy, self.secrets, tokenizer, audit=self.audit_trail.record)

    def masked_types(self, keyspace: str, name: str) -> dict[str, str]:
        table = self.table(keyspace, name)
        types = {c.name: c.type for c in (*table.partition_key, *table.clustering,
                                          *table.columns.values())}
        key = [c.name for c in (*table.partition_key, *table.clustering)]
        return masked_column_types(self.policy, keyspace, name, types, key)
