"""Failure injection for the local stack and the pipeline: scripts, run as such."""
