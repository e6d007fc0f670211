"""Where data enters and leaves the pipeline: Cassandra capture, sinks, secret references."""
