"""The per-test fixtures hand out isolated, usable places on the real servers, and clean up."""

from __future__ import annotations

from psycopg import sql


def test_postgres_schema_is_the_pipelines_to_write(postgres_schema, creds):
    from devstack import postgres

    table = sql.Identifier(postgres_schema, "rows")
    with postgres.connect(role="pipeline", password=creds("postgres", "pipeline").password,
                          autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(table))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(table), (1, "one"))
        assert conn.execute(sql.SQL("SELECT v FROM {}").format(table)).fetchall() == [("one",)]


def test_clickhouse_database_is_fresh_and_usable(clickhouse_database):
    from clickhouse_connect.driver.binding import quote_identifier

    from devstack import clickhouse

    client = clickhouse.connect("admin")
    database = quote_identifier(clickhouse_database)
    table = f"{database}.rows"
    assert client.query(f"SHOW TABLES FROM {database}").result_rows == []
    client.command(f"CREATE TABLE {table} (id UInt32) ENGINE = MergeTree ORDER BY id")
    client.insert(table, [[1], [2]], column_names=["id"], column_type_names=["UInt32"])
    assert client.query(f"SELECT count() FROM {table}").result_rows == [(2,)]


def test_cassandra_keyspace_is_created_then_dropped(cassandra_keyspace):
    sess, keyspace = cassandra_keyspace(8)
    sess.execute(f"CREATE TABLE {keyspace}.t (id int PRIMARY KEY)")
    sess.execute(f"INSERT INTO {keyspace}.t (id) VALUES (1)")
    assert [row.id for row in sess.execute(f"SELECT id FROM {keyspace}.t")] == [1]
    names = {row.keyspace_name for row in sess.execute(
        "SELECT keyspace_name FROM system_schema.keyspaces")}
    assert keyspace.strip('"') in names
