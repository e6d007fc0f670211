"""The project's local stack: real Cassandra, PostgreSQL, ClickHouse and OpenBao on loopback.

Everything it installs, generates and runs lives under one folder (``paths.stack_home()``), so
``python -m devstack down`` followed by deleting that folder leaves the machine as it was.
"""
