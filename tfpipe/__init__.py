"""Streaming tf.data input pipeline over the poster TFRecord shards."""
