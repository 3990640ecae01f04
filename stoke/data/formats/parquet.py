"""Parquet files through pyarrow: ``stoke.from_parquet("data/*.parquet", columns=[...])``
gives one dict per row, ``{column: value}``.

Indexed from the files' footers (row-group metadata; no data is read), so the plan stays a
global permutation of rows. Reading row ``i`` reads (once per process) its row group's
requested columns and keeps the decoded row groups in a per-process cache of
``cache_bytes``; for remote files the row groups of the batches coming next are read
together in background threads, each on its own handle (:meth:`ParquetSource.prefetch`); binary columns give ``bytes``, numeric ones numpy scalars, list columns
numpy arrays. With data much larger than the cache, write small row groups (a global
shuffle touches a random row group per row). A column that is not in a file is named with
the columns that are.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from stoke.data.formats.base import (
    PrefetchingSource,
    RecordError,
    SkippingSource,
    check_on_error,
)
from stoke.data.formats.remote import (
    ByteReader,
    is_remote,
    local_path,
    remote_paths,
    unreachable,
)
from stoke.data.formats.skips import SkipCounter

DEFAULT_CACHE_BYTES = 256 << 20


class ParquetSource(PrefetchingSource, SkippingSource):
    """Rows of Parquet files; sample ``i`` is ``{column: value}`` of row ``i``."""

    def __init__(self, paths: Sequence[str], columns: Sequence[str] | None = None, *,
                 on_error: str = "raise", storage_options: dict | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.paths = paths
        self.columns = None if columns is None else list(columns)
        self.on_error = check_on_error(on_error)
        self.cache_bytes = int(cache_bytes)
        self.reader = ByteReader(storage_options)
        self.skips = SkipCounter(shared=self.on_error == "skip")
        self.group_rows: list[np.ndarray] = []  # rows per row group, per file
        self.file_starts = np.zeros(0, np.int64)
        self.group_starts: list[np.ndarray] = []
        self.length = 0
        self._index()
        self._setup()

    def _setup(self) -> None:
        self._cache: OrderedDict[tuple[int, int], dict[str, np.ndarray]] = OrderedDict()
        self._cache_size = 0
        self._sizes: dict[tuple[int, int], int] = {}  # bytes of each cached row group
        self._files: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[int, int], Any] = {}  # row group -> Future (remote files)
        self._pool = None

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items()
                 if k not in ("_cache", "_cache_size", "_sizes", "_files", "_lock", "_loading",
                              "_pool")}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._setup()

    def _open(self, file: int):
        import pyarrow.parquet as pq

        path = self.paths[file]
        try:
            if is_remote(path):
                return pq.ParquetFile(self.reader.fs(path).open(path, "rb"))
            return pq.ParquetFile(local_path(path))
        except OSError as exc:
            if is_remote(path):
                raise unreachable(path, exc) from exc
            raise RecordError(f"{path}: not a readable Parquet file: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - pyarrow's ArrowInvalid and friends
            raise RecordError(f"{path}: not a readable Parquet file: {exc}") from exc

    def _index(self) -> None:
        def footer(file: int):
            parquet = self._open(file)
            names = parquet.schema_arrow.names
            if self.columns is not None:
                missing = [c for c in self.columns if c not in names]
                if missing:
                    raise KeyError(
                        f"from_parquet: column(s) {missing} are not in {self.paths[file]}; "
                        f"its columns are {names}. Pass columns= from those.")
            meta = parquet.metadata
            return np.array([meta.row_group(g).num_rows for g in range(meta.num_row_groups)],
                            dtype=np.int64)

        count = len(self.paths)
        with ThreadPoolExecutor(max(1, min(16, count))) as pool:
            self.group_rows = list(pool.map(footer, range(count)))
        per_file = np.array([rows.sum() for rows in self.group_rows], dtype=np.int64)
        self.file_starts = np.concatenate([[0], np.cumsum(per_file)[:-1]]).astype(np.int64)
        self.group_starts = [np.concatenate([[0], np.cumsum(r)[:-1]]).astype(np.int64)
                             for r in self.group_rows]
        self.length = int(per_file.sum())

    def __len__(self) -> int:
        return self.length

    def locate(self, index: int) -> tuple[int, int, int]:
        """``(file, row group, row in the group)`` of a global row index."""
        file = int(np.searchsorted(self.file_starts, index, side="right")) - 1
        local = index - int(self.file_starts[file])
        group = int(np.searchsorted(self.group_starts[file], local, side="right")) - 1
        return file, group, local - int(self.group_starts[file][group])

    def prefetch(self, indices: Sequence[int]) -> None:
        """Remote files: start reading the row groups of ``indices`` that are not cached,
        each on its own file handle in a background thread (pyarrow releases the GIL)."""
        keys = set()
        for index in indices:
            file, group, _ = self.locate(int(index))
            if is_remote(self.paths[file]):
                keys.add((file, group))
        if not keys:
            return
        with self._lock:
            keys = [k for k in keys if k not in self._cache and k not in self._loading]
            if keys and self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(8, thread_name_prefix="stoke-parquet")
            for key in keys:
                self._loading[key] = self._pool.submit(self._load, *key, None)

    def reads_remote(self) -> bool:
        return remote_paths(self.paths)

    def _row_group(self, file: int, group: int) -> dict[str, np.ndarray]:
        key = (file, group)
        with self._lock:
            columns = self._cache.get(key)
            if columns is not None:
                self._cache.move_to_end(key)
                return columns
            loading = self._loading.get(key)
        if loading is not None:
            return loading.result(timeout=120.0)
        parquet = self._files.get(file)
        if parquet is None:
            parquet = self._files[file] = self._open(file)
            while len(self._files) > 16:
                self._files.popitem(last=False)
        return self._load(file, group, parquet)

    def _load(self, file: int, group: int, parquet: Any) -> dict[str, np.ndarray]:
        """Read and decode one row group (on its own handle when ``parquet`` is None: a
        background read), then cache it."""
        key = (file, group)
        try:
            if parquet is None:
                parquet = self._open(file)
            table = parquet.read_row_group(group, columns=self.columns)
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors, with where
            raise RecordError(
                f"{self.paths[file]}: row group {group} (rows from "
                f"{int(self.group_starts[file][group])}) cannot be read: "
                f"{type(exc).__name__}: {exc}") from exc
        columns = {name: table.column(name).to_numpy(zero_copy_only=False)
                   for name in table.column_names}
        with self._lock:
            self._loading.pop(key, None)
            self._cache[key] = columns
            self._sizes[key] = table.nbytes
            self._cache_size += table.nbytes
            while self._cache_size > self.cache_bytes and len(self._cache) > 1:
                old, _ = self._cache.popitem(last=False)
                self._cache_size -= self._sizes.pop(old)
        return columns

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"row {index} of {self.length}")
        file, group, row = self.locate(index)
        try:
            columns = self._row_group(file, group)
        except RecordError as exc:
            if self.on_error == "skip":
                return self.skips.skip(exc)
            raise
        return {name: values[row] for name, values in columns.items()}

    def describe(self) -> str:
        return f"Parquet of {len(self.paths)} files, {self.length} rows"
