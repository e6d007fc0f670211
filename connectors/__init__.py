"""Where data enters and leaves the pipeline: Cassandra capture, destination sinks, secret stores."""
