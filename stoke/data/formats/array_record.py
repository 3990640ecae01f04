"""ArrayRecord files (grain's format) through the ``array_record`` package:
``stoke.from_array_record("data/*.array_record")`` gives each record's bytes.

ArrayRecord is random access, so the plan stays a global permutation. The record count of
every file is read in the trainer (the files' footers); each process opens its own readers
(``readahead_buffer_size:0``, the setting for random access) on first use.

The ``array_record`` package reads local files only, so a remote file (``gs://``, ``s3://``,
``https://``: any fsspec URL) is copied once into a local cache folder (``cache_dir``,
default ``$TMPDIR/stoke-array-record``; one copy per machine, named by the URL and its
size, kept for later runs: delete the folder to free the space), in the trainer, before the
first batch; a worker on another machine (Ray) copies the files it reads into its own
cache. A corrupt record is named with its file, its record number and the byte offset of
the chunk that holds it (from the reader's message).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from stoke.data.formats.base import RecordError, SkippingSource, check_on_error
from stoke.data.formats.remote import ByteReader, is_remote, local_path, unreachable
from stoke.data.formats.skips import SkipCounter

READER_OPTIONS = "readahead_buffer_size:0"
_CHUNK_AT = re.compile(r"chunk at (\d+)")


def default_cache_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "stoke-array-record")


def _reader(path: str, shown: str):
    from array_record.python.array_record_module import ArrayRecordReader

    try:
        return ArrayRecordReader(local_path(path), READER_OPTIONS)
    except Exception as exc:  # noqa: BLE001 - the C++ status, with the file
        raise RecordError(f"{shown}: not a readable ArrayRecord file: {exc}") from exc


def local_copy(url: str, cache_dir: str, reader: ByteReader) -> str:
    """The local copy of the remote file ``url`` in ``cache_dir``, made if missing (named by
    the URL's hash and its size; written to a temporary name, then renamed: a copy cut
    short is never read)."""
    size = reader.size(url)
    digest = hashlib.sha1(url.encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"{digest}-{size}-{os.path.basename(url)}")
    if os.path.exists(path) and os.path.getsize(path) == size:
        return path
    os.makedirs(cache_dir, exist_ok=True)
    partial = f"{path}.{os.getpid()}.{threading.get_ident()}.part"
    try:
        reader.fs(url).get_file(url, partial)
        os.replace(partial, path)
    except Exception as exc:  # noqa: BLE001 - said with the URL
        if os.path.exists(partial):
            os.unlink(partial)
        raise unreachable(url, exc) from exc
    return path


class ArrayRecordSource(SkippingSource):
    """Records of ArrayRecord files; sample ``i`` is the bytes of record ``i``."""

    def __init__(self, paths: Sequence[str], *, on_error: str = "raise",
                 cache_dir: str | None = None, storage_options: dict | None = None) -> None:
        self.paths = paths
        self.on_error = check_on_error(on_error)
        self.cache_dir = cache_dir or default_cache_dir()
        self.reader = ByteReader(storage_options)
        self.skips = SkipCounter(shared=self.on_error == "skip")
        self.local_paths = [local_copy(p, self.cache_dir, self.reader) if is_remote(p) else p
                            for p in paths]
        counts = []
        for file, path in enumerate(self.local_paths):
            reader = _reader(path, self.paths[file])
            try:
                counts.append(reader.num_records())
                reader.close()
            except Exception as exc:  # noqa: BLE001 - the C++ status, with the file
                raise RecordError(f"{self.paths[file]}: not a readable ArrayRecord file: "
                                  f"{exc}") from exc
        self.counts = np.array(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.length = int(self.counts.sum())
        self._setup()

    def local(self, file: int) -> str:
        """A local path of file ``file``: itself, or its copy in the cache folder."""
        path = self.local_paths[file]
        if path == self.paths[file] or os.path.exists(path):
            return path  # local, or copied by the trainer on this machine
        return local_copy(self.paths[file], self.cache_dir, self.reader)

    def _setup(self) -> None:
        self._readers: dict[int, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_readers", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._setup()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> bytes:
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"record {index} of {self.length}")
        file = int(np.searchsorted(self.starts, index, side="right")) - 1
        record = index - int(self.starts[file])
        reader = self._readers.get(file)
        if reader is None:
            with self._lock:
                reader = self._readers.get(file)
                if reader is None:
                    reader = self._readers[file] = _reader(self.local(file), self.paths[file])
        try:
            return reader.read([record])[0]
        except Exception as exc:  # noqa: BLE001 - the C++ status, with where
            chunk = _CHUNK_AT.search(str(exc))
            where = f" at byte offset {chunk.group(1)} (its chunk)" if chunk else ""
            error = RecordError(f"{self.paths[file]}: record {record}{where} cannot be read "
                                f"(corrupt or truncated chunk): {exc}")
            if self.on_error == "skip":
                return self.skips.skip(error)
            raise error from exc

    def describe(self) -> str:
        return f"ArrayRecord of {len(self.paths)} files, {self.length} records"
