"""The public constructors of record-format pipelines: ``from_tfrecord``, ``from_parquet``,
``from_array_record``, ``from_webdataset``. Each resolves the paths (lazily for brace
patterns), builds the format's source and wraps it in a :class:`~stoke.data.pipeline.Pipeline`;
with ``on_error="skip"`` the pipeline's first step drops the records the source skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stoke.data.formats.base import check_on_error, not_skipped
from stoke.data.pipeline import Pipeline
from stoke.data.program import FilterStep


def _pipeline(source: Any, on_error: str) -> Pipeline:
    steps = (FilterStep(not_skipped),) if on_error == "skip" else ()
    return Pipeline(source, steps=steps)


def from_tfrecord(paths: Any, *, on_error: str = "raise", cycle_length: int = 16,
                  block_records: int | None = None, buffer_size: int = 1024,
                  storage_options: dict | None = None, index: str = "auto") -> Pipeline:
    """The records of TFRecord files (a glob, a brace pattern ``train-{00000..01023}``, a
    list; local or any fsspec URL: ``gs://``, ``s3://``, ``https://``) as ``bytes``; parse
    them with :func:`stoke.parse_example` in ``map``. No TensorFlow needed.

    The files are indexed (their length headers), all at the first ``len()`` or
    iteration (``index="eager"``, the default up to 1,024 files), or each when it is first
    read (``index="lazy"``, the default past 1,024 files: the first batch waits for
    ``cycle_length`` files, not all of them; ``len()`` is then unknown, and ``cache()``,
    ``mix()`` and ``bucket_by_length`` need ``index="eager"``). The epoch order is shard-based:
    shards permuted by ``(seed, epoch)`` when shuffled, ``cycle_length`` of them read
    round-robin, ``block_records`` records at a time (default 1 for local files, 16 for
    remote ones: a block is one request), then a seeded shuffle window of ``buffer_size``
    records that moves whole blocks (see :mod:`stoke.data.shard_plan`). ``on_error="skip"`` drops (and
    counts, with a warning) corrupt records instead of raising.
    """
    from stoke.data.formats.remote import expand_paths
    from stoke.data.formats.tfrecord import TFRecordSource

    check_on_error(on_error)
    paths = expand_paths(paths, "from_tfrecord", storage_options)
    source = TFRecordSource(paths, on_error=on_error, cycle_length=cycle_length,
                            block_records=block_records, buffer_size=buffer_size,
                            storage_options=storage_options, index=index)
    return _pipeline(source, on_error)


def from_webdataset(paths: Any, *, on_error: str = "raise", cycle_length: int = 16,
                    block_records: int | None = None, buffer_size: int = 1024,
                    storage_options: dict | None = None, index: str = "auto") -> Pipeline:
    """The samples of WebDataset tar shards (``"https://host/shard-{000..099}.tar"``, a
    glob, a list): ``{ext: bytes, ..., "__key__": key, "__url__": shard}``. Indexed from
    the tar headers, eagerly or lazily (``index``), with the shard-based epoch order of
    :func:`from_tfrecord`."""
    from stoke.data.formats.remote import expand_paths
    from stoke.data.formats.webdataset import WebDatasetSource

    check_on_error(on_error)
    paths = expand_paths(paths, "from_webdataset", storage_options)
    source = WebDatasetSource(paths, on_error=on_error, cycle_length=cycle_length,
                              block_records=block_records, buffer_size=buffer_size,
                              storage_options=storage_options, index=index)
    return _pipeline(source, on_error)


def from_parquet(paths: Any, columns: Sequence[str] | None = None, *, on_error: str = "raise",
                 storage_options: dict | None = None, cache_bytes: int = 256 << 20) -> Pipeline:
    """The rows of Parquet files as ``{column: value}`` (only ``columns`` if given; a
    missing one is named with those that exist). Indexed from the row-group metadata, so
    the plan is a global permutation; ``pip install 'stoke[parquet]'``."""
    from stoke.data.formats.parquet import ParquetSource
    from stoke.data.formats.remote import expand_paths

    check_on_error(on_error)
    paths = expand_paths(paths, "from_parquet", storage_options)
    source = ParquetSource(paths, columns, on_error=on_error,
                           storage_options=storage_options, cache_bytes=cache_bytes)
    return _pipeline(source, on_error)


def from_array_record(paths: Any, *, on_error: str = "raise", cache_dir: str | None = None,
                      storage_options: dict | None = None) -> Pipeline:
    """The records of ArrayRecord files as ``bytes``: random access, so the plan is a global
    permutation. Needs the ``array_record`` package (installed with grain), which reads
    local files: remote ones (any fsspec URL) are copied once into ``cache_dir`` (default
    ``$TMPDIR/stoke-array-record``, kept for later runs) before the first batch."""
    from stoke.data.formats.array_record import ArrayRecordSource
    from stoke.data.formats.remote import expand_paths

    check_on_error(on_error)
    paths = expand_paths(paths, "from_array_record", storage_options)
    source = ArrayRecordSource(paths, on_error=on_error, cache_dir=cache_dir,
                               storage_options=storage_options)
    return _pipeline(source, on_error)


def parse_example(record: bytes) -> dict:
    """``tf.train.Example`` bytes -> ``{feature: 1-D numpy array}``, without TensorFlow."""
    from stoke.data.formats.example_proto import parse_example as parse

    return parse(record)
