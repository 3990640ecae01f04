"""ArrayRecord files (grain's format) through the ``array_record`` package:
``stoke.from_array_record("data/*.array_record")`` gives each record's bytes.

ArrayRecord is random access, so the plan stays a global permutation. The record count of
every file is read in the trainer (the files' footers); each process opens its own readers
(``readahead_buffer_size:0``, the setting for random access) on first use. Local paths (and
whatever the ``array_record`` package itself opens); not read through fsspec.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from stoke.data.formats.base import RecordError, SkipCounter, check_on_error
from stoke.data.formats.remote import is_remote, local_path

READER_OPTIONS = "readahead_buffer_size:0"


def _reader(path: str):
    from array_record.python.array_record_module import ArrayRecordReader

    try:
        return ArrayRecordReader(local_path(path), READER_OPTIONS)
    except Exception as exc:  # noqa: BLE001 - the C++ status, with the file
        raise RecordError(f"{path}: not a readable ArrayRecord file: {exc}") from exc


class ArrayRecordSource:
    """Records of ArrayRecord files; sample ``i`` is the bytes of record ``i``."""

    def __init__(self, paths: Sequence[str], *, on_error: str = "raise") -> None:
        remote = [p for p in list(paths[:1]) if is_remote(p)]
        if remote:
            raise ValueError(
                f"from_array_record reads local files only. Received: {remote[0]!r}. Copy the "
                "files to local disk, or use from_tfrecord / from_parquet for remote data.")
        self.paths = paths
        self.on_error = check_on_error(on_error)
        self.skips = SkipCounter()
        counts = []
        for path in paths:
            reader = _reader(path)
            try:
                counts.append(reader.num_records())
                reader.close()
            except Exception as exc:  # noqa: BLE001 - the C++ status, with the file
                raise RecordError(f"{path}: not a readable ArrayRecord file: {exc}") from exc
        self.counts = np.array(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.length = int(self.counts.sum())
        self._setup()

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
                    reader = self._readers[file] = _reader(self.paths[file])
        try:
            return reader.read([record])[0]
        except Exception as exc:  # noqa: BLE001 - the C++ status, with where
            error = RecordError(f"{self.paths[file]}: record {record} cannot be read "
                                f"(corrupt or truncated chunk): {exc}")
            if self.on_error == "skip":
                return self.skips.skip(error)
            raise error from exc

    def describe(self) -> str:
        return f"ArrayRecord of {len(self.paths)} files, {self.length} records"
