"""Capture from Apache Cassandra: commit-log segments in cdc_raw -> change events."""
