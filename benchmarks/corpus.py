"""A corpus of real commit-log segments for the decode benchmark, written by the local stack.

    python benchmarks/corpus.py --version 7 [--out DIR] [--target-mib 100] [--force]

What it does, on the devstack cluster writing commit-log VERSION (it must be running):

1. Refuses to start unless cdc_raw has room for the corpus with a wide margin (the stack runs
   with cdc_block_writes: a full cdc_raw would make every CDC write of every test fail).
2. Creates keyspace ``cdc_bench`` (SimpleStrategy, RF 1 per node) with three ``cdc = true``
   tables: wide partitions with a composite partition key, two clustering columns (one DESC),
   a static column, set/map/list columns, a non-frozen UDT holding a frozen tuple (orders);
   a single-key table with a frozen map, a list, a frozen UDT (customers); a narrow time series
   with a vector (metrics). Many CQL types: int, smallint, tinyint, bigint, float, double,
   decimal, boolean, text, blob, inet, uuid, timeuuid, date, timestamp, vector<float, 4>.
3. Copies the node's system_schema sstables (what Cassandra's Java reader loads the schema
   from) and saves the system_schema rows the Python SchemaRegistry is built from.
4. Writes a realistic mix through prepared statements run concurrently (full inserts, inserts
   with TTL, partial updates, collection appends and removals, UDT field updates, static
   updates, cell deletes, row deletes, range deletes, partition deletes) until the segments
   completed since it began hold TARGET MiB of durable data (the _cdc.idx offsets); each
   segment is copied as soon as its _cdc.idx says COMPLETED.
5. Drops the keyspace (also when interrupted).

The node's cdc_raw is only ever read: segments are copied, never moved or deleted there. The
segments this run filled stay in cdc_raw (they contain CDC data) until whoever consumes that
directory deletes them; the run prints how much space they hold.

Layout of the corpus (written as DIR.partial, renamed to DIR when complete):
    segments/CommitLog-<v>-<id>.log and _cdc.idx   COMPLETED segments, copies
    schema/system_schema/...                        copy of the node's system_schema sstables
    schema_rows.json                                system_schema rows (connectors.cassandra.schema)
    corpus.json                                     what was written, when, how much
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import ipaddress
import json
import logging
import random
import shutil
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cassandra.concurrent import execute_concurrent  # noqa: E402

from devstack import cassandra as stack_cassandra  # noqa: E402
from devstack.cassandra_config import (  # noqa: E402
    CASSANDRA_VERSION,
    CLUSTERS,
    current_nodes,
)
from devstack.paths import stack_home  # noqa: E402

log = logging.getLogger("benchmarks.corpus")

KEYSPACE = "cdc_bench"
MIB = 1024 * 1024
CHUNK = 4000  # statements between two looks at cdc_raw
CONCURRENCY = 96
# cdc_raw must stay well below cdc_total_space: at most this share of it, counting what is
# already there plus the corpus and a margin for the segment in use and other writers.
MAX_CDC_SHARE = 0.75
# Above this share during the run, writing stops at once.
ABORT_CDC_SHARE = 0.85


def default_corpus_dir(version: int) -> Path:
    return stack_home() / "bench" / f"corpus-v{version}"


def corpus_ready(path: Path) -> bool:
    return (path / "corpus.json").is_file()


# --- schema and workload ------------------------------------------------------------------------

DDL = [
    f"CREATE KEYSPACE {KEYSPACE} WITH replication = "
    "{'class': 'SimpleStrategy', 'replication_factor': 1}",
    f"CREATE TYPE {KEYSPACE}.address (street text, city text, zip int, "
    "geo frozen<tuple<double, double>>)",
    f"""CREATE TABLE {KEYSPACE}.orders (
        shop_id int, day date, order_id timeuuid, line smallint,
        shop_name text STATIC,
        customer_id uuid, sku text, qty int, unit_price decimal, total double, paid boolean,
        placed_at timestamp, ip inet, note text, payload blob,
        tags set<text>, attrs map<text, text>, history list<int>, ship_to address,
        PRIMARY KEY ((shop_id, day), order_id, line)
    ) WITH CLUSTERING ORDER BY (order_id DESC, line ASC) AND cdc = true""",
    f"""CREATE TABLE {KEYSPACE}.customers (
        customer_id uuid PRIMARY KEY, email text, name text, age tinyint, balance bigint,
        vip boolean, score float, signup timestamp, last_seen timestamp,
        prefs frozen<map<text, int>>, phones list<text>, home frozen<address>
    ) WITH cdc = true""",
    f"""CREATE TABLE {KEYSPACE}.metrics (
        sensor text, bucket int, ts timestamp, value double, quality smallint,
        labels map<text, text>, embedding vector<float, 4>,
        PRIMARY KEY ((sensor, bucket), ts)
    ) WITH cdc = true""",
]

# Plain literals (the keyspace is the constant above): bound parameters carry every value.
STATEMENTS = {
    "order_insert": "INSERT INTO cdc_bench.orders (shop_id, day, order_id, line, customer_id, "
                    "sku, qty, unit_price, total, paid, placed_at, ip, note, payload, tags, attrs, "
                    "history, ship_to) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "order_insert_ttl": "INSERT INTO cdc_bench.orders (shop_id, day, order_id, line, "
                        "customer_id, sku, qty, unit_price, total, paid, placed_at, note) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?",
    "order_update": "UPDATE cdc_bench.orders SET qty = ?, paid = ?, total = ?, tags = tags + ?, "
                    "attrs[?] = ? WHERE shop_id = ? AND day = ? AND order_id = ? AND line = ?",
    "order_append": "UPDATE cdc_bench.orders SET history = history + ?, ship_to.city = ? "
                    "WHERE shop_id = ? AND day = ? AND order_id = ? AND line = ?",
    "order_remove_tag": "UPDATE cdc_bench.orders SET tags = tags - ? "
                        "WHERE shop_id = ? AND day = ? AND order_id = ? AND line = ?",
    "order_static": "UPDATE cdc_bench.orders SET shop_name = ? WHERE shop_id = ? AND day = ?",
    "order_cell_delete": "DELETE note, payload FROM cdc_bench.orders "
                         "WHERE shop_id = ? AND day = ? AND order_id = ? AND line = ?",
    "order_row_delete": "DELETE FROM cdc_bench.orders "
                        "WHERE shop_id = ? AND day = ? AND order_id = ? AND line = ?",
    "order_range_delete": "DELETE FROM cdc_bench.orders WHERE shop_id = ? AND day = ? "
                          "AND order_id = ? AND line >= ? AND line <= ?",
    "order_prefix_delete": "DELETE FROM cdc_bench.orders WHERE shop_id = ? AND day = ? "
                           "AND order_id = ?",
    "order_partition_delete": "DELETE FROM cdc_bench.orders WHERE shop_id = ? AND day = ?",
    "customer_insert": "INSERT INTO cdc_bench.customers (customer_id, email, name, age, balance, "
                       "vip, score, signup, last_seen, prefs, phones, home) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "customer_update": "UPDATE cdc_bench.customers SET last_seen = ?, balance = ?, "
                       "phones = phones + ? WHERE customer_id = ?",
    "customer_null": "UPDATE cdc_bench.customers SET score = null, vip = ? WHERE customer_id = ?",
    "customer_delete": "DELETE FROM cdc_bench.customers WHERE customer_id = ?",
    "metric_insert": "INSERT INTO cdc_bench.metrics (sensor, bucket, ts, value, quality, labels, "
                     "embedding) VALUES (?, ?, ?, ?, ?, ?, ?)",
}
# Relative frequencies: mostly inserts, as in an OLTP workload, with every kind of delete.
MIX = {
    "order_insert": 34, "order_insert_ttl": 4, "order_update": 9, "order_append": 4,
    "order_remove_tag": 2, "order_static": 2, "order_cell_delete": 2, "order_row_delete": 3,
    "order_range_delete": 1, "order_prefix_delete": 1, "order_partition_delete": 1,
    "customer_insert": 12, "customer_update": 6, "customer_null": 1, "customer_delete": 1,
    "metric_insert": 17,
}

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee "
         "zulu amber coral ivory jade onyx pearl ruby topaz").split()
CITIES = ("Lisbon", "Porto", "Oslo", "Kyiv", "Lagos", "Lima", "Osaka", "Perth", "Quito", "Riga")


class Workload:
    """Deterministic (seeded) statement generator; remembers recent keys to update and delete."""

    def __init__(self, seed: int = 20240917):
        self.rng = random.Random(seed)
        self.orders: deque[tuple] = deque(maxlen=20000)
        self.partitions: deque[tuple] = deque(maxlen=2000)
        self.customers: deque[uuid.UUID] = deque(maxlen=20000)
        self.kinds = list(MIX)
        self.weights = [MIX[k] for k in self.kinds]
        self.base_day = dt.date(2025, 1, 1)
        self.clock_ns = time.time_ns()

    def _words(self, lo: int, hi: int) -> str:
        return " ".join(self.rng.choices(WORDS, k=self.rng.randint(lo, hi)))

    def _timeuuid(self) -> uuid.UUID:
        # A version-1 UUID from a strictly increasing clock (uuid1() would be slower).
        self.clock_ns += self.rng.randint(1000, 50000)
        ticks = self.clock_ns // 100 + 0x01B21DD213814000
        clock_seq = self.rng.getrandbits(14)
        node = self.rng.getrandbits(48)
        return uuid.UUID(fields=(ticks & 0xFFFFFFFF, (ticks >> 32) & 0xFFFF,
                                 ((ticks >> 48) & 0x0FFF) | 0x1000,
                                 (clock_seq >> 8) | 0x80, clock_seq & 0xFF, node), version=1)

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock_ns / 1e9, dt.UTC)

    def _address(self) -> tuple:
        r = self.rng
        return (f"{r.randint(1, 999)} {self._words(1, 3)} street", r.choice(CITIES),
                r.randint(1000, 99999), (round(r.uniform(-90, 90), 6),
                                         round(r.uniform(-180, 180), 6)))

    def _order_key(self) -> tuple:
        if self.orders and self.rng.random() < 0.9:
            return self.rng.choice(self.orders)
        return self._new_order_key()

    def _new_order_key(self) -> tuple:
        r = self.rng
        if self.partitions and r.random() < 0.8:
            shop, day = r.choice(self.partitions)
        else:
            shop, day = r.randint(1, 500), self.base_day + dt.timedelta(days=r.randint(0, 365))
            self.partitions.append((shop, day))
        key = (shop, day, self._timeuuid(), r.randint(0, 4))
        self.orders.append(key)
        return key

    def _customer(self) -> uuid.UUID:
        if self.customers and self.rng.random() < 0.9:
            return self.rng.choice(self.customers)
        c = uuid.UUID(int=self.rng.getrandbits(128), version=4)
        self.customers.append(c)
        return c

    def next(self) -> tuple[str, tuple]:
        r = self.rng
        kind = r.choices(self.kinds, self.weights)[0]
        now = self._now()
        if kind == "order_insert" or kind == "order_insert_ttl":
            shop, day, oid, line = self._new_order_key()
            qty = r.randint(1, 20)
            price = decimal.Decimal(r.randint(99, 99999)).scaleb(-2)
            common = (shop, day, oid, line, self._customer(), f"SKU-{r.randint(1, 50000):06d}",
                      qty, price, float(price) * qty, r.random() < 0.7, now)
            if kind == "order_insert_ttl":
                return kind, common + (self._words(2, 12), r.randint(3600, 86400 * 30))
            return kind, common + (
                ipaddress.ip_address(r.getrandbits(32)) if r.random() < 0.8 else
                ipaddress.ip_address(r.getrandbits(128)),
                self._words(3, 30), r.randbytes(r.choice((0, 16, 64, 128, 256))),
                set(r.sample(WORDS, r.randint(0, 4))),
                {w: self._words(1, 3) for w in r.sample(WORDS, r.randint(0, 3))},
                [r.randint(0, 1000) for _ in range(r.randint(0, 5))],
                self._address() if r.random() < 0.8 else None)
        if kind == "order_update":
            return kind, (r.randint(1, 20), r.random() < 0.5, r.uniform(1, 5000),
                          set(r.sample(WORDS, r.randint(1, 2))), r.choice(WORDS),
                          self._words(1, 2)) + self._order_key()
        if kind == "order_append":
            return kind, ([r.randint(0, 1000) for _ in range(r.randint(1, 3))],
                          r.choice(CITIES)) + self._order_key()
        if kind == "order_remove_tag":
            return kind, ({r.choice(WORDS)},) + self._order_key()
        if kind == "order_static":
            shop, day, _, _ = self._order_key()
            return kind, (f"Shop {shop} {self._words(1, 2)}", shop, day)
        if kind in ("order_cell_delete", "order_row_delete"):
            return kind, self._order_key()
        if kind == "order_range_delete":
            shop, day, oid, _ = self._order_key()
            lo = r.randint(0, 3)
            return kind, (shop, day, oid, lo, lo + r.randint(0, 2))
        if kind == "order_prefix_delete":
            return kind, self._order_key()[:3]
        if kind == "order_partition_delete":
            if self.partitions:
                return kind, r.choice(self.partitions)
            return kind, self._order_key()[:2]
        if kind == "customer_insert":
            c = uuid.UUID(int=r.getrandbits(128), version=4)
            self.customers.append(c)
            name = self._words(2, 3).title()
            return kind, (c, f"{name.replace(' ', '.').lower()}@example.org", name,
                          r.randint(18, 99), r.randint(-10**6, 10**9), r.random() < 0.1,
                          r.uniform(0, 100), now - dt.timedelta(days=r.randint(0, 3000)), now,
                          {w: r.randint(0, 9) for w in r.sample(WORDS, r.randint(0, 4))},
                          [f"+351 9{r.randint(10000000, 99999999)}"
                           for _ in range(r.randint(0, 2))],
                          self._address() if r.random() < 0.9 else None)
        if kind == "customer_update":
            return kind, (now, r.randint(-10**6, 10**9),
                          [f"+44 7{r.randint(100000000, 999999999)}"], self._customer())
        if kind == "customer_null":
            return kind, (r.random() < 0.5, self._customer())
        if kind == "customer_delete":
            return kind, (self._customer(),)
        # metric_insert
        return kind, (f"sensor-{r.randint(1, 2000):05d}", r.randint(0, 23), now,
                      r.gauss(20, 5), r.randint(0, 100),
                      {"unit": r.choice(("C", "F", "kPa", "%")), "site": r.choice(CITIES)}
                      if r.random() < 0.5 else None,
                      [r.uniform(-1, 1) for _ in range(4)])


# --- cdc_raw, read-only -------------------------------------------------------------------------

def _segment_id(name: str) -> int | None:
    # CommitLog-<version>-<id>.log
    if not (name.startswith("CommitLog-") and name.endswith(".log")):
        return None
    try:
        return int(name[:-4].rsplit("-", 1)[1])
    except ValueError:
        return None


def _dir_bytes(path: Path) -> int:
    total = 0
    for p in path.iterdir():
        try:
            total += p.stat().st_size
        except FileNotFoundError:  # consumed meanwhile
            pass
    return total


def _max_segment_id(*dirs: Path) -> int:
    ids = [i for d in dirs for p in d.iterdir() if (i := _segment_id(p.name)) is not None]
    return max(ids, default=0)


def _completed_offset(idx: Path) -> int | None:
    """The durable offset if the _cdc.idx says COMPLETED, else None (in use, empty, missing)."""
    try:
        text = idx.read_text()
    except FileNotFoundError:
        return None
    lines = text.split()
    if len(lines) == 2 and lines[1] == "COMPLETED":
        return int(lines[0])
    return None


def _cdc_total_space(node_home: Path) -> int:
    """cdc_total_space of the node's cassandra.yaml (devstack writes it as JSON) in bytes."""
    config = json.loads((node_home / "cassandra.yaml").read_text().split("\n", 1)[1])
    value = config["cdc_total_space"]
    units = {"MiB": MIB, "GiB": 1024 * MIB, "KiB": 1024}
    for unit, factor in units.items():
        if value.endswith(unit):
            return int(value[: -len(unit)]) * factor
    raise ValueError(f"cannot read cdc_total_space {value!r}")


