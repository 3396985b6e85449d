"""Apache Beam jobs that turn the poster dataset into TFRecord shards."""
