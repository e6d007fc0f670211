"""One destination down does not stop the others (docs/adr/0006): the pipeline runs with
PostgreSQL, ClickHouse and TimescaleDB under a continuous workload, PostgreSQL becomes
unreachable for 60 s, ClickHouse keeps receiving rows meanwhile, PostgreSQL catches up
afterwards, all three end equal to Cassandra through the same masking, and the pipeline's memory
stays bounded. (The TimescaleDB destination, plain PostgreSQL in CI, reaches the server directly:
it is another destination, not the one cut.)

The shared PostgreSQL server is never stopped: the pipeline reaches it through a TCP proxy in
this test (byte forwarding, so TLS passes through untouched; it listens on 127.0.0.1, the name
the server's certificate carries), and the proxy is cut: listener and connections closed.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.request

import pytest
from psycopg import sql

from devstack.bytewax_cluster import free_ports
from tests.dataflows.kill_harness import (
    TABLE_DDL,
    VISITS_DDL,
    Pipeline,
    Workload,
    cassandra_rows,
    clickhouse_query,
    clickhouse_rows,
    converge,
    destination_rows,
    difference,
    drop_clickhouse_tables,
    every_destination,
)
from tests.dataflows.pipeline_files import (
    captured_table,
    cassandra_section,
    clickhouse_destination,
    postgres_destination,
    timescale_destination,
)

OUTAGE = 60.0
RSS_GROWTH_LIMIT = 50 * 1024 * 1024
CONVERGE = 300.0


class CuttableProxy:
    """127.0.0.1:<free port> -> 127.0.0.1:TARGET, byte for byte. cut() closes the listener and
    every connection (the port refuses connections); restore() listens on the port again."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_ports(1)[0]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            with self._lock:
                if self._listener is not listener:
                    return
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                _drop(sock)
            with self._lock:
                self._sockets -= {source, target}

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = list(self._sockets), set()
        if listener is not None:
            listener.close()
        for sock in sockets:
            _drop(sock)


def _drop(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):  # noqa: SIM115 - read at once
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def postgres_count(schema: str, keyspace: str) -> int:
    from devstack import postgres

    try:
        with postgres.connect(role="admin") as conn:
            return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(schema, f"{keyspace}__patients__current"))).fetchone()[0]
    except Exception:  # noqa: BLE001 - the view appears with the sink's first batch
        return 0


def clickhouse_count(keyspace: str) -> int:
    rows = clickhouse_query(keyspace, "count()")
    return rows[0][0] if rows else 0