class SegmentCopier:
    """Copies COMPLETED segments newer than a baseline from cdc_raw into the corpus (read-only)."""

    def __init__(self, cdc_raw: Path, baseline: int, out: Path):
        self.cdc_raw = cdc_raw
        self.baseline = baseline
        self.out = out
        self.copied: dict[int, int] = {}  # segment id -> durable offset
        self.vanished: list[str] = []
        out.mkdir(parents=True, exist_ok=True)

    @property
    def durable_bytes(self) -> int:
        return sum(self.copied.values())

    def poll(self) -> None:
        for log_file in sorted(self.cdc_raw.glob("CommitLog-*.log")):
            seg = _segment_id(log_file.name)
            if seg is None or seg <= self.baseline or seg in self.copied:
                continue
            idx = log_file.with_name(log_file.name[:-4] + "_cdc.idx")
            offset = _completed_offset(idx)
            if offset is None:
                continue
            try:
                # A COMPLETED segment is never written again: a plain copy is a consistent one.
                shutil.copyfile(log_file, self.out / log_file.name)
                shutil.copyfile(idx, self.out / idx.name)
            except FileNotFoundError:
                # Someone consuming cdc_raw deleted it first: note it, do without it.
                self.vanished.append(log_file.name)
                self.copied[seg] = 0
                for p in (self.out / log_file.name, self.out / idx.name):
                    p.unlink(missing_ok=True)
                continue
            self.copied[seg] = offset


