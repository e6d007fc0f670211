"""Benchmarks of the CDC pipeline (scripts that print figures; not part of the test suite)."""