def spool_metrics(port: int) -> dict[str, float]:
    """cdc_spool_* samples of the postgres destination: summed over its partitions, the
    lag their maximum."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found: dict[str, float] = {}
    for name, labels, value in re.findall(r"^(cdc_spool_\w+)\{([^}]*)\} (\S+)$", text, re.M):
        if 'destination="' in labels and 'postgres"' in labels and \
                not name.endswith("_created"):
            merge = max if name.endswith("_lag_seconds") else (lambda a, b: a + b)
            found[name] = merge(found.get(name, 0.0), float(value))
    return found


def probes(port: int) -> tuple[tuple[int, dict], tuple[int, dict]]:
    """(status, checks) of /healthz and of /readyz."""
    import json
    import urllib.error

    found = []
    for path in ("/healthz", "/readyz"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                found.append((answer.status, json.loads(answer.read())["checks"]))
        except urllib.error.HTTPError as error:
            found.append((error.code, json.loads(error.read())["checks"]))
    return found[0], found[1]


@pytest.mark.slow
def test_postgres_down_for_a_minute_stalls_nothing_and_loses_nothing(
    tmp_path, cassandra_clusters, cassandra_keyspace, postgres_schema, timescale_schema,
    openbao_env
):
    table = captured_table(cassandra_keyspace, cassandra_clusters, TABLE_DDL)
    sess, ks, bare, info, node = table.session, table.keyspace, table.bare, table.info, table.node()
    sess.execute(VISITS_DDL.format(ks=ks))
    proxy = CuttableProxy(54329)
    proxy.restore()
    ca = openbao_env["BAO_CACERT"]
    api_port, health_port = free_ports(2)
    pipeline = Pipeline(tmp_path, bare, {
        "cassandra": cassandra_section(info, bare, node, ca),
        "batching": {"max_records": 100},
        "destinations": [{**postgres_destination(postgres_schema, ca), "port": proxy.port},
                         clickhouse_destination(ca),
                         timescale_destination(timescale_schema, ca, {f"{bare}.visits": "at"})],
    }, {**openbao_env, "BYTEWAX_DATAFLOW_API_ENABLED": "true",
        "BYTEWAX_DATAFLOW_API_PORT": str(api_port), "CDC_HEALTH_PORT": str(health_port)})
    workload = Workload(sess, ks, visits=True)
    samples: list[tuple[float, int, int, int]] = []  # (seconds into the outage, rss, ch, pg)
    try:
        pipeline.start(1)
        workload.start()
        deadline = time.monotonic() + 120
        while not (postgres_count(postgres_schema, bare) and clickhouse_count(bare)):
            assert time.monotonic() < deadline, "no rows reached both destinations"
            time.sleep(1)
        time.sleep(5)  # steady state: connections open, tables made, caches warm
        process = pipeline._processes[0]
        rss_before = rss_bytes(process.pid)

        proxy.cut()
        cut_at = time.monotonic()
        during: dict[str, float] = {}
        while (elapsed := time.monotonic() - cut_at) < OUTAGE:
            samples.append((elapsed, rss_bytes(process.pid), clickhouse_count(bare),
                            postgres_count(postgres_schema, bare)))
            if elapsed > OUTAGE - 10 and not during:
                during = spool_metrics(api_port)
                probes_during = probes(health_port)
            time.sleep(2)
        proxy.restore()
        restored_at = time.monotonic()
        assert process.poll() is None, "the pipeline died during the outage"

        time.sleep(10)  # the workload goes on while PostgreSQL catches up
        workload.stop()
        masker = pipeline.masker()
        caught_up_after = None
        while time.monotonic() - restored_at < CONVERGE:
            expected = cassandra_rows(sess, ks, bare, "patients", masker)
            visits = cassandra_rows(sess, ks, bare, "visits", masker)
            in_postgres = sorted(destination_rows(postgres_schema, bare))
            if in_postgres == expected and caught_up_after is None:
                caught_up_after = time.monotonic() - restored_at
            in_clickhouse = sorted(clickhouse_rows(bare))
            in_timescale = sorted(destination_rows(timescale_schema, bare, "visits"))
            if caught_up_after is not None and in_clickhouse == expected and \
                    in_timescale == visits:
                break
            time.sleep(2)
        after = spool_metrics(api_port)
        probes_after = probes(health_port)
        # Every destination table at the end, each row once (the loop above times the
        # catch-up on three of them).
        readers = every_destination(postgres_schema, timescale_schema, bare)
        final_expected, final_found = converge(sess, ks, bare, masker, readers, timeout=60)
    finally:
        workload.stop()
        pipeline.close()
        proxy.cut()
        drop_clickhouse_tables(bare)

    rss_growth = max(rss for _, rss, _, _ in samples) - rss_before
    clickhouse_counts = [ch for _, _, ch, _ in samples]
    postgres_counts = {pg for _, _, _, pg in samples}
    print(f"outage {OUTAGE:.0f}s: rss before {rss_before / 2**20:.1f} MiB, growth "
          f"{rss_growth / 2**20:.1f} MiB; clickhouse rows {clickhouse_counts[0]} -> "
          f"{clickhouse_counts[-1]}; postgres frozen at {sorted(postgres_counts)}; spool during "
          f"{during}; postgres caught up {caught_up_after} s after restore")
    assert expected, "the workload left rows in Cassandra"
    # PostgreSQL really was cut off, and ClickHouse kept going all along.
    assert len(postgres_counts) == 1, postgres_counts
    half = len(clickhouse_counts) // 2
    assert clickhouse_counts[half] > clickhouse_counts[0], clickhouse_counts
    assert clickhouse_counts[-1] > clickhouse_counts[half], clickhouse_counts
    # Back-pressure, not buffering: PostgreSQL's backlog waits on disk.
    assert during.get("cdc_spool_undrained_bytes", 0) > 0, during
    assert during.get("cdc_spool_drain_lag_seconds", 0) > OUTAGE / 2, during
    assert rss_growth < RSS_GROWTH_LIMIT, f"RSS grew {rss_growth / 2**20:.1f} MiB"
    # Caught up, nothing lost, nothing extra, in both.
    assert caught_up_after is not None, difference(expected, in_postgres, str(pipeline.log_path))
    assert in_clickhouse == expected, f"ClickHouse differs; see {pipeline.log_path}"
    assert visits and in_timescale == visits, \
        f"TimescaleDB: {difference(visits, in_timescale, str(pipeline.log_path))}"
    for destination, rows in final_found.items():
        problem = difference(final_expected[readers[destination][0]], rows,
                             str(pipeline.log_path))
        assert problem is None, f"{destination}, after the outage: {problem}"
    assert after.get("cdc_spool_undrained_bytes") == 0, after
    assert "transient" in pipeline.log_text()  # the PostgreSQL sink saw the outage
    # The probes: alive throughout; not ready while PostgreSQL was cut, naming it; ready after.
    (live, _), (ready, checks) = probes_during
    assert live == 200 and ready == 503, checks
    troubled = {name for name, check in checks.items() if check["state"] != "ok"}
    assert troubled and all(name.startswith("destination cassandra_cdc.postgres/")
                            for name in troubled), checks
    assert probes_after[0][0] == 200 and probes_after[1][0] == 200, probes_after