# --- schema copies ------------------------------------------------------------------------------

def _copy_system_schema(data_dir: Path, dest: Path, attempts: int = 10) -> None:
    """Copy the node's system_schema sstables (read-only there).

    Schema changes flush system_schema (5.0's default), so the sstables hold the keyspace just
    created. A compaction may remove files while we copy, and a flush in progress leaves a
    transaction log: either way try again.
    """
    source = data_dir / "system_schema"
    for attempt in range(attempts):
        shutil.rmtree(dest, ignore_errors=True)
        try:
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("snapshots", "backups"))
        except (FileNotFoundError, shutil.Error) as error:
            log.info("system_schema changed while copying (%s); again", error)
            time.sleep(1 + attempt)
            continue
        if not list(dest.rglob("*_txn_*.log")):
            return
        log.info("system_schema has a transaction in progress; copying again")
        time.sleep(1 + attempt)
    raise RuntimeError(f"could not get a stable copy of {source}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):  # dropped_time: a CQL timestamp, milliseconds
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return [_jsonable(v) for v in value]  # lists, sets, the driver's SortedSet
    return value


def save_schema_rows(session, path: Path) -> None:
    from connectors.cassandra.schema import fetch_schema_rows

    rows = fetch_schema_rows(session, [KEYSPACE])
    payload = {name: [_jsonable(dict(r)) for r in getattr(rows, name)]
               for name in ("all_tables", "tables", "views", "columns", "types",
                            "dropped_columns")}
    path.write_text(json.dumps(payload, indent=1) + "\n")


def load_schema_rows(path: Path):
    """The saved rows as connectors.cassandra.schema.SchemaRows (ids stay strings: the schema
    module accepts them; dropped_time is milliseconds, which it accepts too)."""
    from connectors.cassandra.schema import SchemaRows

    payload = json.loads(path.read_text())
    return SchemaRows(**payload)


# --- the build ----------------------------------------------------------------------------------

class _quiet_schema_warnings:
    """DROP KEYSPACE of a keyspace with CDC tables makes the driver log a benign warning."""

    def __enter__(self):
        self.logger = logging.getLogger("cassandra")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def build(version: int, out: Path, *, target_mib: float = 100.0, seed: int = 20240917) -> Path:
    if version not in CLUSTERS:
        raise SystemExit(f"--version is one of {sorted(CLUSTERS)}")
    node = current_nodes(CLUSTERS[version])[0]
    cdc_raw, commitlog = node.folder("cdc_raw"), node.folder("commitlog")
    limit = _cdc_total_space(node.home)
    target = int(target_mib * MIB)
    used = _dir_bytes(cdc_raw)
    # Segments are whole MiB on disk while durable data is a bit less: count 15% more, plus
    # the segment in use.
    needed = int(target * 1.15) + 2 * MIB
    if used + needed > MAX_CDC_SHARE * limit:
        raise SystemExit(
            f"refusing to build: {node.name}'s cdc_raw holds {used / MIB:.0f} MiB of its "
            f"{limit / MIB:.0f} MiB cdc_total_space and the corpus needs ~{needed / MIB:.0f} MiB "
            f"more (limit {MAX_CDC_SHARE:.0%}); with cdc_block_writes a full cdc_raw rejects "
            "every CDC write. Free space there first (its consumer deletes COMPLETED segments).")

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "schema").mkdir(parents=True)
    log.info("v%d: building %s (target %.0f MiB durable; cdc_raw %.0f/%.0f MiB in use)",
             version, out, target_mib, used / MIB, limit / MIB)

    cluster, session = stack_cassandra.connect(version, "admin")
    written: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    started = time.time()
    copier = None
    try:
        with _quiet_schema_warnings():
            session.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}", timeout=120)
        for statement in DDL:
            session.execute(statement, timeout=120)
        cluster.control_connection.wait_for_schema_agreement()
        prepared = {k: session.prepare(q) for k, q in STATEMENTS.items()}
        save_schema_rows(session, partial / "schema_rows.json")
        _copy_system_schema(node.folder("data"), partial / "schema" / "system_schema")

        baseline = _max_segment_id(cdc_raw, commitlog)
        copier = SegmentCopier(cdc_raw, baseline, partial / "segments")
        workload = Workload(seed)
        last_report = time.monotonic()
        while copier.durable_bytes < target:
            in_use = _dir_bytes(cdc_raw)
            if in_use > ABORT_CDC_SHARE * limit:
                raise RuntimeError(f"cdc_raw reached {in_use / MIB:.0f} MiB of "
                                   f"{limit / MIB:.0f} MiB: stopping before it fills")
            batch = [workload.next() for _ in range(CHUNK)]
            results = execute_concurrent(
                session, [(prepared[k], p) for k, p in batch], concurrency=CONCURRENCY,
                raise_on_first_error=False)
            for (kind, _), (ok, result) in zip(batch, results, strict=True):
                if ok:
                    written[kind] += 1
                else:
                    failures[kind] += 1
                    if sum(failures.values()) <= 3:
                        log.warning("%s failed: %s", kind, result)
            if sum(failures.values()) > 100:
                raise RuntimeError(f"too many failed writes: {dict(failures)}")
            copier.poll()
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                log.info("v%d: %d statements, %d segments copied, %.1f MiB durable",
                         version, sum(written.values()), len(copier.copied),
                         copier.durable_bytes / MIB)
        if copier.vanished:
            log.warning("%d segments were deleted from cdc_raw before they could be copied: %s",
                        len(copier.vanished), copier.vanished)
    finally:
        try:
            with _quiet_schema_warnings():
                session.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}", timeout=120)
        finally:
            cluster.shutdown()

    segments = sorted((partial / "segments").glob("CommitLog-*.log"))
    manifest = {
        "cassandra": CASSANDRA_VERSION,
        "commitlog_version": version,
        "cluster": CLUSTERS[version].name,
        "node": node.name,
        "storage_compatibility_mode": CLUSTERS[version].storage_compatibility_mode,
        "keyspace": KEYSPACE,
        "seed": seed,
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "write_seconds": round(time.time() - started, 1),
        "segments": len(segments),
        "file_bytes": sum(p.stat().st_size for p in segments),
        "durable_bytes": copier.durable_bytes,
        "segments_vanished_before_copy": copier.vanished,
        "statements": dict(sorted(written.items())),
        "failed_statements": dict(sorted(failures.items())),
        "ddl": DDL,
    }
    (partial / "corpus.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    held = sum((cdc_raw / f"CommitLog-{version}-{s}.log").stat().st_size
               for s in copier.copied if (cdc_raw / f"CommitLog-{version}-{s}.log").exists())
    log.info("v%d: corpus ready in %s: %d segments, %.1f MiB durable, %d statements in %.0f s. "
             "The segments this run filled hold %.0f MiB of %s until its consumer deletes them.",
             version, out, len(segments), copier.durable_bytes / MIB, sum(written.values()),
             time.time() - started, held / MIB, cdc_raw)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", type=int, required=True, choices=sorted(CLUSTERS))
    parser.add_argument("--out", type=Path, help="corpus folder (default .stack/bench/corpus-v<N>)")
    parser.add_argument("--target-mib", type=float, default=100.0,
                        help="durable MiB of completed segments to collect (default 100)")
    parser.add_argument("--force", action="store_true", help="rebuild an existing corpus")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = args.out or default_corpus_dir(args.version)
    if corpus_ready(out) and not args.force:
        print(f"{out} exists (use --force to rebuild it)")
        return
    build(args.version, out, target_mib=args.target_mib)


if __name__ == "__main__":
    main()
