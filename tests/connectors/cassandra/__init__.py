"""Tests of connectors/cassandra."""
