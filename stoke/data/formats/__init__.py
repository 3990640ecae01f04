"""Record formats: TFRecord, Parquet, ArrayRecord and WebDataset tar shards, local or remote.

One module per format, ``remote.py`` for every path (local files and fsspec URLs),
``example_proto.py`` for ``tf.train.Example`` without TensorFlow, ``shards.py`` for what the
shard-based formats (TFRecord, tar) share: an index of record byte spans per shard (all at
once, or lazily shard by shard past 1,024 files), which makes every record addressable as
``(shard, record)``; ``skips.py`` for the count of records skipped (``on_error="skip"``)
across processes. The epoch order of those
formats is :mod:`stoke.data.shard_plan`. Optional dependencies (pyarrow, array_record, fsspec's
HTTP/GCS/S3 back ends) are imported only inside the module that needs them.
"""
